"""What the product records: uploads, downloads (start and end), deletes, verifies, logins, role changes,
with the request's id, client address and user agent."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from audit.chain import verify_chain
from audit.models import AuditEvent
from audit.sealed import unseal
from blobs.exceptions import BlobIntegrityError
from blobs.models import Blob
from blobs.services import blob_delete, blob_verify
from blobs.tests.factories import make_blob, make_user, pattern
from blobs.tests.streams import close
from erphub import roles

from .factories import chain_rows

pytestmark = pytest.mark.django_db

PASSWORD = "pw-123456!"


def events(action: str | None = None) -> list[AuditEvent]:
    queryset = AuditEvent.objects.order_by("sequence")
    return list(queryset.filter(action=action) if action else queryset)


@pytest.fixture
def client(owner):
    c = Client(headers={"User-Agent": "pytest-agent/1.0"})
    c.force_login(owner)
    return c


@pytest.fixture
def blob(settings, owner):
    settings.BLOBS = {**settings.BLOBS, "SEGMENT_SIZE": 128}
    return make_blob(owner, pattern(1000), filename="report.bin")


def stream(blob) -> str:
    return reverse("blobs:stream", args=[blob.pk])


def test_upload_through_the_api_is_recorded_with_the_request(client, owner):
    response = client.post(
        reverse("blobs:collection"),
        data=b"hello",
        content_type="text/plain",
        headers={"X-Request-ID": "upload-1", "Content-Disposition": 'attachment; filename="a.txt"'},
        REMOTE_ADDR="192.0.2.10",
    )
    assert response.status_code == 201
    assert response["X-Request-ID"] == "upload-1"
    (event,) = events("blob.upload")
    assert event.actor == "owner"
    assert event.actor_id == str(owner.pk)
    assert event.target_id == response.json()["id"]
    assert event.request_id == "upload-1"
    assert event.remote_addr == "192.0.2.10"
    assert event.user_agent == "pytest-agent/1.0"
    assert event.details["size"] == 5
    assert "a.txt" not in str(event.details)  # sealed: the chain covers the ciphertext
    assert unseal("filename", event.details["filename"]) == "a.txt"


def test_a_full_download_records_start_and_success_end(client, blob):
    response = client.get(stream(blob))
    assert b"".join(response.streaming_content) == pattern(1000)
    close(response)
    start, end = events("blob.download.start") + events("blob.download.end")
    assert start.outcome == "success"
    assert start.details["status"] == 200
    assert end.outcome == "success"
    assert end.details["bytes_sent"] == 1000
    assert end.request_id == start.request_id != ""
    assert end.actor == "owner"


def test_a_range_download_records_the_ranges(client, blob):
    response = client.get(stream(blob), headers={"Range": "bytes=0-9,500-"})
    b"".join(response.streaming_content)
    close(response)
    (start,) = events("blob.download.start")
    (end,) = events("blob.download.end")
    assert start.details["ranges"] == [[0, 9], [500, 999]]
    assert start.details["status"] == 206
    assert end.details["ranges"] == [[0, 9], [500, 999]]
    assert end.outcome == "success"


def test_a_client_that_goes_away_is_recorded_as_aborted(client, blob):
    response = client.get(stream(blob))
    iterator = iter(response.streaming_content)
    first = next(iterator)
    close(response)  # what the WSGI server does when the client disconnects
    (end,) = events("blob.download.end")
    assert end.outcome == "aborted"
    assert 0 < end.details["bytes_sent"] == len(first) < 1000


def test_closed_before_the_first_byte_is_aborted_too(client, blob):
    response = client.get(stream(blob))
    close(response)
    (end,) = events("blob.download.end")
    assert end.outcome == "aborted"
    assert end.details["bytes_sent"] == 0


def test_a_segment_failing_mid_stream_is_recorded_as_error(client, blob, settings):
    path = settings.STORAGES["blobs"]["OPTIONS"]["location"] + "/" + blob.storage_name
    with open(path, "r+b") as handle:  # corrupt the last segment: the first one still authenticates
        handle.seek(-5, 2)
        handle.write(b"XXXXX")
    response = client.get(stream(blob))
    with pytest.raises(BlobIntegrityError):
        b"".join(response.streaming_content)
    close(response)
    (end,) = events("blob.download.end")
    assert end.outcome == "error"


def test_a_download_that_cannot_start_is_recorded_as_error(client, blob, settings):
    path = settings.STORAGES["blobs"]["OPTIONS"]["location"] + "/" + blob.storage_name
    with open(path, "r+b") as handle:
        handle.seek(60)
        handle.write(b"XXXXX")
    response = client.get(stream(blob))
    assert response.status_code == 500
    (start,) = events("blob.download.start")
    assert start.outcome == "error"
    assert start.details["error"] == "integrity_error"
    assert not events("blob.download.end")


def test_head_records_nothing(client, blob):
    before = AuditEvent.objects.count()
    assert client.head(stream(blob)).status_code == 200
    assert AuditEvent.objects.count() == before


def test_delete_and_verify_are_recorded(client, blob):
    assert blob_verify(blob=blob).ok
    response = client.delete(reverse("blobs:detail", args=[blob.pk]))
    assert response.status_code == 204
    (verify,) = events("blob.verify")
    (delete,) = events("blob.delete")
    assert verify.actor.startswith("system:cli:")  # called outside a request
    assert verify.details == {"ok": True, "detail": "ok"}
    assert delete.actor == "owner"
    assert delete.target_id == str(blob.pk)
    assert verify_chain(chain_rows()).ok


def test_a_failing_audit_write_fails_the_change(blob):
    from django.db import OperationalError, connection

    def refuse(execute, sql, params, many, context):
        if 'INSERT INTO "audit_auditevent"' in sql:
            raise OperationalError("disk I/O error")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse), pytest.raises(OperationalError):
        blob_delete(blob=blob)
    assert Blob.objects.filter(pk=blob.pk).exists()  # the delete rolled back with its event


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(client, blob, settings):
    response = client.head(stream(blob), headers={"X-Forwarded-For": "6.6.6.6"}, REMOTE_ADDR="192.0.2.10")
    assert response.status_code == 200
    response = client.get(stream(blob), headers={"X-Forwarded-For": "6.6.6.6"}, REMOTE_ADDR="192.0.2.10")
    close(response)
    (start,) = events("blob.download.start")
    assert start.remote_addr == "192.0.2.10"


def test_forwarded_for_from_a_trusted_proxy_is_believed(settings, owner, blob):
    settings.AUDIT = {**settings.AUDIT, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    c = Client()  # a new client: the middleware reads the setting when it is built
    c.force_login(owner)
    response = c.get(
        stream(blob), headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}, REMOTE_ADDR="10.1.2.3"
    )
    close(response)
    (start,) = events("blob.download.start")
    assert start.remote_addr == "198.51.100.7"


def test_forged_request_id_is_sanitized_and_echoed(client, blob):
    response = client.get(stream(blob), headers={"X-Request-ID": "evil\x7f<script>" + "x" * 100})
    close(response)
    (start,) = events("blob.download.start")
    assert start.request_id == response["X-Request-ID"]
    assert start.request_id == ("evilscript" + "x" * 100)[:64]


def test_a_request_id_is_generated_when_missing(client):
    response = client.get("/health")
    assert len(response["X-Request-ID"]) == 32


def test_login_and_failed_login_are_recorded_without_the_password():
    make_user("ann")
    c = Client()
    assert not c.login(username="ann", password="wrong-password-123")
    assert c.login(username="ann", password=PASSWORD)
    failed, ok = events("auth.login_failed") + events("auth.login")
    assert failed.outcome == "denied"
    assert failed.details == {"username": "ann"}
    assert ok.actor == "ann"
    for event in (failed, ok):
        assert "wrong-password" not in str(event.chain_fields())
        assert PASSWORD not in str(event.chain_fields())


def test_admin_login_page_records_failures():
    make_user("ann", is_staff=True)
    c = Client()
    c.post(reverse("admin:login"), {"username": "ann", "password": "nope-nope-123"})
    (failed,) = events("auth.login_failed")
    assert failed.target_id == "ann"


def test_role_membership_and_permission_changes_are_recorded():
    user = make_user("bob", perms=())
    group = Group.objects.create(name="Auditors-test")
    permission = Permission.objects.get(codename="view_auditevent")
    group.permissions.add(permission)
    user.groups.add(group)
    group.user_set.remove(user)
    perms, added, removed = (
        events("role.permissions_add") + events("role.member_add") + events("role.member_remove")
    )
    assert perms.details == {"group": "Auditors-test", "permissions": ["audit.view_auditevent"]}
    assert added.target_id == str(user.pk)
    assert added.details == {"role": "Auditors-test"}
    assert removed.target_id == str(user.pk)


def test_jwt_issue_refresh_revoke_and_failure_are_recorded_without_tokens():
    user = make_user("jay")
    c = Client()
    bad = c.post(
        reverse("token-obtain"),
        {"username": "jay", "password": "wrong-password-1"},
        content_type="application/json",
    )
    assert bad.status_code == 401
    pair = c.post(
        reverse("token-obtain"), {"username": "jay", "password": PASSWORD}, content_type="application/json"
    ).json()
    refreshed = c.post(
        reverse("token-refresh"), {"refresh": pair["refresh"]}, content_type="application/json"
    ).json()
    assert (
        c.post(
            reverse("token-blacklist"), {"refresh": refreshed["refresh"]}, content_type="application/json"
        ).status_code
        == 200
    )
    replay = c.post(reverse("token-refresh"), {"refresh": pair["refresh"]}, content_type="application/json")
    assert replay.status_code == 401
    issued = events("auth.token_issue")
    assert [(e.outcome, e.actor) for e in issued] == [("denied", "anonymous"), ("success", "jay")]
    assert events("auth.login_failed")[0].details == {"username": "jay"}
    refresh = events("auth.token_refresh")
    assert [(e.outcome, e.actor_id) for e in refresh] == [("success", str(user.pk)), ("denied", "")]
    (revoke,) = events("auth.token_revoke")
    assert revoke.actor == "jay"
    everything = str([e.chain_fields() for e in events()])
    for secret in (pair["access"], pair["refresh"], refreshed["refresh"], PASSWORD, "wrong-password-1"):
        assert secret not in everything


def test_a_jwt_download_is_attributed_to_the_token_user(blob, owner):
    c = Client()
    pair = c.post(
        reverse("token-obtain"), {"username": "owner", "password": PASSWORD}, content_type="application/json"
    )
    access = pair.json()["access"]
    response = c.get(stream(blob), headers={"Authorization": f"Bearer {access}"})
    b"".join(response.streaming_content)
    close(response)
    start, end = events("blob.download.start") + events("blob.download.end")
    assert (start.actor, end.actor) == ("owner", "owner")
    assert start.actor_id == str(owner.pk)


def test_a_cli_plaintext_export_is_recorded(blob, tmp_path):
    from django.core.management import call_command

    call_command("blobs_export", str(blob.pk), "--range", "0-9", "-o", str(tmp_path / "out.bin"))
    (event,) = events("blob.export")
    assert event.actor.startswith("system:cli:")
    assert event.details == {"range": [0, 9], "to": "file", "bytes": 10}


def test_admin_actions_are_attributed_to_the_admin(blob):
    boss = make_user("boss", perms=(), is_superuser=True)
    c = Client()
    c.force_login(boss)
    response = c.post(
        reverse("admin:blobs_blob_changelist"), {"action": "verify_integrity", "_selected_action": [blob.pk]}
    )
    assert response.status_code == 302
    (verify,) = events("blob.verify")
    assert verify.actor == "boss"
    assert verify.request_id


def test_rewrap_reencrypt_and_key_export_are_recorded(local_providers, owner):
    from django.core.management import call_command

    local_providers({"local": ["mk-1"]})
    rotated = make_blob(owner, b"rotate me")
    local_providers({"local": ["mk-2", "mk-1"]})  # a new active master key
    call_command("blobs_rewrap", stdout=StringIO(), stderr=StringIO())
    (rewrap,) = events("blob.rewrap")
    assert rewrap.target_id == str(rotated.pk)
    assert rewrap.details == {
        "from": {"provider": "local", "key_ref": "mk-1"},
        "to": {"provider": "local", "key_ref": "mk-2"},
    }
    call_command("blobs_reencrypt", stdout=StringIO(), stderr=StringIO())
    (reencrypt,) = events("blob.reencrypt")
    assert reencrypt.details["to"]["key_ref"] == "mk-2"
    out = StringIO()
    make_user("kadmin", perms=(), roles=(roles.KEY_ADMINISTRATORS,))
    call_command(
        "blobs_export_key",
        str(rotated.pk),
        "--as",
        "kadmin",
        "--acknowledge-key-exposure",
        stdout=out,
        stderr=StringIO(),
    )
    (export,) = events("blob.key_export")
    assert export.actor == "kadmin"  # the key administrator named with --as
    keyset = out.getvalue()
    assert keyset.strip()
    assert keyset.strip() not in str(export.chain_fields())
    assert verify_chain(chain_rows()).ok


def test_refused_upload_and_delete_are_recorded_as_denied(blob):
    viewer = make_user("viewer", perms=("view_any_blob",))
    c = Client()
    c.force_login(viewer)
    assert c.delete(reverse("blobs:detail", args=[blob.pk])).status_code == 403
    (denied,) = events("blob.delete")
    assert (denied.outcome, denied.actor, denied.target_id) == ("denied", "viewer", str(blob.pk))
    refused = c.post(reverse("blobs:collection"), data=b"x", content_type="text/plain")
    assert refused.status_code == 403
    (upload,) = [e for e in events("blob.upload") if e.outcome == "denied"]
    assert upload.actor == "viewer"
