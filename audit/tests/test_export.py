"""Export with a signed manifest, and checking an export on its own: line by line, in bounded memory, and
failing at the line where the chain breaks."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError
from django.db import connection

from audit import chain
from audit.chain import GENESIS, event_hash
from audit.checkpoints import key_id, sign, signing_key
from audit.export import audit_export, audit_export_verify
from audit.models import AuditEvent
from audit.triggers import statements
from core.actors import Actor

from .factories import YEAR, record, run

pytestmark = pytest.mark.django_db



def synthetic_lines(count: int, *, tamper: int | None = None) -> Iterator[bytes]:
    """``count`` export lines of a valid chain, made one at a time (not read from the database); with
    ``tamper``, that event's actor is changed after it was hashed."""
    prev = GENESIS
    for sequence in range(1, count + 1):
        event: dict[str, Any] = {
            "sequence": sequence,
            "timestamp": "2026-01-01T00:00:00.000000Z",
            "actor_type": "system",
            "actor_id": "",
            "actor": "system:test",
            "action": "test.event",
            "target_type": "thing",
            "target_id": str(sequence),
            "outcome": "success",
            "remote_addr": "",
            "request_id": "",
            "user_agent": "",
            "details": {"n": sequence, "note": "x" * 200},
            "prev_hash": prev,
        }
        event["hash"] = prev = event_hash(event)
        if sequence == tamper:
            event["actor"] = "mallory"
        yield (json.dumps(event, ensure_ascii=False, sort_keys=True) + "\n").encode()


def manifest_for(lines: Iterable[bytes]) -> dict[str, Any]:
    """The manifest ``audit_export`` would sign for these lines (it signs whatever it read)."""
    digest = hashlib.sha256()
    count = 0
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    for line in lines:
        digest.update(line)
        count += 1
        last = json.loads(line)
        first = first or last
    assert first is not None
    assert last is not None
    key = signing_key()
    payload = {
        "version": 1,
        "kind": "export",
        "since": None,
        "until": None,
        "count": count,
        "first_sequence": first["sequence"],
        "last_sequence": last["sequence"],
        "first_prev_hash": first["prev_hash"],
        "first_hash": first["hash"],
        "last_hash": last["hash"],
        "sha256": digest.hexdigest(),
        "exported_at": "2026-01-02T00:00:00.000000Z",
        "key_id": key_id(key.public_key()),
    }
    return {"payload": payload, "signature": sign(payload, key)}


def test_export_writes_json_lines_and_a_signed_manifest(tmp_path, history):
    target = tmp_path / "audit.jsonl"
    since = (history - 5 * YEAR - timedelta(days=1)).date().isoformat()
    out = run("audit_export", "--since", since, "-o", str(target))
    lines = target.read_bytes().splitlines(keepends=True)
    assert len(lines) == 8  # 5 old (5..1 years ago) + 3 recent
    assert out.startswith("8\t6-13\t")
    manifest = json.loads((tmp_path / "audit.jsonl.manifest.json").read_text())
    assert manifest["payload"]["first_sequence"] == 6
    assert manifest["payload"]["last_hash"] == AuditEvent.objects.get(sequence=13).hash
    assert audit_export_verify(lines=iter(lines), manifest=manifest).ok
    # The export itself is audited.
    assert AuditEvent.objects.order_by("-sequence").first().action == "audit.export"


def test_a_tampered_export_or_manifest_fails_its_check(tmp_path, history):
    sink = io.BytesIO()
    manifest = audit_export(since=None, until=None, sink=sink, actor=Actor.system("test"))
    lines = sink.getvalue().splitlines(keepends=True)
    edited = [lines[0].replace(b'"old.10"', b'"old.99"'), *lines[1:]]
    assert not audit_export_verify(lines=iter(edited), manifest=manifest).ok
    forged = {**manifest, "payload": {**manifest["payload"], "count": 1}}
    assert "signature" in audit_export_verify(lines=iter(lines), manifest=forged).reason


def test_export_rejects_a_reversed_range():
    with pytest.raises(CommandError, match="before --until"):
        run("audit_export", "--since", "2026-02-01", "--until", "2026-01-01")


def test_audit_verify_checks_an_export_file(tmp_path, history):
    target = tmp_path / "all.jsonl"
    run("audit_export", "-o", str(target))
    assert run("audit_verify", "--export", str(target)).startswith(f"ok: {target}: 13 events")
    lines = target.read_bytes().splitlines(keepends=True)
    target.write_bytes(b"".join([*lines[:5], *lines[6:]]))  # one event left out
    with pytest.raises(CommandError, match="does NOT verify"):
        run("audit_verify", "--export", str(target))


# --- streaming: the verifier never holds the export -----------------------------------------------------


def test_the_verifier_reads_no_further_than_it_has_checked(monkeypatch):
    """Fed by a generator that fails as soon as the verifier reads more than two lines beyond the events
    it has hashed: a verifier that collects the lines before walking the chain cannot pass."""
    count = 300
    manifest = manifest_for(synthetic_lines(count))
    hashed = 0
    real_event_hash = chain.event_hash

    def counting_event_hash(fields):
        nonlocal hashed
        hashed += 1
        return real_event_hash(fields)

    monkeypatch.setattr(chain, "event_hash", counting_event_hash)

    def lines() -> Iterator[bytes]:
        for read, line in enumerate(synthetic_lines(count)):
            if read - hashed > 2:
                raise AssertionError(f"line {read + 1} read with only {hashed} events checked")
            yield line

    report = audit_export_verify(lines=lines(), manifest=manifest)
    assert (report.ok, report.checked, report.last_sequence) == (True, count, count)
    assert hashed == count


def test_an_export_is_checked_in_flat_memory():
    """Python's allocations while checking 2,000 events: about 10 KiB streamed; about 4.8 MiB when the
    parsed events were collected first (2.4 KiB each, growing with the export). The bound is generous."""
    count = 2000
    lines = list(synthetic_lines(count))  # allocated before tracing starts: not counted
    manifest = manifest_for(lines)
    tracemalloc.start()
    try:
        report = audit_export_verify(lines=iter(lines), manifest=manifest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (report.ok, report.checked) == (True, count)
    assert peak < 1024 * 1024, f"peak {peak / 2**20:.2f} MiB"


def test_a_signed_export_of_a_tampered_chain_fails_at_that_event():
    # The manifest matches the file (the exporter signs what it read): only the chain can tell.
    manifest = manifest_for(synthetic_lines(50, tamper=37))
    report = audit_export_verify(lines=synthetic_lines(50, tamper=37), manifest=manifest)
    assert not report.ok
    assert report.first_bad_sequence == 37
    assert report.reason == "the event's content does not match its hash"
    assert (report.checked, report.last_sequence) == (36, 36)


def test_a_file_that_differs_from_its_manifest_says_so_though_its_chain_breaks_first():
    manifest = manifest_for(synthetic_lines(50))
    report = audit_export_verify(lines=synthetic_lines(50, tamper=3), manifest=manifest)
    assert (report.ok, report.reason) == (False, "the file differs from its manifest")
    # Lines after the break still count: one more line than the manifest says is a different file too.
    extra = [*synthetic_lines(50), *synthetic_lines(1)]
    assert audit_export_verify(lines=iter(extra), manifest=manifest).reason == (
        "the file differs from its manifest"
    )


def test_an_edited_line_that_is_json_but_no_event_is_a_file_that_differs():
    lines = list(synthetic_lines(5))
    manifest = manifest_for(lines)
    for edited in (b"{}\n", b"[]\n", b'{"sequence": "3"}\n'):
        report = audit_export_verify(lines=iter([*lines[:2], edited, *lines[3:]]), manifest=manifest)
        assert report.reason == "the file differs from its manifest", edited
    # Signed as it is (the exporter read it so), it is an error, not a verdict.
    signed = [*lines[:2], b"{}\n", *lines[3:]]
    with pytest.raises(KeyError):
        audit_export_verify(lines=iter(signed), manifest=manifest_for(signed))


def test_a_line_that_is_not_json_after_the_break_is_still_refused():
    # The command reports a ValueError as an export it cannot read.
    lines = [*synthetic_lines(5, tamper=2), b"not json\n"]
    with pytest.raises(json.JSONDecodeError):
        audit_export_verify(lines=iter(lines), manifest=manifest_for(synthetic_lines(5)))


def test_audit_verify_names_the_tampered_event_of_an_export(tmp_path):
    record(9)
    # Rows changed in the database before the export (the triggers dropped inside this test's transaction):
    # the export is signed as read, and verifying the file alone finds the changed event.
    with connection.cursor() as cursor:
        for statement in statements(connection.vendor, reverse=True):
            cursor.execute(statement)
        cursor.execute("UPDATE audit_auditevent SET actor = 'mallory' WHERE sequence = 7")
    target = tmp_path / "tampered.jsonl"
    run("audit_export", "-o", str(target))
    with pytest.raises(CommandError, match=r"does NOT verify at sequence 7: the event's content"):
        run("audit_verify", "--export", str(target))
