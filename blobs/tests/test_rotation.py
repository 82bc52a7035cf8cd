"""Key rotation (blobs.rotation, blobs_rewrap, blobs_reencrypt) on the real local provider: several aliases
and several master keys per alias stand in for key versions and for "another provider"."""

from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEvent
from blobs.models import Blob
from blobs.rotation import (
    Outcome,
    RotationTarget,
    blob_reencrypt,
    blob_rewrap,
    blobs_needing_rewrap,
    rotation_target,
)
from blobs.services import OBJECT_NAME, blob_open, blobs_gc, object_name
from blobs.storage import blob_store
from blobs.streaming import blob_open_stream
from blobs.tests.factories import make_blob, pattern, run, stored_files
from kms.base import WrappedKey
from kms.exceptions import KeyUnavailable, UnwrapFailed
from kms.models import KeyRotation
from kms.providers.local import LocalKeyProvider
from kms.registry import get_provider

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("small_segments")]


@pytest.fixture
def keys(local_providers):
    """Blobs start under local:mk-1; "other" is a second provider (ok-1)."""
    local_providers({"local": ["mk-1"], "other": ["ok-1"]})
    return local_providers


@pytest.fixture
def blobs(keys, owner):
    return [make_blob(owner, pattern(300 + i, seed=i), filename=f"f{i}") for i in range(5)]


def fields(out: str) -> dict[str, str]:
    return {line.split("\t")[0]: line.split("\t", 1)[1] for line in out.splitlines()}


def plaintext(blob: Blob) -> bytes:
    return b"".join(blob_open(blob=Blob.objects.get(pk=blob.pk)).iter_all())


def object_path(blob: Blob) -> Path:
    return Path(blob_store("blobs").storage.path(Blob.objects.get(pk=blob.pk).storage_name))


def key_refs() -> set[tuple[str, str]]:
    return set(Blob.objects.values_list("key_provider", "key_ref"))


@pytest.fixture
def counted_rewraps(monkeypatch):
    calls: list[str] = []
    real = LocalKeyProvider.rewrap

    def spy(self, wrapped, *, context):
        calls.append(wrapped.key_ref)
        return real(self, wrapped, context=context)

    monkeypatch.setattr(LocalKeyProvider, "rewrap", spy)
    return calls


# --- rewrap ------------------------------------------------------------------------------------------------


def test_rewrap_moves_every_key_to_the_new_master_key_and_the_old_one_can_go(blobs, keys, counted_rewraps):
    keys({"local": ["mk-2", "mk-1"], "other": ["ok-1"]})
    out, _err = run("blobs_rewrap")
    assert fields(out) == {
        "target": "local\tmk-2",
        "rewrapped": "5",
        "already on target": "0",
        "changed meanwhile (skipped)": "0",
        "failed": "0",
    }
    assert key_refs() == {("local", "mk-2")}
    assert len(counted_rewraps) == 5  # same provider: its rewrap (server-side where the KMS has one)
    keys({"local": ["mk-2"]})  # mk-1 retired: nothing needs it any more
    for i, blob in enumerate(blobs):
        assert plaintext(blob) == pattern(300 + i, seed=i)


def test_rewrap_keeps_the_data_key_and_the_object(blobs, keys):
    before = {b.pk: (b.storage_name, object_path(b).read_bytes(), bytes(b.wrapped_key)) for b in blobs}
    keys({"local": ["mk-2", "mk-1"]})
    run("blobs_rewrap")
    for blob in Blob.objects.all():
        name, data, wrapped = before[blob.pk]
        assert blob.storage_name == name
        assert object_path(blob).read_bytes() == data  # same data key: the object is untouched
        assert bytes(blob.wrapped_key) != wrapped


def test_rewrap_to_another_provider_unwraps_with_the_old_and_wraps_with_the_new(
    blobs, keys, counted_wraps, counted_unwraps, counted_rewraps
):
    out, _ = run("blobs_rewrap", "--to", "other")
    assert fields(out)["target"] == "other\tok-1"
    assert fields(out)["rewrapped"] == "5"
    assert key_refs() == {("other", "ok-1")}
    assert counted_rewraps == []
    assert counted_unwraps == ["local:mk-1"] * 5
    assert counted_wraps == ["other"] * 5
    keys({"other": ["ok-1"]})  # the old provider is gone entirely
    assert [plaintext(b) for b in blobs] == [pattern(300 + i, seed=i) for i in range(5)]


def test_rewrap_is_idempotent_a_rerun_makes_no_kms_calls(blobs, keys, counted_wraps, counted_unwraps):
    keys({"local": ["mk-2", "mk-1"]})
    run("blobs_rewrap")
    wrapped = {b.pk: bytes(b.wrapped_key) for b in Blob.objects.all()}
    counted_wraps.clear()
    counted_unwraps.clear()
    out, _ = run("blobs_rewrap")
    assert fields(out)["rewrapped"] == "0"
    assert fields(out)["already on target"] == "5"
    assert (counted_wraps, counted_unwraps) == ([], [])
    assert {b.pk: bytes(b.wrapped_key) for b in Blob.objects.all()} == wrapped


def test_rewrap_killed_mid_run_finishes_on_rerun(blobs, keys, monkeypatch):
    keys({"local": ["mk-2", "mk-1"]})
    real = LocalKeyProvider.rewrap
    done = []

    def killed_after_two(self, wrapped, *, context):
        if len(done) == 2:
            raise KeyboardInterrupt  # Ctrl-C (or the pod going away) in the middle of the third row
        done.append(1)
        return real(self, wrapped, context=context)

    monkeypatch.setattr(LocalKeyProvider, "rewrap", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run("blobs_rewrap", "--batch-size", "2")
    assert sorted(ref for _p, ref in Blob.objects.values_list("key_provider", "key_ref")) == [
        "mk-1",
        "mk-1",
        "mk-1",
        "mk-2",
        "mk-2",
    ]
    interrupted = KeyRotation.objects.get()
    assert (interrupted.outcome, interrupted.changed) == ("interrupted", 2)

    monkeypatch.setattr(LocalKeyProvider, "rewrap", real)
    out, _ = run("blobs_rewrap", "--batch-size", "2")
    assert fields(out)["rewrapped"] == "3"
    assert fields(out)["already on target"] == "2"
    assert key_refs() == {("local", "mk-2")}
    keys({"local": ["mk-2"]})
    assert [plaintext(b) for b in blobs] == [pattern(300 + i, seed=i) for i in range(5)]


def test_rewrap_dry_run_changes_nothing_and_calls_no_kms(blobs, keys, owner, counted_wraps, counted_unwraps):
    keys({"local": ["mk-2", "mk-1"], "other": ["ok-1"]})
    make_blob(owner, b"already on mk-2")
    before = {b.pk: bytes(b.wrapped_key) for b in Blob.objects.all()}
    counted_wraps.clear()
    out, err = run("blobs_rewrap", "--dry-run")
    lines = out.splitlines()
    assert lines[0] == "target\tlocal\tmk-2"
    assert lines[1] == f"would rewrap\tlocal\tmk-1\t5\t{sum(300 + i for i in range(5))}"
    assert lines[2:] == ["would rewrap total\t5", "already on target\t1"]
    assert "nothing was changed" in err
    assert {b.pk: bytes(b.wrapped_key) for b in Blob.objects.all()} == before
    assert (counted_wraps, counted_unwraps) == ([], [])
    assert not KeyRotation.objects.exists()


def test_rewrap_failure_names_the_blob_and_leaves_its_row(blobs, keys):
    bad = blobs[2]
    tampered = bytearray(bad.wrapped_key)
    tampered[-1] ^= 1
    Blob.objects.filter(pk=bad.pk).update(wrapped_key=bytes(tampered))
    keys({"local": ["mk-2", "mk-1"]})
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match=f"1 blob\\(s\\) failed: {bad.pk}\\. Re-run"):
        call_command("blobs_rewrap", stdout=out, stderr=err)
    assert f"FAILED {bad.pk}: Wrapped key did not authenticate" in err.getvalue()
    assert fields(out.getvalue())["rewrapped"] == "4"
    row = Blob.objects.get(pk=bad.pk)
    assert (row.key_ref, bytes(row.wrapped_key)) == ("mk-1", bytes(tampered))
    record = KeyRotation.objects.get()
    assert (record.outcome, record.changed, record.failed, record.examined) == ("failed", 4, 1, 5)
    # The audit log has the four rewraps, the failure (its row unchanged) and the run.
    events = AuditEvent.objects.filter(action__startswith="blob.rewrap")
    assert sorted(e.outcome for e in events) == ["error", "success", "success", "success", "success"]
    failure = events.get(outcome="error")
    assert (failure.target_id, failure.details["error"]) == (str(bad.pk), "UnwrapFailed")
    assert failure.actor.startswith("system:cli:")
    run_event = AuditEvent.objects.get(action="kms.rewrap_run")
    assert run_event.outcome == "error"
    assert (run_event.details["changed"], run_event.details["failed"]) == (4, 1)


def test_rewrap_does_not_overwrite_a_concurrent_change(blobs, keys, monkeypatch):
    keys({"local": ["mk-2", "mk-1"], "other": ["ok-1"]})
    blob = blobs[0]
    real = LocalKeyProvider.rewrap

    def meanwhile(self, wrapped, *, context):
        result = real(self, wrapped, context=context)
        # Another operator's run moves this row to "other" while ours is talking to the KMS.
        blob_rewrap(blob=Blob.objects.get(pk=blob.pk), target=RotationTarget("other", "ok-1"))
        return result

    monkeypatch.setattr(LocalKeyProvider, "rewrap", meanwhile)
    assert blob_rewrap(blob=blob, target=rotation_target()) is Outcome.CONFLICT
    row = Blob.objects.get(pk=blob.pk)
    assert (row.key_provider, row.key_ref) == ("other", "ok-1")
    assert plaintext(blob) == pattern(300, seed=0)


def test_rewrap_to_an_unknown_provider_is_a_clear_error(blobs):
    with pytest.raises(CommandError, match="not usable: Key provider 'nope' is not configured"):
        run("blobs_rewrap", "--to", "nope")


def test_rewrap_with_the_target_down_changes_nothing(blobs, keys, monkeypatch):
    keys({"local": ["mk-2", "mk-1"]})

    def down(self, wrapped, *, context):
        raise KeyUnavailable("KMS unreachable", provider=self.alias)

    monkeypatch.setattr(LocalKeyProvider, "rewrap", down)
    with pytest.raises(CommandError, match="5 blob"):
        run("blobs_rewrap")
    assert key_refs() == {("local", "mk-1")}


def test_rewrap_records_the_run(blobs, keys):
    keys({"local": ["mk-2", "mk-1"]})
    run("blobs_rewrap")
    record = KeyRotation.objects.get()
    assert (record.kind, record.outcome, record.target_provider, record.target_key_ref) == (
        "rewrap",
        "completed",
        "local",
        "mk-2",
    )
    assert (record.examined, record.changed, record.skipped, record.failed) == (5, 5, 0, 0)
    assert record.actor.startswith("system:cli:")
    assert record.started_at <= record.finished_at
    run_event = AuditEvent.objects.get(action="kms.rewrap_run")
    assert (run_event.outcome, run_event.target_id) == ("success", "local:mk-2")
    assert run_event.details["changed"] == 5
    with pytest.raises(TypeError):
        record.save()
    with pytest.raises(TypeError):
        KeyRotation.objects.update(changed=0)


def test_needing_rewrap_counts_provider_or_key_ref_differences(blobs, keys, owner):
    keys({"local": ["mk-2", "mk-1"], "other": ["ok-1"]})
    make_blob(owner, b"new")
    assert blobs_needing_rewrap(target=rotation_target()).count() == 5
    assert blobs_needing_rewrap(target=rotation_target(alias="other")).count() == 6


def test_a_remote_kms_without_a_known_active_ref_is_probed_once(keys, monkeypatch, counted_wraps):
    monkeypatch.setattr(LocalKeyProvider, "active_key_ref", lambda self: None)
    assert rotation_target(alias="other") == RotationTarget("other", "ok-1")
    assert counted_wraps == ["other"]


# --- re-encrypt --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_reencrypt_gives_new_data_keys_and_new_objects_and_removes_the_old(owner, keys):
    blobs = [make_blob(owner, pattern(500, seed=i)) for i in range(3)]
    keys({"local": ["mk-2", "mk-1"]})
    old_paths = [object_path(b) for b in blobs]
    out, _ = run("blobs_reencrypt")
    assert fields(out)["re-encrypted"] == "3"
    assert fields(out)["target"] == "local\tmk-2"
    for blob, old_path in zip(blobs, old_paths, strict=True):
        row = Blob.objects.get(pk=blob.pk)
        assert row.storage_name != blob.storage_name
        assert OBJECT_NAME.fullmatch(row.storage_name)
        assert row.storage_name.startswith(object_name(blob.pk) + "-")
        assert (row.key_provider, row.key_ref) == ("local", "mk-2")
        assert (row.size, row.sha256) == (blob.size, blob.sha256)
        assert not old_path.exists()
    assert stored_files() == sorted(object_path(b) for b in blobs)
    keys({"local": ["mk-2"]})
    assert [plaintext(b) for b in blobs] == [pattern(500, seed=i) for i in range(3)]
    assert KeyRotation.objects.get().kind == "reencrypt"


def _data_key(blob: Blob) -> bytes:
    wrapped = WrappedKey(bytes(blob.wrapped_key), blob.key_ref, blob.key_algorithm)
    return get_provider(blob.key_provider).unwrap(wrapped, context=blob.key_context)


def test_reencrypt_changes_the_data_key_not_only_its_wrap(owner, django_capture_on_commit_callbacks):
    blob = make_blob(owner, pattern(400))
    with django_capture_on_commit_callbacks(execute=True):
        assert blob_reencrypt(blob=blob) is Outcome.CHANGED
    assert _data_key(Blob.objects.get(pk=blob.pk)) != _data_key(blob)
    assert plaintext(blob) == pattern(400)


@pytest.mark.django_db(transaction=True)
def test_downloads_keep_working_during_reencrypt(owner):
    data = pattern(3000)
    blob = make_blob(owner, data)
    old_path = object_path(blob)
    body = blob_open_stream(blob=blob, ranges=None).chunks
    try:
        first = next(body)  # a download in progress, reading the old object
        assert blob_reencrypt(blob=Blob.objects.get(pk=blob.pk)) is Outcome.CHANGED
        assert not old_path.exists()  # removed after the swap committed...
        rest = b"".join(body)  # ...and the open download still finishes correctly
    finally:
        body.close()
    assert first + rest == data
    fresh = Blob.objects.get(pk=blob.pk)
    assert fresh.storage_name != blob.storage_name
    new_body = blob_open_stream(blob=fresh, ranges=None).chunks
    try:
        assert b"".join(new_body) == data
    finally:
        new_body.close()


@pytest.mark.django_db(transaction=True)
def test_reencrypt_only_one_key_ref_and_a_rerun_finishes_the_job(owner, keys, monkeypatch):
    on_mk1 = [make_blob(owner, pattern(200, seed=i)) for i in range(4)]
    keys({"local": ["mk-2", "mk-1"]})
    on_mk2 = make_blob(owner, b"already new")
    real_wrap = LocalKeyProvider.wrap
    wraps = []

    def killed_on_third(self, data_key, *, context):
        wraps.append(1)
        if len(wraps) == 4:  # one wrap per blob (the local target needs no probe): dies on the fourth
            raise KeyboardInterrupt
        return real_wrap(self, data_key, context=context)

    monkeypatch.setattr(LocalKeyProvider, "wrap", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        run("blobs_reencrypt", "--only", "mk-1")
    monkeypatch.setattr(LocalKeyProvider, "wrap", real_wrap)
    assert Blob.objects.filter(key_ref="mk-1").count() == 1
    out, _ = run("blobs_reencrypt", "--only", "mk-1", "--batch-size", "1")
    assert fields(out)["re-encrypted"] == "1"
    assert key_refs() == {("local", "mk-2")}
    assert Blob.objects.get(pk=on_mk2.pk).storage_name == on_mk2.storage_name  # not selected
    assert len(stored_files()) == 5  # no leftovers from the interrupted run
    keys({"local": ["mk-2"]})
    assert [plaintext(b) for b in on_mk1] == [pattern(200, seed=i) for i in range(4)]


def _assert_untouched(blob: Blob, old_bytes: bytes) -> None:
    row = Blob.objects.get(pk=blob.pk)
    assert (row.storage_name, bytes(row.wrapped_key), row.key_ref) == (
        blob.storage_name,
        bytes(blob.wrapped_key),
        blob.key_ref,
    )
    assert object_path(blob).read_bytes() == old_bytes
    assert stored_files() == [object_path(blob)]  # no orphan new object


@pytest.mark.django_db(transaction=True)
def test_reencrypt_disk_full_leaves_the_old_blob_and_no_new_object(owner, request):
    blob = make_blob(owner, pattern(2000))
    old = object_path(blob).read_bytes()
    request.getfixturevalue("disk_full")(room=300)  # the disk fills up only now, mid-rewrite
    with pytest.raises(CommandError, match=str(blob.pk)):
        run("blobs_reencrypt")
    _assert_untouched(blob, old)
    assert plaintext(blob) == pattern(2000)


@pytest.mark.django_db(transaction=True)
def test_reencrypt_with_the_kms_down_writes_nothing(owner, monkeypatch):
    blob = make_blob(owner, pattern(700))
    old = object_path(blob).read_bytes()

    def down(self, data_key, *, context):
        raise KeyUnavailable("KMS unreachable", provider=self.alias)

    monkeypatch.setattr(LocalKeyProvider, "wrap", down)
    with pytest.raises(KeyUnavailable):
        blob_reencrypt(blob=blob)
    _assert_untouched(blob, old)


@pytest.mark.django_db(transaction=True)
def test_reencrypt_of_a_tampered_object_fails_and_keeps_it(owner):
    blob = make_blob(owner, pattern(1000))
    path = object_path(blob)
    raw = bytearray(path.read_bytes())
    raw[-50] ^= 1
    path.write_bytes(bytes(raw))
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match=f"1 blob\\(s\\) failed: {blob.pk}"):
        call_command("blobs_reencrypt", stdout=out, stderr=err)
    assert f"FAILED {blob.pk}" in err.getvalue()
    _assert_untouched(blob, bytes(raw))


@pytest.mark.django_db(transaction=True)
def test_reencrypt_concurrent_change_wins_and_the_new_object_goes(owner, keys, monkeypatch):
    blob = make_blob(owner, pattern(600))
    keys({"local": ["mk-2", "mk-1"]})
    real_wrap = LocalKeyProvider.wrap

    def rewrapped_meanwhile(self, data_key, *, context):
        result = real_wrap(self, data_key, context=context)
        monkeypatch.setattr(LocalKeyProvider, "wrap", real_wrap)
        assert blob_rewrap(blob=Blob.objects.get(pk=blob.pk), target=rotation_target()) is Outcome.CHANGED
        return result

    monkeypatch.setattr(LocalKeyProvider, "wrap", rewrapped_meanwhile)
    assert blob_reencrypt(blob=blob) is Outcome.CONFLICT
    row = Blob.objects.get(pk=blob.pk)
    assert (row.storage_name, row.key_ref) == (blob.storage_name, "mk-2")  # the rewrap stands
    assert stored_files() == [object_path(blob)]
    assert plaintext(blob) == pattern(600)


@pytest.mark.django_db(transaction=True)
def test_gc_removes_an_orphan_from_a_crashed_reencrypt_but_not_live_objects(owner):
    blob = make_blob(owner, pattern(300))
    run("blobs_reencrypt")
    live = object_path(blob)
    orphan = live.with_name(blob.pk.hex + "-" + "0" * 16)  # a crash after the new object, before the swap
    orphan.write_bytes(b"ciphertext")
    past = (live.stat().st_mtime - 7200,) * 2
    os.utime(orphan, past)
    os.utime(live, past)
    assert blobs_gc(older_than=timedelta(minutes=60)).objects == 1
    assert stored_files() == [live]
    assert plaintext(blob) == pattern(300)


def test_reencrypt_wrong_wrap_fails_cleanly(owner, monkeypatch):
    blob = make_blob(owner, pattern(300))
    old = object_path(blob).read_bytes()

    def refuses(self, wrapped, *, context):
        raise UnwrapFailed("does not authenticate", provider=self.alias)

    monkeypatch.setattr(LocalKeyProvider, "unwrap", refuses)
    with pytest.raises(UnwrapFailed):
        blob_reencrypt(blob=blob)
    _assert_untouched(blob, old)


def test_reencrypt_only_an_unknown_key_ref_is_an_error_but_a_finished_one_reruns(owner, keys):
    make_blob(owner, b"on mk-1")
    with pytest.raises(CommandError, match="key ref 'mk-typo': nothing re-encrypted"):
        run("blobs_reencrypt", "--only", "mk-typo")
    keys({"local": ["mk-2", "mk-1"]})
    run("blobs_reencrypt", "--only", "mk-1")
    out, _ = run("blobs_reencrypt", "--only", "mk-1")  # the job is done: a re-run says so, exit 0
    assert fields(out)["re-encrypted"] == "0"


def test_rewrap_batch_size_must_be_positive_also_in_a_dry_run(owner):
    for args in (("--batch-size", "0"), ("--batch-size", "0", "--dry-run")):
        with pytest.raises(CommandError, match=r"--batch-size: must be at least 1 \(got 0\)"):
            run("blobs_rewrap", *args)
