"""JSON-lines export with a signed manifest, and checking an export on its own (architecture.md §8).

An export line is ``event_record`` of one event: the hashed fields plus ``hash``. The manifest (range,
count, first and last sequence and hash, the file's SHA-256) is signed with the checkpoint key, so an
export can be checked without the database. Both directions stream: an export of any size is written and
checked one line at a time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature

from core.actors import Actor

from . import clock
from .canonical import canonical_bytes
from .chain import Anchor, VerifyReport, format_timestamp, verify_chain
from .checkpoints import key_id, sign, signing_key, trusted_public_keys
from .models import AuditEvent
from .recording import audit_record, event_line


def audit_export(
    *, since: datetime | None, until: datetime | None, sink: Any, actor: Actor
) -> dict[str, Any]:
    """Write the events with ``since <= timestamp < until`` to ``sink`` (binary) as JSON lines, and return
    a manifest — range, count, first and last sequence and hash, the file's SHA-256 — signed like a
    checkpoint, so an export can be checked on its own: its lines chain from ``first_prev_hash``."""
    events = AuditEvent.objects.order_by("sequence")
    if since is not None:
        events = events.filter(timestamp__gte=since)
    if until is not None:
        events = events.filter(timestamp__lt=until)
    digest = hashlib.sha256()
    count = 0
    first: AuditEvent | None = None
    last: AuditEvent | None = None
    for event in events.iterator(chunk_size=2000):
        line = (event_line(event) + "\n").encode("utf-8")
        sink.write(line)
        digest.update(line)
        count += 1
        first = first or event
        last = event
    key = signing_key()
    payload = {
        "version": 1,
        "kind": "export",
        "since": format_timestamp(since) if since else None,
        "until": format_timestamp(until) if until else None,
        "count": count,
        "first_sequence": first.sequence if first else None,
        "last_sequence": last.sequence if last else None,
        "first_prev_hash": first.prev_hash if first else None,
        "first_hash": first.hash if first else None,
        "last_hash": last.hash if last else None,
        "sha256": digest.hexdigest(),
        "exported_at": format_timestamp(clock.now()),
        "key_id": key_id(key.public_key()),
    }
    manifest = {"payload": payload, "signature": sign(payload, key)}
    audit_record(
        action="audit.export",
        actor=actor,
        target_type="audit_event",
        details={
            name: payload[name]
            for name in ("since", "until", "count", "first_sequence", "last_sequence", "sha256")
        },
    )
    return manifest


def audit_export_verify(*, lines: Iterable[bytes], manifest: Mapping[str, Any]) -> VerifyReport:
    """Check an export on its own: the manifest's signature (a trusted key), the file's SHA-256 and
    count, and the chain inside it from ``first_prev_hash``.

    ``lines`` is read once, one line at a time (an open file will do), and no line is kept after the next
    one is read: memory stays flat however large the export. A file that differs from its manifest is
    reported as such even when its chain breaks first, as the whole file is always read.
    """
    keys = trusted_public_keys()
    payload = manifest.get("payload", {})
    public = keys.get(payload.get("key_id", ""))
    if public is None:
        return VerifyReport(ok=False, checked=0, reason="the manifest is signed by an unknown key")
    try:
        public.verify(base64.b64decode(manifest.get("signature", "")), canonical_bytes(payload))
    except (InvalidSignature, ValueError):
        return VerifyReport(ok=False, checked=0, reason="the manifest's signature does not verify")
    reader = _ExportReader(lines)
    first: dict[str, Any] | None = None
    report = VerifyReport(ok=True, checked=0)
    not_an_event: Exception | None = None
    try:
        first = next(reader, None)
        if first is not None:
            start = Anchor(sequence=first["sequence"], hash=first["hash"])
            report = verify_chain(itertools.chain([first], reader), start=start)
    except (KeyError, TypeError, ValueError) as exc:
        if reader.unreadable:
            raise  # a line that is not JSON is refused, whatever else is wrong
        # JSON but not an event: an edited file says so below; a file the manifest vouches for raises it.
        not_an_event = exc
    reader.drain()  # the chain stops at its first bad event; the digest and count need every line
    if (
        not hmac.compare_digest(reader.digest.hexdigest(), payload["sha256"])
        or reader.count != payload["count"]
    ):
        return VerifyReport(ok=False, checked=0, reason="the file differs from its manifest")
    if not_an_event is not None:
        raise not_an_event
    if first is None:
        return report
    if report.ok and first["prev_hash"] != payload["first_prev_hash"]:
        return VerifyReport(
            ok=False, checked=0, first_bad_sequence=first["sequence"], reason="the first link differs"
        )
    return report


class _ExportReader:
    """The events of an export, parsed one line at a time; every line read is hashed and counted."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = iter(lines)
        self.digest = hashlib.sha256()
        self.count = 0
        self.unreadable = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        line = next(self._lines)
        self.digest.update(line)
        self.count += 1
        try:
            event: dict[str, Any] = json.loads(line)
        except ValueError:
            self.unreadable = True
            raise
        return event

    def drain(self) -> None:
        for _ in self:
            pass
