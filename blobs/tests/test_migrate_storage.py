"""blobs_migrate_storage: existing blobs moved from the filesystem to S3 (moto's server over real HTTP),
copied, verified where they land, audited, resumable; new uploads go to S3 while old ones stay readable."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management.base import CommandError
from django.urls import reverse

from audit.models import AuditEvent
from blobs.models import Blob
from blobs.rotation import Outcome, blob_move_storage
from blobs.storage import blob_store
from blobs.tests.factories import make_blob, pattern, plaintext, run, stored_files
from blobs.tests.s3 import ALIAS

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("small_segments")]


@pytest.fixture
def on_filesystem(owner, settings, s3_bucket):
    """Three blobs uploaded while new blobs went to the filesystem; new blobs now go to S3."""
    settings.BLOBS = {**settings.BLOBS, "STORAGE_ALIAS": "blobs"}
    blobs = [make_blob(owner, pattern(300 * (i + 1), seed=i), filename=f"f{i}") for i in range(3)]
    settings.BLOBS = {**settings.BLOBS, "STORAGE_ALIAS": ALIAS}
    return blobs


def fields(out: str) -> dict[str, str]:
    return {line.split("\t")[0]: line.split("\t", 1)[1] for line in out.splitlines()}


def test_old_blobs_stay_readable_on_the_filesystem_while_new_ones_go_to_s3(
    owner, owner_client, on_filesystem, s3_bucket
):
    new = make_blob(owner, pattern(500, seed=9))
    assert new.storage_alias == ALIAS
    assert s3_bucket.keys() == [s3_bucket.key(new.storage_name)]
    for blob in [*on_filesystem, new]:
        response = owner_client.get(reverse("blobs:stream", args=[blob.pk]))
        assert b"".join(response.streaming_content) == plaintext(blob)


def test_migrate_moves_verifies_and_audits_each_blob(
    on_filesystem, s3_bucket, django_capture_on_commit_callbacks
):
    expected = {blob.pk: plaintext(blob) for blob in on_filesystem}
    with django_capture_on_commit_callbacks(execute=True):
        out, _err = run("blobs_migrate_storage", "--to", ALIAS)
    assert fields(out) == {"target": ALIAS, "moved": "3", "changed meanwhile (skipped)": "0", "failed": "0"}
    assert stored_files() == []  # the filesystem objects are gone
    moved = Blob.objects.in_bulk(list(expected))
    assert {blob.storage_alias for blob in moved.values()} == {ALIAS}
    assert sorted(s3_bucket.keys()) == sorted(s3_bucket.key(blob.storage_name) for blob in moved.values())
    assert {pk: plaintext(blob) for pk, blob in moved.items()} == expected
    for old in on_filesystem:
        event = AuditEvent.objects.get(action="blob.migrate_storage", target_id=str(old.pk))
        assert event.outcome == "success"
        assert event.details["changes"]["storage_alias"] == {"old": "blobs", "new": ALIAS}
        assert event.details["changes"]["storage_name"]["old"] == old.storage_name
    run_event = AuditEvent.objects.get(action="blob.migrate_storage_run")
    assert (run_event.outcome, run_event.details["moved"]) == ("success", 3)


def test_a_rerun_has_nothing_left_to_do(on_filesystem, s3_bucket):
    run("blobs_migrate_storage", "--to", ALIAS)
    out, _err = run("blobs_migrate_storage", "--to", ALIAS)
    assert fields(out)["moved"] == "0"


def test_a_blob_that_does_not_verify_stays_where_it_was_and_fails_the_run(on_filesystem, s3_bucket):
    bad = on_filesystem[1]
    path = Path(blob_store("blobs").storage.path(bad.storage_name))
    raw = bytearray(path.read_bytes())
    raw[2 * bad.segment_size + 5] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CommandError, match=str(bad.pk)):
        run("blobs_migrate_storage", "--to", ALIAS)
    bad.refresh_from_db()
    assert bad.storage_alias == "blobs"
    assert path.exists()
    assert len(s3_bucket.keys()) == 2  # the two good ones; the bad one's copy was removed
    event = AuditEvent.objects.get(action="blob.migrate_storage", target_id=str(bad.pk))
    assert (event.outcome, event.details["error"]) == ("error", "integrity_error")


def test_a_blob_already_in_the_target_is_skipped(owner, s3_bucket):
    blob = make_blob(owner, b"already there")
    assert blob_move_storage(blob=blob, to_alias=ALIAS) is Outcome.SKIPPED


def test_a_row_changed_meanwhile_keeps_its_object_and_the_copy_goes(on_filesystem, s3_bucket):
    blob = on_filesystem[0]
    Blob.objects.filter(pk=blob.pk).update(storage_name=blob.storage_name + "-0000000000000000")
    assert blob_move_storage(blob=blob, to_alias=ALIAS) is Outcome.CONFLICT
    assert s3_bucket.keys() == []


def test_an_unknown_or_unreachable_target_is_refused_before_any_work(on_filesystem, s3_bucket):
    with pytest.raises(CommandError, match="No STORAGES alias 'nowhere'"):
        run("blobs_migrate_storage", "--to", "nowhere")
    s3_bucket.proxy.fail_next(100, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(CommandError, match="not usable"):
        run("blobs_migrate_storage", "--to", ALIAS)
    assert {blob.storage_alias for blob in Blob.objects.all()} == {"blobs"}
