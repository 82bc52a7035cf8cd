"""Checking the chain in the database, and pinning a checked chain by a signed checkpoint (architecture §8).

``audit_checkpoint`` lives here rather than in ``checkpoints.py`` (the signed documents, their key and
their storage) because it verifies first: ``checkpoints.py`` stays below this module, with no cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from core.actors import Actor

from .chain import HASHED_FIELDS, Anchor, VerifyReport, format_timestamp, verify_chain
from .checkpoints import ANCHOR, CHECKPOINT, Checkpoint, load_checkpoints, write_checkpoint
from .conf import audit_setting
from .cursor import Cursor, load_cursor, save_cursor
from .exceptions import CheckpointError
from .models import AuditEvent
from .recording import audit_record

CURSOR = "verification cursor"  # the kind shown for a start that is the signed cursor, not a checkpoint


@dataclass(frozen=True)
class ChainStatus:
    """What a check found: the chain report plus the checkpoints it relied on or rejected, and the signed
    verification cursor (audit/cursor.py) with the rolling check's window when ``audit_verify`` ran one."""

    report: VerifyReport
    start: Checkpoint | None
    checkpoints: int
    rejected: tuple[str, ...]
    cursor: Cursor | None = None
    window: VerifyReport | None = None
    window_range: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.report.ok and (self.window is None or self.window.ok)

    @property
    def failure(self) -> VerifyReport:
        """The report that failed (the incremental check's first), else the incremental report."""
        if not self.report.ok or self.window is None:
            return self.report
        return self.window if not self.window.ok else self.report


def _chain_values(start_sequence: int, stop_sequence: int | None = None) -> Iterator[dict[str, Any]]:
    rows = AuditEvent.objects.filter(sequence__gte=start_sequence)
    if stop_sequence is not None:
        rows = rows.filter(sequence__lte=stop_sequence)
    return rows.order_by("sequence").values(*HASHED_FIELDS, "hash").iterator(chunk_size=2000)


def _bounds() -> tuple[int | None, int]:
    """The oldest and the newest sequence number (None, 0 for an empty log)."""
    first = AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True).first()
    newest = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
    return first, newest


def _base(trusted: list[Checkpoint], first: int | None) -> tuple[Checkpoint | None, VerifyReport | None]:
    """Where the contiguous chain begins: sequence 1 (None), or after a purge the newest signed anchor; a
    failed report when events before the oldest are missing and no anchor accounts for them."""
    if first is None or first == 1:
        return None, None
    # After a purge the contiguous chain resumes at the newest anchor; events below it that a legal hold kept
    # are islands, each still carrying its own hash, and are not walked.
    anchors = [p for p in trusted if p.kind == ANCHOR and p.sequence >= first]
    if not anchors:
        return None, VerifyReport(
            ok=False,
            checked=0,
            first_bad_sequence=1,
            reason="events before the oldest are missing and no signed anchor accounts for them",
        )
    return anchors[-1], None


def _cursor_point(cursor: Cursor) -> Checkpoint:
    # The cursor is a signed start like a checkpoint (HMAC under the server secret, not Ed25519).
    return Checkpoint(
        kind=CURSOR, sequence=cursor.sequence, hash=cursor.hash, time=cursor.checked_at, key_id=""
    )


def audit_chain_status(*, full: bool = False) -> ChainStatus:
    """Recompute the chain from the newest trusted start — the last signed checkpoint or the signed
    verification cursor, whichever is newer — or with ``full`` from the oldest event (sequence 1, or the
    anchor a purge left). Every trusted checkpoint in the walked range must match; a checkpoint beyond the
    newest event means events were removed from the end.

    Cheap and read-only (the admin's status): older history is covered by ``audit_verify``'s rolling check,
    whose last finding is in the cursor, so a break it found stays reported here until a run passes."""
    cursor, problem = (None, None) if full else load_cursor()
    if cursor is not None and cursor.broken is not None:
        trusted, rejected = load_checkpoints()
        report = VerifyReport(
            ok=False,
            checked=0,
            first_bad_sequence=cursor.broken["sequence"],
            reason=f"{cursor.broken['reason']} (found by audit_verify at {cursor.checked_at})",
        )
        return ChainStatus(report, None, len(trusted), tuple(rejected), cursor)
    return _chain_status(full=full, cursor=cursor, problem=problem)


def _chain_status(*, full: bool, cursor: Cursor | None, problem: str | None) -> ChainStatus:
    trusted, rejected = load_checkpoints()
    if problem:
        rejected = [*rejected, problem]
    first, newest = _bounds()
    start: Checkpoint | None = None
    candidates = (
        [] if full else [*trusted[-1:], *([_cursor_point(cursor)] if cursor and cursor.sequence else [])]
    )
    if candidates:
        start = max(candidates, key=lambda p: p.sequence)
    else:
        start, failed = _base(trusted, first)
        if failed is not None:
            return ChainStatus(failed, None, len(trusted), tuple(rejected), cursor)
    if start is not None and start.sequence > newest:
        report = VerifyReport(
            ok=False,
            checked=0,
            first_bad_sequence=newest + 1,
            reason=f"events up to signed {start.kind} #{start.sequence} are missing",
        )
        return ChainStatus(report, start, len(trusted), tuple(rejected), cursor)
    report = verify_chain(
        _chain_values(start.sequence if start else 1),
        start=start.anchor if start else None,
        checkpoints=[p.anchor for p in trusted if start is None or p.sequence >= start.sequence],
    )
    if start is not None and start.kind == CURSOR and report.first_bad_sequence == start.sequence:
        report = replace(
            report, reason=report.reason.replace("signed checkpoint", "signed verification cursor")
        )
    return ChainStatus(report, start, len(trusted), tuple(rejected), cursor)


def _rolling_window(
    cursor: Cursor | None, trusted: list[Checkpoint], first: int | None, newest: int
) -> tuple[VerifyReport, int, int, bool, bool]:
    """Re-verify the next window of the whole chain: 1/``VERIFY_ROLLING_RUNS`` of it, from where the last
    run stopped, so that every event is checked again every N runs whatever the checkpoints and the cursor
    say (an in-place edit behind them is found by the first pass that begins after it: within 2N runs).

    Consecutive windows share one event, so every link is checked. A window's first event is trusted for its
    hash only as far as its content is recomputed; the link into it was checked by the window before.
    Returns the report, the window's first and last sequence, whether it reached the newest event and
    whether it began a pass (at the chain's first event)."""
    base, failed = _base(trusted, first)
    if failed is not None:
        return failed, 1, 1, False, False
    base_sequence = base.sequence if base else 1
    begin = cursor.window_next if cursor else base_sequence
    if begin < base_sequence or begin >= newest:
        begin = base_sequence
    # The rest of the pass is shared among the runs it has left, recomputed each run: the log grows meanwhile,
    # and the pass still ends within N runs (the last one takes whatever remains).
    done = 0 if begin == base_sequence or cursor is None else cursor.pass_runs
    runs_left = max(1, int(audit_setting("VERIFY_ROLLING_RUNS")) - done)
    size = max(1, -(-(newest - begin) // runs_left))
    end = min(begin + size, newest)
    if begin == 1:
        start: Anchor | None = None  # sequence 1 must link to GENESIS
    elif base is not None and begin == base.sequence:
        start = base.anchor
    else:
        stored = AuditEvent.objects.filter(sequence=begin).values_list("hash", flat=True).first()
        if stored is None:
            report = VerifyReport(
                ok=False, checked=0, first_bad_sequence=begin, reason=f"event {begin} is missing"
            )
            return report, begin, end, False, False
        start = Anchor(sequence=begin, hash=stored)
    report = verify_chain(
        _chain_values(begin, end),
        start=start,
        checkpoints=[p.anchor for p in trusted if begin <= p.sequence <= end],
    )
    return report, begin, end, end >= newest, begin == base_sequence


def audit_verify(
    *, full: bool = False, actor: Actor, now: Callable[[], datetime] = timezone.now
) -> ChainStatus:
    """One verification run (``manage.py audit_verify``, a CronJob): the chain from the newest trusted start
    to the newest event, plus the rolling check's next window of older history (``full``: the whole chain
    instead). Writes the new signed cursor and the ``audit.verify`` event in one transaction; a run that
    finds a break keeps the cursor where it was and records the break in it, so the admin shows it and the
    next run checks the same events again."""
    started = format_timestamp(now())
    previous, problem = load_cursor()
    # A break the last run found is not taken on trust: this run looks again from the same start.
    resume = None if previous is None else replace(previous, broken=None)
    status = _chain_status(full=full, cursor=None if full else resume, problem=problem)
    trusted, _ = load_checkpoints()
    first, newest = _bounds()
    window: VerifyReport | None = None
    window_range: tuple[int, int] | None = None
    completed = fresh = False
    if not full and newest:
        window, begin, end, completed, fresh = _rolling_window(previous, trusted, first, newest)
        window_range = (begin, end)
    status = replace(status, window=window, window_range=window_range)
    finished = format_timestamp(now())
    cursor = _next_cursor(
        previous, status, full=full, completed=completed, fresh=fresh, started=started, finished=finished
    )
    status = replace(status, cursor=cursor)
    failure = status.failure
    with transaction.atomic():
        save_cursor(cursor)
        audit_record(
            action="audit.verify",
            actor=actor,
            outcome="success" if status.ok else "error",
            details={
                "full": full,
                "from": status.start.sequence if status.start else 1,
                "checked": status.report.checked,
                "window": None if window_range is None else {"from": window_range[0], "to": window_range[1]},
                "full_pass_completed": full or completed,
                "first_bad_sequence": failure.first_bad_sequence,
                "reason": failure.reason,
                "rejected_checkpoints": len(status.rejected),
            },
        )
    return status


def _next_cursor(
    previous: Cursor | None,
    status: ChainStatus,
    *,
    full: bool,
    completed: bool,
    fresh: bool,
    started: str,
    finished: str,
) -> Cursor:
    runs = (previous.runs if previous else 0) + 1
    if not status.ok:
        failure = status.failure
        broken = {"sequence": failure.first_bad_sequence, "reason": failure.reason}
        if previous is None:
            return Cursor(0, "", 1, started, None, None, runs, finished, broken)
        return replace(previous, runs=runs, checked_at=finished, broken=broken)
    report = status.report
    sequence, digest = report.last_sequence or 0, report.last_hash or ""
    if not sequence and previous is not None:  # nothing new was walked: keep the point already verified
        sequence, digest = previous.sequence, previous.hash
    pass_started = previous.pass_started if previous else started
    full_started = previous.full_started if previous else None
    full_finished = previous.full_finished if previous else None
    window_next = previous.window_next if previous else 1
    pass_runs = previous.pass_runs if previous else 0
    if status.window_range is not None:
        end = status.window_range[1]
        if fresh:
            pass_started, pass_runs = started, 0  # a new pass begins with this window
        pass_runs += 1
        if completed:
            full_started, full_finished, window_next, pass_runs = pass_started, finished, 1, 0
        else:
            window_next = end  # the next window starts on this one's last event: every link is checked
    if full:
        full_started, full_finished = started, finished
    return Cursor(
        sequence,
        digest,
        window_next,
        pass_started,
        full_started,
        full_finished,
        runs,
        finished,
        None,
        pass_runs,
    )


def audit_checkpoint(*, kind: str = CHECKPOINT, actor: Actor) -> Checkpoint:
    """Sign the newest event — after checking the chain up to it, so a forged chain is never signed."""
    status = audit_chain_status()
    if not status.ok:
        raise CheckpointError(
            f"The chain does not verify at sequence {status.report.first_bad_sequence} "
            f"({status.report.reason}); no checkpoint written."
        )
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    if last is None:
        raise CheckpointError("The audit log is empty; nothing to checkpoint.")
    point = write_checkpoint(kind=kind, sequence=last[0], hash=last[1], now=timezone.now())
    audit_record(
        action=f"audit.{kind}",
        actor=actor,
        target_type="audit_event",
        target_id=str(point.sequence),
        details={"hash": point.hash, "name": point.name, "key_id": point.key_id},
    )
    return point
