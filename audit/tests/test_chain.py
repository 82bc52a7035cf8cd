"""The hash chain's verification, on plain dicts (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from audit.chain import GENESIS, Anchor, event_hash, format_timestamp, verify_chain


def make_chain(count: int, *, start_sequence: int = 1, prev: str = GENESIS) -> list[dict]:
    events = []
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for offset in range(count):
        event = {
            "sequence": start_sequence + offset,
            "timestamp": base + timedelta(seconds=offset, microseconds=offset),
            "actor_type": "user",
            "actor_id": "7",
            "actor": "ann",
            "action": "blob.download.start",
            "target_type": "blob",
            "target_id": f"id-{offset}",
            "outcome": "success",
            "remote_addr": "192.0.2.1",
            "request_id": f"r{offset}",
            "user_agent": "test",
            "details": {"ranges": [[0, offset]], "n": offset / 3},
            "prev_hash": prev,
        }
        event["hash"] = event_hash(event)
        prev = event["hash"]
        events.append(event)
    return events


def test_an_intact_chain_verifies():
    events = make_chain(5)
    report = verify_chain(events)
    assert report.ok
    assert report.checked == 5
    assert report.last_sequence == 5
    assert report.last_hash == events[-1]["hash"]


def test_an_empty_chain_verifies():
    assert verify_chain([]).ok


def test_modified_event_is_reported_at_its_sequence():
    events = make_chain(5)
    events[2]["details"] = {"ranges": [[0, 99]]}
    report = verify_chain(events)
    assert not report.ok
    assert report.first_bad_sequence == 3


def test_modified_and_rehashed_event_breaks_the_next_link():
    events = make_chain(5)
    events[2]["actor"] = "mallory"
    events[2]["hash"] = event_hash(events[2])
    report = verify_chain(events)
    assert report.first_bad_sequence == 4


def test_deleted_event_is_reported_as_missing():
    events = make_chain(5)
    del events[1]
    report = verify_chain(events)
    assert report.first_bad_sequence == 2
    assert "missing" in report.reason


def test_reordered_events_are_detected():
    events = make_chain(5)
    events[1]["sequence"], events[2]["sequence"] = 3, 2
    events.sort(key=lambda e: e["sequence"])
    assert verify_chain(events).first_bad_sequence == 2


def test_a_rewritten_tail_is_caught_by_a_checkpoint():
    events = make_chain(5)
    checkpoint = Anchor(sequence=4, hash=events[3]["hash"])
    forged = make_chain(3, start_sequence=3, prev=events[1]["hash"])
    forged[0]["actor"] = "mallory"
    # Rehash the forgery into a self-consistent chain: only the checkpoint can tell.
    prev = events[1]["hash"]
    for event in forged:
        event["prev_hash"] = prev
        event["hash"] = event_hash(event)
        prev = event["hash"]
    tampered = events[:2] + forged
    assert verify_chain(tampered).ok
    report = verify_chain(tampered, checkpoints=[checkpoint])
    assert not report.ok
    assert report.first_bad_sequence == 4


def test_events_removed_from_the_end_are_caught_by_a_checkpoint():
    events = make_chain(5)
    report = verify_chain(events[:3], checkpoints=[Anchor(5, events[4]["hash"])])
    assert not report.ok
    assert report.first_bad_sequence == 4


def test_walk_from_an_anchor_after_a_purge():
    events = make_chain(6)
    anchor = Anchor(sequence=4, hash=events[3]["hash"])
    assert verify_chain(events[3:], start=anchor).ok
    assert verify_chain(events[3:]).first_bad_sequence == 1  # without the anchor: the start is missing
    wrong = Anchor(sequence=4, hash="f" * 64)
    assert verify_chain(events[3:], start=wrong).first_bad_sequence == 4


def test_timestamps_must_be_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2026, 1, 1))
    assert format_timestamp(datetime(2026, 1, 1, 1, 2, 3, 4, tzinfo=UTC)) == "2026-01-01T01:02:03.000004Z"
