"""The rollout guide's stages (Internal → Beta → 25 % → 50 % → 100 %), in one table; pure, no Django.

Each stage is a target state of a flag (who is included) plus how long it is held before the next one:
the guide's durations (days 1–2 of week 3 internal, days 3–5 beta, days 1–2 of week 4 at 25 %, days 3–4 at
50 %, days 5–7 at 100 %). After 100 % has been held healthy for the retirement period (7 days by default,
``FLAGS["RETIRE_AFTER_DAYS"]``) the flag may be retired. The hold times here are defaults; deployments
change them with ``FLAGS["STAGE_HOLD_HOURS"]`` (``flags.conf``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    #: The target state: the beta group included or not, and the percentage in basis points.
    beta: bool
    basis_points: int
    #: Default hold before advancing (the guide's duration), in hours.
    hold_hours: int
    criteria: str


STAGES: tuple[Stage, ...] = (
    Stage("internal", "Internal", False, 0, 48, "No errors; performance meets the SLAs."),
    Stage("beta", "Beta", True, 0, 72, "Error rate below 1 %; positive feedback."),
    Stage("25", "25 %", True, 2_500, 48, "Error rate below 1 %; no performance degradation."),
    Stage("50", "50 %", True, 5_000, 48, "Stable metrics; no incidents."),
    Stage("100", "100 %", True, 10_000, 72, "Full deployment successful."),
)
STAGE_KEYS = tuple(stage.key for stage in STAGES)
BY_KEY = {stage.key: stage for stage in STAGES}


def stage_index(*, enabled: bool, beta: bool, basis_points: int) -> int:
    """The furthest stage a state has reached: -1 when off, else an index into ``STAGES``.

    A state between two stages (say 10 %) counts as the lower one: moving from it to the next stage is
    not a skip.
    """
    if not enabled:
        return -1
    reached = 0
    for index, stage in enumerate(STAGES):
        if (beta or not stage.beta) and basis_points >= stage.basis_points:
            reached = index
    return reached


def skipped(*, current: int, target: int) -> tuple[Stage, ...]:
    """The stages a move from index ``current`` to ``target`` jumps over (none for one step or back)."""
    if target <= current + 1:
        return ()
    return STAGES[current + 1 : target]


def next_stage(index: int) -> Stage | None:
    return STAGES[index + 1] if index + 1 < len(STAGES) else None
