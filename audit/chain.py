"""The hash chain: pure hashing and verification, no Django (architecture.md §8).

Each event's hash is SHA-256 over the RFC 8785 canonical JSON of its stored fields, ``prev_hash`` (the
previous event's hash) and ``sequence`` included, so that changing, removing, inserting or reordering any
event breaks every later link. The first event links to ``GENESIS``; after a retention purge the oldest
remaining event is trusted through a signed anchor checkpoint instead (see ``verify_chain``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .canonical import canonical_bytes

GENESIS = "0" * 64

# The stored fields that are hashed, in no particular order (JCS sorts them). Adding a field is a new chain
# version: old events keep verifying with the field set they were written with.
HASHED_FIELDS = (
    "sequence",
    "timestamp",
    "actor_type",
    "actor_id",
    "actor",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "remote_addr",
    "request_id",
    "user_agent",
    "details",
    "prev_hash",
)


def format_timestamp(value: datetime) -> str:
    """UTC, microseconds, ``Z``: what SQLite and PostgreSQL both store exactly."""
    if value.tzinfo is None:
        raise ValueError("audit timestamps are timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_payload(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed form of an event: its fields with the timestamp formatted and the IP as text."""
    payload = {name: fields[name] for name in HASHED_FIELDS}
    if isinstance(payload["timestamp"], datetime):
        payload["timestamp"] = format_timestamp(payload["timestamp"])
    return payload


def event_hash(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(event_payload(fields))).hexdigest()


@dataclass(frozen=True)
class Anchor:
    """A trusted (signature-checked) point in the chain: the event ``sequence`` had ``hash``."""

    sequence: int
    hash: str


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    first_bad_sequence: int | None = None
    reason: str = ""
    last_sequence: int | None = None
    last_hash: str | None = None


def verify_chain(
    events: Iterable[Mapping[str, Any]],
    *,
    start: Anchor | None = None,
    checkpoints: Iterable[Anchor] = (),
) -> VerifyReport:
    """Walk ``events`` in sequence order and report the first sequence number that does not verify.

    Without ``start`` the first event must be sequence 1 linking to ``GENESIS``. With ``start`` the event at
    ``start.sequence`` must carry ``start.hash`` and the walk continues from it (earlier events, if any are
    passed, are skipped). Every checkpoint inside the walked range must match the event at its sequence; a
    checkpoint beyond the last event means events were removed from the end.
    """
    expected_points = {point.sequence: point.hash for point in checkpoints}
    prev_hash: str | None = GENESIS if start is None else None
    expected_sequence = 1 if start is None else start.sequence
    checked = 0
    last: Mapping[str, Any] | None = None
    for event in events:
        sequence = event["sequence"]
        if sequence < expected_sequence:
            continue
        if sequence != expected_sequence:
            return _bad(checked, expected_sequence, f"event {expected_sequence} is missing", last)
        if prev_hash is not None and not hmac.compare_digest(event["prev_hash"], prev_hash):
            return _bad(checked, sequence, "prev_hash does not link to the previous event", last)
        recomputed = event_hash(event)
        if not hmac.compare_digest(recomputed, event["hash"]):
            return _bad(checked, sequence, "the event's content does not match its hash", last)
        if (
            start is not None
            and sequence == start.sequence
            and not hmac.compare_digest(event["hash"], start.hash)
        ):
            return _bad(checked, sequence, "the event differs from the signed checkpoint", last)
        point = expected_points.get(sequence)
        if point is not None and not hmac.compare_digest(point, event["hash"]):
            return _bad(checked, sequence, "the event differs from a signed checkpoint", last)
        prev_hash = event["hash"]
        expected_sequence = sequence + 1
        checked += 1
        last = event
    if start is not None and checked == 0:
        return _bad(0, start.sequence, "the checkpoint's event is missing", None)
    beyond = [seq for seq in expected_points if seq >= expected_sequence]
    if beyond:
        return _bad(checked, expected_sequence, "events covered by a signed checkpoint are missing", last)
    return VerifyReport(
        ok=True,
        checked=checked,
        last_sequence=None if last is None else last["sequence"],
        last_hash=None if last is None else last["hash"],
    )


def _bad(checked: int, sequence: int, reason: str, last: Mapping[str, Any] | None) -> VerifyReport:
    return VerifyReport(
        ok=False,
        checked=checked,
        first_bad_sequence=sequence,
        reason=reason,
        last_sequence=None if last is None else last["sequence"],
        last_hash=None if last is None else last["hash"],
    )
