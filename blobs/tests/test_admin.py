"""The blob admin through the real admin views: list, upload, transfer, delete, verify, read-only fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from blobs.models import Blob
from blobs.storage import blob_store
from blobs.tests.factories import make_blob, make_user, pattern, plaintext, stored_files

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("small_segments"),
    pytest.mark.segment_size(256),
]

CHANGELIST = reverse("admin:blobs_blob_changelist")
ADD = reverse("admin:blobs_blob_add")


@pytest.fixture
def admin_user():
    return make_user("boss", perms=(), is_superuser=True)


@pytest.fixture
def admin_client(admin_user):
    c = Client()
    c.force_login(admin_user)
    return c


@pytest.fixture
def bob():
    return make_user("bob")


def change_url(blob: Blob) -> str:
    return reverse("admin:blobs_blob_change", args=[blob.pk])


def download_url(blob: Blob) -> str:
    return reverse("admin:blobs_blob_download", args=[blob.pk])


def object_path(blob: Blob) -> Path:
    return Path(blob_store("blobs").storage.location) / blob.storage_name


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- changelist ---------------------------------------------------------------------------------------------


def test_changelist_with_search_and_filters(admin_client, alice, bob):
    report = make_blob(alice, pattern(3000), filename="quarterly-report.pdf", content_type="application/pdf")
    make_blob(bob, b"x", filename="holiday.jpg", content_type="image/jpeg")
    r = admin_client.get(CHANGELIST)
    assert r.status_code == 200
    html = r.content.decode()
    assert "quarterly-report.pdf" in html
    assert "holiday.jpg" in html
    assert "2.9\xa0KB" in html  # human size
    assert "local: mk-test-1" in html  # the key column

    for query in (
        {"q": "quarterly"},
        {"q": "alice"},
        {"q": str(report.pk)},
        {"q": report.sha256},
        {"content_type": "application/pdf"},
    ):
        r = admin_client.get(CHANGELIST, query)
        assert r.status_code == 200, query
        assert "quarterly-report.pdf" in r.content.decode(), query
        assert "holiday.jpg" not in r.content.decode(), query

    for query in (
        {"state__exact": "ready"},
        {"key_provider__exact": "local"},
        {"created_at__year": str(timezone.now().year)},
    ):
        r = admin_client.get(CHANGELIST, query)
        assert r.status_code == 200, query
        assert "holiday.jpg" in r.content.decode(), query
    assert "holiday.jpg" not in admin_client.get(CHANGELIST, {"state__exact": "pending"}).content.decode()


def test_bulk_delete_asks_for_confirmation_first(admin_client, alice):
    blob = make_blob(alice)
    html = admin_client.get(CHANGELIST).content.decode()
    assert 'value="delete_selected"' in html
    assert 'value="verify_integrity"' in html
    r = admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [blob.pk], "index": 0}
    )
    assert r.status_code == 200
    assert "Are you sure you want to delete the selected blob?" in r.content.decode()
    assert Blob.objects.filter(pk=blob.pk).exists()
    assert object_path(blob).exists()


# --- add ----------------------------------------------------------------------------------------------------


def test_add_view_uploads_through_the_form_with_csrf(admin_user, bob):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    form_page = client.get(ADD)
    assert form_page.status_code == 200
    assert 'enctype="multipart/form-data"' in form_page.content.decode()
    token = client.cookies["csrftoken"].value
    data = pattern(5000)
    r = client.post(
        ADD,
        {
            "csrfmiddlewaretoken": token,
            "file": SimpleUploadedFile("contract.pdf", data, content_type="application/pdf"),
            "owner": bob.pk,
            "_save": "Save",
        },
    )
    assert r.status_code == 302, r.content.decode()[:2000]
    blob = Blob.objects.get()
    assert (blob.state, blob.owner, blob.filename, blob.size) == (Blob.State.READY, bob, "contract.pdf", 5000)
    assert blob.content_type == "application/pdf"
    assert plaintext(blob) == data
    assert stored_files() == [object_path(blob)]


def test_add_view_defaults_to_the_current_user_as_owner(admin_client, admin_user):
    html = admin_client.get(ADD).content.decode()
    assert f'value="{admin_user.pk}"' in html


def test_add_view_without_a_file_shows_an_error_and_stores_nothing(admin_client, bob):
    r = admin_client.post(ADD, {"owner": bob.pk, "_save": "Save"})
    assert r.status_code == 200
    assert "This field is required" in r.content.decode()
    assert Blob.objects.count() == 0
    assert stored_files() == []


def test_add_view_with_an_invalid_owner_discards_the_encrypted_upload(admin_client):
    r = admin_client.post(ADD, {"file": SimpleUploadedFile("a.bin", b"abc" * 1000), "owner": 999999})
    assert r.status_code == 200
    assert Blob.objects.count() == 0
    assert stored_files() == []


# --- change -------------------------------------------------------------------------------------------------


def test_change_view_shows_a_download_link(admin_client, alice):
    blob = make_blob(alice)
    html = admin_client.get(change_url(blob)).content.decode()
    assert download_url(blob) in html


def test_change_view_transfers_ownership_and_keeps_format_fields_read_only(admin_client, alice, bob):
    blob = make_blob(alice, pattern(2000), filename="orig.bin")
    before = {f.attname: getattr(blob, f.attname) for f in Blob._meta.concrete_fields}
    r = admin_client.post(
        change_url(blob),
        {
            "owner": bob.pk,
            # Attempts to change fields the admin shows read-only: all ignored.
            "filename": "renamed.exe",
            "content_type": "text/html",
            "size": "1",
            "sha256": "0" * 64,
            "state": "pending",
            "segment_size": "4096",
            "storage_alias": "elsewhere",
            "storage_name": "../../etc/passwd",
            "key_provider": "aws",
            "key_ref": "mk-attacker",
            "key_algorithm": "NONE",
            "legacy_id": "L-99",
            "import_source": "/tmp/x",
            "_save": "Save",
        },
    )
    assert r.status_code == 302
    blob.refresh_from_db()
    assert blob.owner == bob
    after = {f.attname: getattr(blob, f.attname) for f in Blob._meta.concrete_fields}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"owner_id", "updated_at"}
    assert plaintext(blob) == pattern(2000)
    # The transfer is audited in its transaction, by the staff member who made it, old -> new owner.
    from audit.models import AuditEvent

    event = AuditEvent.objects.get(action="blob.transfer")
    assert (event.actor, event.target_id) == ("boss", str(blob.pk))
    assert event.details["changes"]["owner"] == {"old": "alice", "new": "bob"}


def test_key_and_format_fields_render_read_only(admin_client, alice):
    blob = make_blob(alice)
    html = admin_client.get(change_url(blob)).content.decode()
    assert 'name="owner"' in html
    for field in ("key_ref", "key_provider", "segment_size", "storage_name", "sha256", "filename"):
        assert f'name="{field}"' not in html


# --- delete -------------------------------------------------------------------------------------------------


def test_delete_view_removes_row_and_object(admin_client, alice, django_capture_on_commit_callbacks):
    blob = make_blob(alice)
    keep = make_blob(alice, b"keep")
    url = reverse("admin:blobs_blob_delete", args=[blob.pk])
    assert admin_client.get(url).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        r = admin_client.post(url, {"post": "yes"})
    assert r.status_code == 302
    assert list(Blob.objects.all()) == [keep]
    assert stored_files() == [object_path(keep)]


def test_bulk_delete_action_removes_rows_and_objects(admin_client, alice, django_capture_on_commit_callbacks):
    doomed = [make_blob(alice, pattern(700, seed=i)) for i in range(3)]
    keep = make_blob(alice, b"keep")
    with django_capture_on_commit_callbacks(execute=True):
        r = admin_client.post(
            CHANGELIST,
            {
                "action": "delete_selected",
                "_selected_action": [b.pk for b in doomed],
                "index": 0,
                "post": "yes",  # Django's confirmation page answered
            },
            follow=True,
        )
    assert r.status_code == 200
    assert "Successfully deleted 3 blobs." in messages_of(r)
    assert list(Blob.objects.all()) == [keep]
    assert stored_files() == [object_path(keep)]


# --- verify -------------------------------------------------------------------------------------------------


def verify(admin_client, blobs):
    return admin_client.post(
        CHANGELIST,
        {"action": "verify_integrity", "_selected_action": [b.pk for b in blobs], "index": 0},
        follow=True,
    )


def test_verify_action_reports_ok(admin_client, alice):
    blobs = [make_blob(alice, pattern(1000, seed=i)) for i in range(2)]
    r = verify(admin_client, blobs)
    assert messages_of(r) == ["2 blob(s) verified OK."]


def test_verify_action_reports_a_tampered_blob(admin_client, alice):
    good = make_blob(alice, pattern(1000), filename="good.bin")
    bad = make_blob(alice, pattern(1000), filename="bad.bin")
    path = object_path(bad)
    raw = bytearray(path.read_bytes())
    raw[500] ^= 0x80
    path.write_bytes(bytes(raw))
    r = verify(admin_client, [good, bad])
    msgs = messages_of(r)
    assert f"bad.bin ({bad.pk}): FAILED — the object does not authenticate" in msgs
    assert "1 blob(s) verified OK." in msgs
    assert not any("good.bin" in m for m in msgs)


def test_a_blob_that_failed_integrity_is_shown_as_such_until_a_verify_passes(admin_client, alice):
    good = make_blob(alice, pattern(1000), filename="good.bin")
    bad = make_blob(alice, pattern(1000), filename="bad.bin")
    path = object_path(bad)
    original = path.read_bytes()
    path.write_bytes(original[:500] + bytes([original[500] ^ 0x80]) + original[501:])
    verify(admin_client, [good, bad])
    page = admin_client.get(CHANGELIST).content.decode()
    # The list's state column says so instead of "ready"; so does the change page.
    assert page.count(">integrity failed</span>") == 1
    assert page.count(">ready</span>") == 1
    change_page = admin_client.get(change_url(bad)).content.decode()
    assert 'class="blob-badge blob-badge-failed">failed ' in change_page
    failed_only = admin_client.get(CHANGELIST, {"integrity": "failed"}).content.decode()
    assert "bad.bin" in failed_only
    assert "good.bin" not in failed_only
    assert Blob.objects.get(pk=good.pk).integrity_failed_at is None
    # Restored from a backup: the next verification clears the mark.
    path.write_bytes(original)
    verify(admin_client, [bad])
    assert Blob.objects.get(pk=bad.pk).integrity_failed_at is None
    assert ">integrity failed</span>" not in admin_client.get(CHANGELIST).content.decode()


def test_verify_action_reports_a_missing_object_and_goes_on(admin_client, alice):
    lost = make_blob(alice, pattern(1000), filename="lost.bin")
    good = make_blob(alice, pattern(900), filename="good.bin")
    object_path(lost).unlink()
    r = verify(admin_client, [lost, good])
    assert r.status_code == 200
    msgs = messages_of(r)
    assert any(m.startswith(f"lost.bin ({lost.pk}): FAILED — the object cannot be read") for m in msgs)
    assert "1 blob(s) verified OK." in msgs


def test_add_view_accepts_an_empty_file(admin_client, admin_user):
    r = admin_client.post(
        ADD, {"file": SimpleUploadedFile("empty.txt", b""), "owner": admin_user.pk, "_save": "Save"}
    )
    assert r.status_code == 302
    blob = Blob.objects.get()
    assert (blob.state, blob.size) == (Blob.State.READY, 0)


def test_add_view_accepts_a_thousand_character_file_name(admin_client, admin_user):
    name = "é" * 1000 + ".pdf"  # the part's header is ~2 KB: over Django's own 1,024-byte limit
    form = {"file": SimpleUploadedFile(name, b"%PDF"), "owner": admin_user.pk, "_save": "Save"}
    r = admin_client.post(ADD, form)
    assert r.status_code == 302
    blob = Blob.objects.get()
    assert len(blob.filename) <= 255
    assert blob.filename.endswith(".pdf")


def test_verify_action_reports_a_missing_key(admin_client, alice, settings, tmp_path):
    blob = make_blob(alice, filename="locked.bin")
    settings.KMS_PROVIDERS = {
        "local": {
            "BACKEND": "kms.providers.local.LocalKeyProvider",
            "OPTIONS": {"key_file": str(tmp_path / "gone.key")},
        }
    }
    msgs = messages_of(verify(admin_client, [blob]))
    assert "locked.bin: the key service is unavailable." in msgs
    assert "0 blob(s) verified OK." in msgs


# --- permissions --------------------------------------------------------------------------------------------


def test_staff_without_a_role_cannot_see_the_admin(alice):
    client = Client()
    client.force_login(make_user("clerk", perms=(), is_staff=True))
    make_blob(alice)
    assert client.get(CHANGELIST).status_code == 302  # to the admin login: is_staff alone grants nothing


def test_an_uploader_without_manager_rights_cannot_plant_files_in_another_account(alice):
    from erphub import roles

    eve = Client()
    eve.force_login(make_user("eve", perms=(), roles=(roles.BLOB_USERS, roles.AUDITORS)))
    page = eve.get(ADD)
    assert page.status_code == 200
    assert 'name="owner"' not in page.content.decode()
    r = eve.post(
        ADD, {"file": SimpleUploadedFile("invoice.pdf", b"%PDF-1.7"), "owner": alice.pk, "_save": "Save"}
    )
    assert r.status_code == 302
    assert Blob.objects.get().owner.username == "eve"


def test_a_blob_manager_may_upload_for_someone_else(alice):
    from erphub import roles

    manager = Client()
    manager.force_login(make_user("mgr", perms=(), roles=(roles.BLOB_MANAGERS,)))
    assert 'name="owner"' in manager.get(ADD).content.decode()
    r = manager.post(
        ADD, {"file": SimpleUploadedFile("for-alice.txt", b"hi"), "owner": alice.pk, "_save": "Save"}
    )
    assert r.status_code == 302
    assert Blob.objects.get().owner == alice


# --- issue 17: download, human pages, owner search, history ----------------------------------------------


def tamper(blob: Blob) -> None:
    # Inside the first segment (past the 40-byte stream header): found before the response starts.
    path = object_path(blob)
    raw = bytearray(path.read_bytes())
    raw[60] ^= 0x80
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("scan.pdf", "application/pdf"),  # a type the API serves inline
        ("photo.png", "image/png"),
        ("notes.txt", "text/plain"),
        ("not-really.pdf", "application/pdf"),  # named .pdf, holding something else
    ],
)
def test_download_from_the_admin_always_saves_the_file(admin_client, alice, filename, content_type):
    data = pattern(3000)
    blob = make_blob(alice, data, filename=filename, content_type=content_type)
    r = admin_client.get(download_url(blob))
    assert r.status_code == 200
    assert r["Content-Disposition"].startswith(f'attachment; filename="{filename}"')
    assert b"".join(r.streaming_content) == data
    # The API keeps its own rule (inline for the safe types): only the admin's button forces a save.
    api = admin_client.head(reverse("blobs:stream", args=[blob.pk]))
    assert api["Content-Disposition"].startswith("inline")


def test_download_from_the_admin_resumes_with_a_range(admin_client, alice):
    data = pattern(3000)
    blob = make_blob(alice, data, filename="big.bin", content_type="application/octet-stream")
    r = admin_client.get(download_url(blob), HTTP_RANGE="bytes=1000-")
    assert r.status_code == 206
    assert b"".join(r.streaming_content) == data[1000:]


def test_a_download_that_fails_to_decrypt_shows_a_page_with_its_audit_event(admin_client, alice):
    from audit.models import AuditEvent

    blob = make_blob(alice, pattern(3000), filename="ledger.xlsx")
    tamper(blob)
    r = admin_client.get(download_url(blob))
    assert r.status_code == 500
    assert r["Content-Type"].startswith("text/html")
    html = r.content.decode()
    assert "Download failed: ledger.xlsx" in html
    assert "failed its integrity check" in html
    assert "Restore the object from the latest backup" in html
    event = AuditEvent.objects.get(action="blob.download.start", outcome="error", target_id=str(blob.pk))
    assert event.details["error"] == "integrity_error"
    assert reverse("admin:audit_auditevent_change", args=[event.pk]) in html  # a superuser may read the log
    assert f"#{event.sequence}" in html
    # ...and the list now says so, and the file's history tells it in words.
    assert ">integrity failed</span>" in admin_client.get(CHANGELIST).content.decode()
    history = admin_client.get(reverse("admin:blobs_blob_history", args=[blob.pk])).content.decode()
    assert "<td>the stored object failed its integrity check</td>" in history
    assert "<td>Integrity check failed</td>" in history


def test_a_manager_without_the_audit_log_gets_the_event_number_to_quote(alice):
    from audit.models import AuditEvent
    from erphub import roles

    manager = Client()
    manager.force_login(make_user("mgr", perms=(), roles=(roles.BLOB_MANAGERS,)))
    blob = make_blob(alice, pattern(1000))
    object_path(blob).unlink()
    r = manager.get(download_url(blob))
    assert r.status_code == 500
    html = r.content.decode()
    assert "missing from storage" in html
    event = AuditEvent.objects.get(action="blob.download.start", outcome="error")
    assert f"#{event.sequence}" in html
    assert "Quote its number to an auditor" in html
    assert "/admin/audit/auditevent/" not in html


def test_download_needs_the_blob_admin_and_answers_a_missing_id_like_the_change_view(alice):
    from erphub import roles

    uploader = Client()
    uploader.force_login(make_user("eve", perms=(), roles=(roles.BLOB_USERS, roles.AUDITORS)))
    blob = make_blob(alice)
    assert uploader.get(download_url(blob)).status_code == 403
    boss = Client()
    boss.force_login(make_user("boss2", perms=(), is_superuser=True))
    missing = reverse("admin:blobs_blob_download", args=["00000000-0000-0000-0000-000000000000"])
    r = boss.get(missing)
    assert r.status_code == 302
    assert r["Location"] == CHANGELIST
    assert boss.post(download_url(blob)).status_code == 405


def test_admin_downloads_are_not_gated_by_the_rollout_flag(admin_client, alice, settings):
    # docs/flags.md: staff manage blobs whatever the flag says; the API answers its 503 meanwhile.
    blob = make_blob(alice, b"still here")
    settings.FLAGS = {**getattr(settings, "FLAGS", {}), "FORCED_OFF": ["secure_blob_streaming"]}
    assert admin_client.get(reverse("blobs:stream", args=[blob.pk])).status_code == 503
    r = admin_client.get(download_url(blob))
    assert r.status_code == 200
    assert b"".join(r.streaming_content) == b"still here"


def test_the_list_speaks_human(admin_client, alice):
    blob = make_blob(alice, pattern(300_000), filename="report.pdf", content_type="application/pdf")
    html = admin_client.get(CHANGELIST).content.decode()
    assert "293.0\xa0KB" in html  # the size, on one line
    assert timezone.localtime(blob.created_at).strftime("%H:%M UTC") in html  # times say their zone
    assert '<span class="blob-badge blob-badge-ready" title="">ready</span>' in html
    assert f'<a class="blob-download" href="{download_url(blob)}">Download</a>' in html
    assert '<td class="field-key"><span title="local: mk-test-1">local: mk-test-1</span></td>' in html
    assert "erphub/admin/blobs.css" in html  # which keeps the key on one line


def test_a_long_key_reference_keeps_its_end_in_the_column_and_all_of_it_in_the_tooltip(admin_client, alice):
    arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    blob = make_blob(alice)
    Blob.objects.filter(pk=blob.pk).update(key_provider="aws", key_ref=arn)
    html = admin_client.get(CHANGELIST).content.decode()
    assert f'<span title="aws: {arn}">aws: …{arn[-28:]}</span>' in html


def test_an_empty_list_says_how_to_upload(admin_client, alice):
    html = admin_client.get(CHANGELIST).content.decode()
    assert "No files yet" in html
    assert f'href="{ADD}">Upload a file</a>' in html
    assert "up to 10.0\xa0GB" in html
    assert "POST /secure/files/" in html
    make_blob(alice, filename="there.txt")
    searched = admin_client.get(CHANGELIST, {"q": "nothing-like-it"}).content.decode()
    assert "No files yet" not in searched
    assert "No file matches this search" in searched


def test_the_change_page_shows_sizes_and_zoned_times(admin_client, alice):
    blob = make_blob(alice, pattern(300_000))
    html = admin_client.get(change_url(blob)).content.decode()
    assert "293.0\xa0KB (300,000 bytes)" in html
    assert ">300000<" not in html  # never the bare byte count alone
    assert timezone.localtime(blob.created_at).strftime("%H:%M UTC") in html
    assert "Storage and key" in html


def test_the_add_form_shows_the_limit_and_loads_the_progress_script(admin_client, settings):
    settings.BLOBS = {**settings.BLOBS, "MAX_UPLOAD_BYTES": 300 * 1024**2}
    html = admin_client.get(ADD).content.decode()
    assert "Up to 300.0\xa0MB." in html
    assert 'data-max-bytes="314572800"' in html
    assert "erphub/admin/upload-progress.js" in html
    # The owner is picked by name (select2 asks the blob admin's own search), not typed in as an id.
    assert 'class="admin-autocomplete' in html
    assert f'data-ajax--url="{reverse("admin:blobs_blob_owner_autocomplete")}"' in html


def test_a_progress_upload_is_told_where_to_go_next(admin_client, admin_user):
    r = admin_client.post(
        ADD,
        {"file": SimpleUploadedFile("fast.txt", b"hello"), "owner": admin_user.pk, "_save": "Save"},
        HTTP_X_UPLOAD_PROGRESS="1",
    )
    assert r.status_code == 200
    assert r.json() == {"location": CHANGELIST}
    assert Blob.objects.get().filename == "fast.txt"
    # The message waits for the page the script opens next.
    assert "was added successfully" in admin_client.get(CHANGELIST).content.decode()


def test_owner_search_finds_people_by_name_for_managers_only(alice, bob):
    from erphub import roles

    manager = Client()
    manager.force_login(make_user("mgr", perms=(), roles=(roles.BLOB_MANAGERS,)))
    url = reverse("admin:blobs_blob_owner_autocomplete")
    bob.first_name, bob.last_name = "Robert", "Jones"
    bob.save()
    found = manager.get(url, {"term": "rob"}).json()
    assert found == {
        "results": [{"id": str(bob.pk), "text": "bob — Robert Jones"}],
        "pagination": {"more": False},
    }
    assert [r["text"] for r in manager.get(url, {"term": "ALI"}).json()["results"]] == ["alice"]
    uploader = Client()
    uploader.force_login(make_user("eve", perms=(), roles=(roles.BLOB_USERS,)))
    assert uploader.get(url, {"term": "a"}).status_code in {302, 403}


def test_history_shows_the_blobs_audit_events(admin_client, alice, bob):
    from audit.models import AuditEvent

    blob = make_blob(alice, pattern(3000), filename="contract.pdf")
    assert b"".join(admin_client.get(download_url(blob)).streaming_content) == pattern(3000)
    verify(admin_client, [blob])
    admin_client.post(change_url(blob), {"owner": bob.pk, "_save": "Save"})
    html = admin_client.get(reverse("admin:blobs_blob_history", args=[blob.pk])).content.decode()
    assert "doesn’t have a change history" not in html
    labels = ("Uploaded", "Download started", "Download finished", "Integrity check run", "Ownership")
    for label in labels:
        assert f"<td>{label}" in html, label
    assert "from alice to bob" in html
    assert "the whole file" in html
    transfer = AuditEvent.objects.get(action="blob.transfer", target_id=str(blob.pk))
    event_url = reverse("admin:audit_auditevent_change", args=[transfer.pk])
    assert f'href="{event_url}">#{transfer.sequence}<' in html


def test_a_deleted_blobs_history_stays_readable_for_managers(admin_client, alice):
    blob = make_blob(alice, filename="gone.txt")
    admin_client.post(reverse("admin:blobs_blob_delete", args=[blob.pk]), {"post": "yes"})
    assert not Blob.objects.filter(pk=blob.pk).exists()
    html = admin_client.get(reverse("admin:blobs_blob_history", args=[blob.pk])).content.decode()
    assert "This file has been deleted" in html
    assert "<td>Deleted</td>" in html
    assert "<td>Uploaded</td>" in html
    # An id the log knows nothing of is the admin's usual "no such object".
    r = admin_client.get(reverse("admin:blobs_blob_history", args=["00000000-0000-0000-0000-000000000000"]))
    assert r.status_code == 302


def test_history_still_checks_the_permission_before_the_lookup(alice):
    from erphub import roles

    auditor = Client()
    auditor.force_login(make_user("aud", perms=(), roles=(roles.AUDITORS,)))
    blob = make_blob(alice)
    real = auditor.get(reverse("admin:blobs_blob_history", args=[blob.pk]))
    fake = auditor.get(reverse("admin:blobs_blob_history", args=["00000000-0000-0000-0000-000000000000"]))
    assert real.status_code == fake.status_code == 403
