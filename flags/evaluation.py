"""The decision order (docs/architecture.md §7) over an immutable snapshot of a flag; no database access here.

kill switch (environment, then database) → disabled → deny → allow → internal → beta → bucket < basis points
→ off. A retired flag is a constant: on, with nothing evaluated. ``decide`` is the hot path; with
``explain=True`` it also records each step it took, for the admin's "explain" view — one implementation,
so the explanation cannot drift from the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .bucketing import bucket


@dataclass(frozen=True)
class FlagSnapshot:
    name: str
    enabled: bool
    kill_switch: bool
    basis_points: int
    salt: str
    retired: bool = False
    beta_enabled: bool = False
    internal_group: str | None = None
    beta_group: str | None = None
    internal_members: frozenset[object] = frozenset()
    beta_members: frozenset[object] = frozenset()
    allow: frozenset[object] = frozenset()
    deny: frozenset[object] = frozenset()


@dataclass(frozen=True)
class Step:
    check: str
    outcome: str
    #: The answer this step gave, or None if evaluation went on to the next step.
    decided: bool | None = None


# Reasons: the first two switch the feature off for everyone (503); the others answer for one user.
ENV_KILL_SWITCH = "env_kill_switch"
KILL_SWITCH = "kill_switch"
KILLED = frozenset({ENV_KILL_SWITCH, KILL_SWITCH})


@dataclass(frozen=True)
class Decision:
    enabled: bool
    reason: str
    steps: tuple[Step, ...] = field(default=(), compare=False)

    @property
    def killed(self) -> bool:
        return self.reason in KILLED


RETIRED_ON = Decision(True, "retired")


def decide(
    flag: FlagSnapshot | None,
    user_id: object | None,
    *,
    forced_off: bool = False,
    explain: bool = False,
) -> Decision:
    steps: list[Step] | None = [] if explain else None

    def done(enabled: bool, reason: str, check: str, outcome: str) -> Decision:
        if steps is None:
            return Decision(enabled, reason)
        steps.append(Step(check, outcome, enabled))
        return Decision(enabled, reason, tuple(steps))

    def passed(check: str, outcome: str) -> None:
        if steps is not None:
            steps.append(Step(check, outcome))

    if forced_off:
        return done(False, ENV_KILL_SWITCH, "environment kill switch", "set (FEATURE_…_ENABLED=false): off")
    passed("environment kill switch", "not set")
    if flag is None:
        return done(False, "unknown", "flag", "no such flag: off")
    if flag.retired:
        return RETIRED_ON if steps is None else done(True, "retired", "retired", "retired: on for everyone")
    if flag.kill_switch:
        return done(False, KILL_SWITCH, "kill switch", "on: off for everyone")
    passed("kill switch", "off")
    if not flag.enabled:
        return done(False, "disabled", "enabled", "the flag is disabled: off")
    passed("enabled", "yes")
    if user_id is None:
        return done(False, "anonymous", "user", "not signed in: off")
    if user_id in flag.deny:
        return done(False, "deny", "deny list", "listed: off")
    passed("deny list", "not listed")
    if user_id in flag.allow:
        return done(True, "allow", "allow list", "listed: on")
    passed("allow list", "not listed")
    if user_id in flag.internal_members:
        return done(True, "internal", "internal group", f"member of {flag.internal_group}: on")
    passed("internal group", f"not a member of {flag.internal_group}" if flag.internal_group else "none set")
    if flag.beta_enabled and user_id in flag.beta_members:
        return done(True, "beta", "beta group", f"member of {flag.beta_group}: on")
    if not flag.beta_enabled:
        passed("beta group", "not included at this stage")
    else:
        passed("beta group", f"not a member of {flag.beta_group}" if flag.beta_group else "none set")
    user_bucket = bucket(flag.salt, user_id)
    if user_bucket < flag.basis_points:
        return done(True, "bucket", "bucket", f"bucket {user_bucket} < {flag.basis_points}: on")
    passed("bucket", f"bucket {user_bucket} ≥ {flag.basis_points}")
    return done(False, "off", "result", "no rule includes the user: off")
