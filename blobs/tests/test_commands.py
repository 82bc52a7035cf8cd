"""Operator commands blobs_import, blobs_export, blobs_gc (conventions of architecture.md §10: stdout results,
progress and logs on stderr, inclusive ranges, re-runs skip, failures exit non-zero and say what failed)."""

from __future__ import annotations

import io
import os
import stat
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError, connection, connections
from django.utils import timezone

from audit.models import AuditEvent
from blobs.models import Blob
from blobs.services import BlobUpload, blob_verify
from blobs.storage import blob_store
from blobs.tests.conftest import FailingFile
from blobs.tests.factories import make_blob, make_user, pattern, plaintext, run, stored_files

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("small_segments"),
    pytest.mark.segment_size(256),
]


def parse_lines(out: str) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in out.splitlines()]


# --- blobs_import -------------------------------------------------------------------------------------------


def test_import_a_file(alice, tmp_path):
    source = tmp_path / "invoice.pdf"
    source.write_bytes(pattern(3000))
    out, err = run("blobs_import", str(source), "--owner", "alice")
    [(blob_id, printed_path)] = parse_lines(out)
    assert printed_path == str(source)
    blob = Blob.objects.get(pk=blob_id)
    assert (blob.state, blob.owner, blob.filename) == (Blob.State.READY, alice, "invoice.pdf")
    assert blob.content_type == "application/pdf"
    assert blob.import_source == str(source.resolve())
    assert plaintext(blob) == pattern(3000)
    assert blob_id not in err  # results on stdout only


def test_import_a_directory_recursively(alice, tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    files = {
        tmp_path / "a.txt": b"alpha",
        tmp_path / "sub" / "b.bin": pattern(1000),
        tmp_path / "sub" / "deeper" / "c.csv": b"",
    }
    for path, data in files.items():
        path.write_bytes(data)
    out, _err = run("blobs_import", str(tmp_path), "--owner", "alice")
    lines = parse_lines(out)
    assert sorted(Path(p) for _id, p in lines) == sorted(files)
    for blob_id, path in lines:
        assert plaintext(Blob.objects.get(pk=blob_id)) == files[Path(path)]
    assert Blob.objects.count() == 3


def test_rerun_skips_files_already_imported(alice, tmp_path):
    (tmp_path / "one.txt").write_bytes(b"one")
    (tmp_path / "two.txt").write_bytes(b"two")
    first, _ = run("blobs_import", str(tmp_path), "--owner", "alice")
    second, err = run("blobs_import", str(tmp_path), "--owner", "alice")
    assert second == first  # the same ids, printed again
    assert err.count("skipped (already imported)") == 2
    assert Blob.objects.count() == 2
    assert len(stored_files()) == 2

    (tmp_path / "two.txt").write_bytes(b"two, edited")
    third, _ = run("blobs_import", str(tmp_path), "--owner", "alice")
    assert Blob.objects.count() == 3
    assert parse_lines(third)[0] == parse_lines(first)[0]
    assert parse_lines(third)[1] != parse_lines(first)[1]


def test_import_with_legacy_id(alice, tmp_path):
    source = tmp_path / "old.doc"
    source.write_bytes(b"legacy")
    out, _ = run("blobs_import", str(source), "--owner", "alice", "--legacy-id", "F-1234")
    [(blob_id, _path)] = parse_lines(out)
    assert str(Blob.objects.get(legacy_id="F-1234").pk) == blob_id


def test_reimport_for_another_owner_makes_their_own_blob(alice, tmp_path):
    make_user("bob")
    source = tmp_path / "shared.pdf"
    source.write_bytes(pattern(1500))
    first, _ = run("blobs_import", str(source), "--owner", "alice")
    second, err = run("blobs_import", str(source), "--owner", "bob")
    assert "skipped" not in err
    [(alice_id, _)], [(bob_id, _)] = parse_lines(first), parse_lines(second)
    assert alice_id != bob_id
    assert Blob.objects.get(pk=bob_id).owner.username == "bob"
    assert plaintext(Blob.objects.get(pk=bob_id)) == pattern(1500)
    again, err = run("blobs_import", str(source), "--owner", "bob")  # bob's own re-run: skipped
    assert parse_lines(again) == parse_lines(second)
    assert "skipped (already imported)" in err
    assert Blob.objects.count() == 2


def test_reimport_with_a_legacy_id_records_it(alice, tmp_path):
    source = tmp_path / "old.doc"
    source.write_bytes(b"legacy")
    first, _ = run("blobs_import", str(source), "--owner", "alice")
    second, err = run("blobs_import", str(source), "--owner", "alice", "--legacy-id", "F-9")
    assert "skipped" not in err  # the earlier blob has no legacy id: dropping F-9 would lose it
    [(blob_id, _)] = parse_lines(second)
    assert blob_id != parse_lines(first)[0][0]
    assert str(Blob.objects.get(legacy_id="F-9").pk) == blob_id
    third, err = run("blobs_import", str(source), "--owner", "alice", "--legacy-id", "F-9")
    assert parse_lines(third) == parse_lines(second)
    assert "skipped (already imported)" in err


def test_legacy_id_of_another_blob_is_refused(alice, tmp_path):
    make_user("bob")
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    run("blobs_import", str(tmp_path / "a"), "--owner", "alice", "--legacy-id", "F-1")
    for owner, name in (("bob", "a"), ("alice", "b")):
        with pytest.raises(CommandError, match=r"Legacy id 'F-1' already names blob .*nothing imported"):
            run("blobs_import", str(tmp_path / name), "--owner", owner, "--legacy-id", "F-1")
    assert Blob.objects.count() == 1
    assert Blob.objects.get().owner.username == "alice"


def test_legacy_id_needs_exactly_one_file(alice, tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(CommandError, match="exactly one"):
        run("blobs_import", str(tmp_path), "--owner", "alice", "--legacy-id", "F-1")
    assert Blob.objects.count() == 0


def test_import_unknown_owner(tmp_path):
    source = tmp_path / "a"
    source.write_bytes(b"a")
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("blobs_import", str(source), "--owner", "nobody")
    assert Blob.objects.count() == 0


def test_import_missing_path(alice, tmp_path):
    present = tmp_path / "here"
    present.write_bytes(b"x")
    missing = tmp_path / "not-here"
    with pytest.raises(CommandError, match=f"Not found: {missing}"):
        run("blobs_import", str(present), str(missing), "--owner", "alice")
    assert Blob.objects.count() == 0  # checked before anything is imported


def test_import_failure_is_reported_and_non_zero(alice, tmp_path, settings):
    settings.KMS_PROVIDERS = {
        "local": {
            "BACKEND": "kms.providers.local.LocalKeyProvider",
            "OPTIONS": {"key_file": str(tmp_path / "gone.key")},
        }
    }
    source = tmp_path / "a.txt"
    source.write_bytes(b"a")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 of 1 file"):
        call_command("blobs_import", str(source), "--owner", "alice", stdout=out, stderr=err)
    assert f"FAILED {source}" in err.getvalue()
    assert out.getvalue() == ""
    assert Blob.objects.count() == 0
    assert stored_files() == []


# --- blobs_export -------------------------------------------------------------------------------------------


DATA = pattern(2000)


@pytest.fixture
def blob(alice):
    return make_blob(alice, DATA, filename="data.bin")


def export_stdout(capsysbinary, *args: str) -> bytes:
    call_command("blobs_export", *args)
    return capsysbinary.readouterr().out


def test_export_whole_blob_to_stdout(blob, capsysbinary):
    assert export_stdout(capsysbinary, str(blob.pk)) == DATA
    assert export_stdout(capsysbinary, str(blob.pk), "-o", "-") == DATA


@pytest.mark.parametrize(
    ("spec", "start", "stop"),
    [
        ("0-0", 0, 1),
        ("10-19", 10, 20),
        ("250-1700", 250, 1701),
        ("1990-", 1990, 2000),
        ("-5", 1995, 2000),
        ("1500-99999", 1500, 2000),
    ],
)
def test_export_inclusive_range(blob, capsysbinary, spec, start, stop):
    assert export_stdout(capsysbinary, str(blob.pk), "--range", spec) == DATA[start:stop]


def test_export_to_a_file(blob, tmp_path):
    target = tmp_path / "out.bin"
    _out, err = run("blobs_export", str(blob.pk), "-o", str(target))
    assert target.read_bytes() == DATA
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # plaintext: owner-only
    assert f"Wrote {target}" in err
    run("blobs_export", str(blob.pk), "--range", "100-199", "-o", str(target))
    assert target.read_bytes() == DATA[100:200]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("abc", "Invalid range"),
        ("9-3", "Invalid range"),
        ("5000-6000", "outside the blob"),
        ("0-1,5-6", "one range"),
    ],
)
def test_export_bad_range(blob, capsysbinary, spec, message):
    with pytest.raises(CommandError, match=message):
        call_command("blobs_export", str(blob.pk), "--range", spec)
    assert capsysbinary.readouterr().out == b""


@pytest.mark.parametrize("blob_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_export_unknown_id(blob_id):
    with pytest.raises(CommandError, match="No ready blob"):
        call_command("blobs_export", blob_id)


def test_export_pending_blob_is_unknown(alice):
    upload = BlobUpload(owner=alice, filename="p", content_type=None)
    upload.write(b"pending")
    upload.finish()
    with pytest.raises(CommandError, match="No ready blob"):
        call_command("blobs_export", str(upload.blob.pk))


def test_export_of_a_tampered_blob_fails_and_leaves_no_file(blob, tmp_path):
    path = Path(blob_store("blobs").storage.location) / blob.storage_name
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x01  # in the last segment: earlier segments decrypt and are written first
    path.write_bytes(bytes(raw))
    target = tmp_path / "out.bin"
    with pytest.raises(CommandError, match="Export failed"):
        run("blobs_export", str(blob.pk), "-o", str(target))
    assert list(tmp_path.iterdir()) == []


def test_export_into_a_missing_directory_is_refused_before_decrypting(blob, tmp_path):
    target = tmp_path / "missing" / "dir" / "file"
    with pytest.raises(CommandError, match=f"the directory {target.parent} does not exist"):
        run("blobs_export", str(blob.pk), "-o", str(target))
    assert not (tmp_path / "missing").exists()


def test_export_to_a_full_disk_is_one_message_and_leaves_nothing(blob, tmp_path, monkeypatch):
    monkeypatch.setattr(FailingFile, "room", 500)
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FailingFile(fd, mode, closefd=True))
    target = tmp_path / "out.bin"
    with pytest.raises(CommandError, match=f"Export failed: cannot write {target}: No space left on device"):
        run("blobs_export", str(blob.pk), "-o", str(target))
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_terminal_stdout_unless_asked(blob, monkeypatch):
    class Terminal(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    sink = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", Terminal(sink, write_through=True))
    with pytest.raises(CommandError, match="stdout is a terminal: give -o FILE"):
        call_command("blobs_export", str(blob.pk))
    assert sink.getvalue() == b""
    call_command("blobs_export", str(blob.pk), "-o", "-")
    assert sink.getvalue() == DATA


def test_export_writes_bytes_to_the_real_stdout_buffer(blob, monkeypatch):
    sink = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(sink, write_through=True))
    call_command("blobs_export", str(blob.pk), "--range", "0-9")
    assert sink.getvalue() == DATA[:10]


class StartCheckingSink(io.BytesIO):
    """stdout's bytes, which note at their first write whether the export's start event has committed: read
    by another thread, on a connection of its own, which sees only what was committed."""

    committed_before_first_byte: bool | None = None

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        if self.committed_before_first_byte is None:
            seen: list[bool] = []

            def look() -> None:
                try:
                    seen.append(AuditEvent.objects.filter(action="blob.export.start").exists())
                finally:
                    connections.close_all()

            reader = threading.Thread(target=look)
            reader.start()
            reader.join()
            self.committed_before_first_byte = seen == [True]
        return super().write(data)


@pytest.mark.django_db(transaction=True)
def test_an_export_commits_its_start_event_before_the_first_byte(blob, monkeypatch):
    sink = StartCheckingSink()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(sink, write_through=True))
    call_command("blobs_export", str(blob.pk), "--range", "5-14")
    assert sink.getvalue() == DATA[5:15]
    assert sink.committed_before_first_byte is True
    start, end = AuditEvent.objects.filter(target_id=str(blob.pk), action__startswith="blob.export").order_by(
        "sequence"
    )
    assert (start.action, end.action) == ("blob.export.start", "blob.export")
    assert start.details == {"range": [5, 14], "to": "stdout"}
    assert end.details == {"range": [5, 14], "to": "stdout", "bytes": 10}
    assert start.actor == end.actor
    assert start.actor.startswith("system:cli:")


@pytest.mark.django_db(transaction=True)  # the command's own transaction, as in production
def test_an_export_whose_start_event_cannot_be_written_sends_nothing(blob, tmp_path, capsysbinary):
    def refuse(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if 'INSERT INTO "audit_auditevent"' in sql:
            raise OperationalError("disk I/O error")
        return execute(sql, params, many, context)

    target = tmp_path / "out.bin"
    for output in ("-", str(target)):
        refused = pytest.raises(CommandError, match="Export refused: its audit event could not be written")
        with connection.execute_wrapper(refuse), refused:
            call_command("blobs_export", str(blob.pk), "-o", output)
    assert capsysbinary.readouterr().out == b""
    assert list(tmp_path.iterdir()) == []
    assert not AuditEvent.objects.filter(action__startswith="blob.export").exists()


# --- blobs_gc -----------------------------------------------------------------------------------------------


def pending(owner, *, minutes_old: int) -> Blob:
    upload = BlobUpload(owner=owner, filename="p", content_type=None)
    upload.write(b"left behind")
    upload.finish()
    then = timezone.now() - timedelta(minutes=minutes_old)
    Blob.objects.filter(pk=upload.blob.pk).update(created_at=then)
    stored = Path(blob_store(upload.blob.storage_alias).storage.path(upload.blob.storage_name))
    os.utime(stored, (then.timestamp(), then.timestamp()))  # last written when it was created
    return upload.blob


def test_gc_older_than(alice):
    ready = make_blob(alice, b"keep me")
    old = pending(alice, minutes_old=45)
    young = pending(alice, minutes_old=5)

    out, _ = run("blobs_gc")  # default grace: 60 minutes
    assert out.strip() == "removed 0 pending row(s) and 0 orphan object(s)"

    out, _ = run("blobs_gc", "--older-than", "30")
    assert out.strip() == "removed 1 pending row(s) and 0 orphan object(s)"
    assert set(Blob.objects.values_list("pk", flat=True)) == {ready.pk, young.pk}
    assert not (Path(blob_store("blobs").storage.location) / old.storage_name).exists()

    out, _ = run("blobs_gc", "--older-than", "0")
    assert out.strip().startswith("removed 1 pending row(s)")
    assert list(Blob.objects.all()) == [ready]
    assert plaintext(ready) == b"keep me"


def test_gc_grace_from_settings(alice, settings):
    pending(alice, minutes_old=20)
    settings.BLOBS = {**settings.BLOBS, "GC_GRACE_MINUTES": 10}
    out, _ = run("blobs_gc")
    assert out.startswith("removed 1 pending row(s)")


def test_gc_negative_grace_is_refused(alice):
    pending(alice, minutes_old=20)
    with pytest.raises(CommandError, match=r"--older-than: must be at least 0 \(got -1\)"):
        run("blobs_gc", "--older-than", "-1")
    assert Blob.objects.count() == 1


# --- blobs_verify -------------------------------------------------------------------------------------------


def test_verify_counts_bytes_as_it_decrypts(alice):
    # What the command's progress bar is fed: one large blob moves it segment by segment, not all at once.
    blob = make_blob(alice, pattern(5000))
    seen: list[int] = []
    assert blob_verify(blob=blob, on_bytes=seen.append).ok
    assert sum(seen) == 5000
    assert len(seen) > 1


def test_verify_a_typo_is_an_error_not_an_empty_success(alice):
    make_blob(alice, b"x")
    with pytest.raises(CommandError, match=r"No key provider 'bogus' \(KMS_PROVIDERS has: local\)"):
        run("blobs_verify", "--provider", "bogus")
    with pytest.raises(CommandError, match="key ref 'nope': nothing verified"):
        run("blobs_verify", "--key-ref", "nope")
    with pytest.raises(CommandError, match="--sample: must be at least 1"):
        run("blobs_verify", "--sample", "0")
    out, _err = run("blobs_verify", "--provider", "local")
    assert out.splitlines()[-1] == "total\t1\t0"


def test_export_never_renames_over_a_device_and_writes_through_a_symlink(blob, tmp_path):
    # The finished file is renamed onto the target: over /dev/stdout (a symlink to a pipe or terminal)
    # that would replace the device entry itself, so anything that is not a regular file is refused.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(CommandError, match="is not a regular file: use -o - for stdout"):
        run("blobs_export", str(blob.pk), "-o", str(fifo))
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    run("blobs_export", str(blob.pk), "-o", str(link))
    assert link.is_symlink()  # still the link ...
    assert real.read_bytes() == DATA  # ... to the file that now holds the export
