"""Flag evaluation and changes (docs/architecture.md §7). Views and the admin call these; nothing else writes
a flag.

Evaluation (``flag_decide`` / ``flag_is_enabled``) answers from a process-local snapshot of every flag row.
The snapshot is checked against a version stamp at most every ``VERSION_CHECK_SECONDS``: the stamp is a
counter in ``flags_flagstamp`` raised in the transaction of every change (``flags.receivers``) and
published, on commit, to the shared cache (Redis in production), so every worker and replica reloads within
seconds without a restart. Between checks an evaluation costs no query and no cache call; a per-process cache
(locmem) cannot be shared, so the stamp is then read from the database instead, once per interval. One
answer per request: it is kept on the request, so a download streaming for an hour keeps the answer it
started with.

Changes (``flag_update``, ``flag_set_stage``, ``flag_trip_kill_switch``, ``flag_reshuffle_salt``,
``flag_retire``) take a reason, check the version the caller read (optimistic locking: a concurrent save
raises ``FlagConflict`` and writes nothing) and append an audit event with old → new values and the actor
in the same transaction.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import caches
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record
from core.actors import Actor
from core.cache import is_shared_by_replicas

from .bucketing import BUCKETS
from .conf import flag_setting
from .evaluation import Decision, FlagSnapshot, decide
from .exceptions import FlagConflict, FlagError, FlagRetired, InvalidRollout, RetirementRefused
from .metrics import FLAG_EVALUATIONS, UNKNOWN
from .models import Flag, FlagStamp, new_salt
from .stages import BY_KEY, STAGES, Stage, skipped, stage_index

logger = logging.getLogger(__name__)

STAMP_KEY = "flags:stamp"
MEMO_ATTRIBUTE = "_flag_decisions"

# Injectable clock: the snapshot's re-check interval is measured with it.
clock: Callable[[], float] = time.monotonic

# --- evaluation ----------------------------------------------------------------------------------------


class _Snapshots:
    """Every flag row as an immutable snapshot, with the stamp it was loaded under."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.stamp: int | None = None
        self.checked = -math.inf
        self.flags: dict[str, FlagSnapshot] = {}
        self.config: tuple[frozenset[str], float] | None = None


_snapshots = _Snapshots()
# Test overrides (flags.testing.override_flag): name -> answer, consulted before anything else.
_overrides: dict[str, bool] = {}
_warned: set[str] = set()


def flag_cache_reset() -> None:
    """Forget the snapshot (and the settings read into it): the next evaluation reloads."""
    _snapshots.reset()


def _config() -> tuple[frozenset[str], float]:
    config = _snapshots.config
    if config is None:
        config = (frozenset(flag_setting("FORCED_OFF")), float(flag_setting("VERSION_CHECK_SECONDS")))
        _snapshots.config = config
    return config


def _stamp_cache() -> Any:
    cache = caches[flag_setting("VERSION_CACHE")]
    # A per-process cache would only ever hold this process's own changes, one machine's files (no Redis)
    # only that machine's, and Redis's process-local fallback while Redis is unavailable (core/cache.py)
    # this process's again: then the database answers, one small query per interval.
    return cache if is_shared_by_replicas(cache) else None


def _database_stamp() -> int:
    value = FlagStamp.objects.filter(pk=1).values_list("value", flat=True).first()
    return int(value or 0)


def current_stamp() -> int:
    cache = _stamp_cache()
    if cache is None:
        return _database_stamp()
    value = cache.get(STAMP_KEY)
    if value is None:
        value = _database_stamp()
        # add, not set: a change committed meanwhile has published a newer value, which must win.
        cache.add(STAMP_KEY, value, flag_setting("VERSION_CACHE_TIMEOUT"))
    return int(value)


def publish_stamp() -> None:
    """After a commit: tell every worker (through the shared cache) and this one that flags changed.

    Publishes the database's value as it is now, not the value this transaction wrote: callbacks of two
    quick changes may run out of order, and the later one must not go back to the older value."""
    _snapshots.checked = -math.inf
    cache = _stamp_cache()
    if cache is not None:
        cache.set(STAMP_KEY, _database_stamp(), flag_setting("VERSION_CACHE_TIMEOUT"))


def _load_snapshots() -> dict[str, FlagSnapshot]:
    user_model = get_user_model()
    flags = list(Flag.objects.select_related("internal_group", "beta_group"))
    group_ids = {g for flag in flags for g in (flag.internal_group_id, flag.beta_group_id) if g is not None}
    members = _members(group_ids)
    lists: dict[tuple[int, str], set[object]] = {}
    for attr in ("allow_users", "deny_users"):
        through = getattr(Flag, attr).through
        for flag_id, user_id in through.objects.values_list("flag_id", f"{user_model._meta.model_name}_id"):
            lists.setdefault((flag_id, attr), set()).add(user_id)
    return {
        flag.name: _snapshot_of(
            flag,
            internal=members.get(flag.internal_group_id or 0, set()),
            beta=members.get(flag.beta_group_id or 0, set()),
            allow=lists.get((flag.pk, "allow_users"), set()),
            deny=lists.get((flag.pk, "deny_users"), set()),
        )
        for flag in flags
    }


def _snapshot_of(
    flag: Flag,
    *,
    internal: Iterable[object],
    beta: Iterable[object],
    allow: Iterable[object],
    deny: Iterable[object],
) -> FlagSnapshot:
    return FlagSnapshot(
        name=flag.name,
        enabled=flag.enabled,
        kill_switch=flag.kill_switch,
        basis_points=flag.rollout_basis_points,
        salt=flag.salt,
        retired=flag.retired,
        beta_enabled=flag.beta_enabled,
        internal_group=flag.internal_group.name if flag.internal_group is not None else None,
        beta_group=flag.beta_group.name if flag.beta_group is not None else None,
        internal_members=frozenset(internal),
        beta_members=frozenset(beta),
        allow=frozenset(allow),
        deny=frozenset(deny),
    )


def _current_snapshots(interval: float) -> dict[str, FlagSnapshot]:
    state = _snapshots
    if clock() - state.checked < interval:
        return state.flags
    with state.lock:
        if clock() - state.checked >= interval:
            stamp = current_stamp()  # read before the rows: a change in between only causes a reload
            if stamp != state.stamp:
                state.flags = _load_snapshots()
                state.stamp = stamp
            state.checked = clock()
    return state.flags


def _user_id(user: Any) -> object | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


def flag_decide(name: str, user: Any, *, request: HttpRequest | Any = None) -> Decision:
    """The decision for ``user``; with ``request``, made once per request and kept on it."""
    memo: dict[str, Decision] | None = None
    if request is not None:
        target = getattr(request, "_request", request)  # a DRF Request wraps Django's
        memo = target.__dict__.get(MEMO_ATTRIBUTE)
        if memo is None:
            memo = target.__dict__[MEMO_ATTRIBUTE] = {}
        elif name in memo:
            return memo[name]
    if _overrides and name in _overrides:
        decision = Decision(_overrides[name], "override")
    else:
        forced_off, interval = _config()
        snapshot = _current_snapshots(interval).get(name)
        decision = decide(snapshot, _user_id(user), forced_off=name in forced_off)
        if snapshot is None and name not in _warned:
            _warned.add(name)  # once per name and process: a typo must not flood the log
            logger.warning("Flag %r does not exist: it is off for everyone (run migrate?).", name)
        if decision.reason != "retired":  # a retired flag is a constant: not even counted
            FLAG_EVALUATIONS.labels(
                flag=name if snapshot is not None else UNKNOWN, result="on" if decision.enabled else "off"
            ).inc()
    if memo is not None:
        memo[name] = decision
    return decision


def flag_is_enabled(name: str, user: Any, *, request: HttpRequest | Any = None) -> bool:
    """Whether flag ``name`` includes ``user`` (the decision order of docs/flags.md); see ``flag_decide``."""
    return flag_decide(name, user, request=request).enabled


def flag_explain(name: str, user: Any) -> Decision:
    """The decision for ``user`` with every step taken, from the database as it is now (not the cache)."""
    forced_off, _ = _config()
    snapshot = _load_snapshots().get(name)
    return decide(snapshot, _user_id(user), forced_off=name in forced_off, explain=True)


# --- the state of a flag, as the admin and the audit trail show it ------------------------------------------

SCALARS = ("description", "enabled", "kill_switch", "rollout_basis_points", "beta_enabled")
GROUPS = ("internal_group", "beta_group")
USER_LISTS = ("allow_users", "deny_users")
EDITABLE = (*SCALARS, *GROUPS, *USER_LISTS)


def flag_state(flag: Flag) -> dict[str, Any]:
    """The flag's editable values as JSON data: groups by name, users by username (sorted)."""
    username = get_user_model().USERNAME_FIELD
    state: dict[str, Any] = {name: getattr(flag, name) for name in SCALARS}
    for name in GROUPS:
        group = getattr(flag, name)
        state[name] = group.name if group is not None else None
    for name in USER_LISTS:
        state[name] = sorted(getattr(flag, name).values_list(username, flat=True)) if flag.pk else []
    return state


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"old": old[name], "new": new[name]} for name in old if old[name] != new[name]}


def _resolve(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` with group names and usernames turned into rows; unknown names are a ``FlagError``."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise FlagError(f"Not editable: {', '.join(sorted(unknown))}.")
    resolved = dict(changes)
    if "rollout_basis_points" in resolved:
        value = resolved["rollout_basis_points"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BUCKETS:
            raise InvalidRollout(f"The rollout must be 0–{BUCKETS} basis points (0–100 %), not {value!r}.")
    for name in GROUPS:
        if name in resolved and isinstance(resolved[name], str):
            try:
                resolved[name] = Group.objects.get(name=resolved[name])
            except Group.DoesNotExist:
                raise FlagError(f"No group named {resolved[name]!r}.") from None
    user_model = get_user_model()
    for name in USER_LISTS:
        if name in resolved:
            wanted = list(resolved[name])
            usernames = [u for u in wanted if isinstance(u, str)]
            users = list(user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": usernames}))
            missing = set(usernames) - {u.get_username() for u in users}
            if missing:
                raise FlagError(f"No such user(s): {', '.join(sorted(missing))}.")
            resolved[name] = users + [u for u in wanted if not isinstance(u, str)]
    return resolved


def _changed_by(actor_user: Any) -> Any:
    return actor_user if getattr(actor_user, "is_authenticated", False) else None


def _save_change(
    *,
    name: str,
    expected_version: int | None,
    changes: Mapping[str, Any],
    actor: Actor,
    reason: str,
    action: str,
    user: Any = None,
    request: HttpRequest | None = None,
    extra: Mapping[str, Any] | None = None,
    extra_fields: Mapping[str, Any] | None = None,
    allow_retired: bool = False,
) -> Flag:
    if not reason or not reason.strip():
        raise FlagError("A reason is required for every change.")
    resolved = _resolve(changes)
    with transaction.atomic():
        flag = (
            Flag.objects.select_for_update(of=("self",))
            .select_related("internal_group", "beta_group", "changed_by")
            .get(name=name)
        )
        if flag.retired and not allow_retired:
            raise FlagRetired()
        if expected_version is not None and flag.version != expected_version:
            raise FlagConflict(
                name=flag.name,
                expected=expected_version,
                current=flag.version,
                changed_by=flag.changed_by.get_username() if flag.changed_by is not None else "",
                changed_at=flag.changed_at,
            )
        old = flag_state(flag)
        old_fields = {key: getattr(flag, key) for key in (extra_fields or {})}
        for key, value in resolved.items():
            if key not in USER_LISTS:
                setattr(flag, key, value)
        for key, value in (extra_fields or {}).items():
            setattr(flag, key, value)
        new = dict(old)
        new.update({key: getattr(flag, key) for key in SCALARS})
        for key in GROUPS:
            new[key] = getattr(flag, key).name if getattr(flag, key) is not None else None
        for key in USER_LISTS:
            if key in resolved:
                new[key] = sorted(u.get_username() for u in resolved[key])
        diff = _diff(old, new)
        for key, value in (extra_fields or {}).items():
            if old_fields[key] != value:
                diff[key] = {"old": _jsonable(old_fields[key]), "new": _jsonable(value)}
        if not diff:
            return flag
        flag.version += 1
        flag.changed_by = _changed_by(user)
        flag.changed_at = timezone.now()
        flag.save()
        for key in USER_LISTS:
            if key in resolved and key in diff:
                getattr(flag, key).set(resolved[key])
        audit_record(
            action=action,
            actor=actor,
            target_type="flag",
            target_id=flag.name,
            details={"reason": reason.strip(), "version": flag.version, "changes": diff, **(extra or {})},
            request=request,
        )
    return flag


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def flag_update(
    *,
    name: str,
    expected_version: int | None,
    changes: Mapping[str, Any],
    actor: Actor,
    reason: str,
    user: Any = None,
    request: HttpRequest | None = None,
) -> Flag:
    """Apply ``changes`` (editable field → value; groups by name or row, users by username or row)."""
    return _save_change(
        name=name,
        expected_version=expected_version,
        changes=changes,
        actor=actor,
        reason=reason,
        action="flag.update",
        user=user,
        request=request,
    )


def stage_changes(stage: Stage) -> dict[str, Any]:
    """The values a stage sets: enabled, the beta group in or out, the percentage."""
    return {"enabled": True, "beta_enabled": stage.beta, "rollout_basis_points": stage.basis_points}


def flag_stage_index(flag: Flag) -> int:
    return stage_index(enabled=flag.enabled, beta=flag.beta_enabled, basis_points=flag.rollout_basis_points)


def flag_stage_skips(flag: Flag, changes: Mapping[str, Any]) -> tuple[Stage, ...]:
    """The stages a change would jump over (Internal → 100 % skips Beta, 25 % and 50 %)."""
    target = stage_index(
        enabled=changes.get("enabled", flag.enabled),
        beta=changes.get("beta_enabled", flag.beta_enabled),
        basis_points=changes.get("rollout_basis_points", flag.rollout_basis_points),
    )
    return skipped(current=flag_stage_index(flag), target=target)


def flag_set_stage(
    *,
    name: str,
    stage: str,
    expected_version: int | None,
    actor: Actor,
    reason: str,
    confirm_skip: bool = False,
    details: Mapping[str, Any] | None = None,
    user: Any = None,
    request: HttpRequest | None = None,
) -> Flag:
    """Move to one of the guide's stages. Jumping over stages needs ``confirm_skip``. ``details`` travel
    into the audit event (the rollout guard's metric values)."""
    if stage not in BY_KEY:
        raise FlagError(f"No stage {stage!r}; stages are {', '.join(s.key for s in STAGES)}.")
    target = BY_KEY[stage]
    changes = stage_changes(target)
    flag = Flag.objects.get(name=name)
    skips = flag_stage_skips(flag, changes)
    if skips and not confirm_skip:
        raise FlagError(
            f"Moving to {target.label} skips {', '.join(s.label for s in skips)}: confirm the skip."
        )
    return _save_change(
        name=name,
        expected_version=expected_version,
        changes=changes,
        actor=actor,
        reason=reason,
        action="flag.stage",
        user=user,
        request=request,
        extra={
            "stage": target.key,
            "skipped": [s.key for s in skips],
            **({"trigger": dict(details)} if details else {}),
        },
    )


def flag_trip_kill_switch(
    *,
    name: str,
    actor: Actor,
    reason: str,
    details: Mapping[str, Any] | None = None,
    user: Any = None,
    request: HttpRequest | None = None,
) -> Flag:
    """Switch the feature off for everyone, whatever version the caller saw (an emergency never loses to
    optimistic locking). ``details`` travel into the audit event (a guard's metric values). Idempotent:
    an already tripped switch records nothing."""
    return _save_change(
        name=name,
        expected_version=None,
        changes={"kill_switch": True},
        actor=actor,
        reason=reason,
        action="flag.kill_switch",
        user=user,
        request=request,
        extra={"trigger": dict(details)} if details else None,
    )


def flag_reshuffle_salt(
    *,
    name: str,
    expected_version: int | None,
    actor: Actor,
    reason: str,
    user: Any = None,
    request: HttpRequest | None = None,
) -> Flag:
    """Draw a new salt: a new, independent cohort at the same percentage."""
    return _save_change(
        name=name,
        expected_version=expected_version,
        changes={},
        actor=actor,
        reason=reason,
        action="flag.reshuffle",
        user=user,
        request=request,
        extra_fields={"salt": new_salt()},
    )


@dataclass(frozen=True)
class Retirement:
    eligible: bool
    detail: str
    eligible_at: datetime | None = None


def flag_retirement(flag: Flag, *, now: datetime | None = None) -> Retirement:
    """Whether ``flag`` may retire: at 100 %, enabled, no kill switch, unchanged for ``RETIRE_AFTER_DAYS``."""
    now = now or timezone.now()
    days = flag_setting("RETIRE_AFTER_DAYS")
    if flag.retired:
        return Retirement(False, "Already retired.")
    if not flag.enabled or flag.kill_switch or flag.rollout_basis_points != BUCKETS:
        return Retirement(False, "Only a flag enabled at 100 % with its kill switch off can retire.")
    since = flag.changed_at
    eligible_at = since + timedelta(days=days) if since else now
    if eligible_at > now:
        return Retirement(
            False,
            f"At 100 % since {since:%Y-%m-%d %H:%M} UTC; it may retire after {days} healthy days, "
            f"from {eligible_at:%Y-%m-%d %H:%M} UTC.",
            eligible_at,
        )
    return Retirement(True, f"At 100 % and unchanged for at least {days} days: it may retire.", eligible_at)


def flag_retire(
    *,
    name: str,
    expected_version: int | None,
    actor: Actor,
    reason: str,
    user: Any = None,
    request: HttpRequest | None = None,
    now: datetime | None = None,
) -> Flag:
    """Retire the flag: from now on the gate is a constant (on), evaluated no more. One-way."""
    now = now or timezone.now()
    status = flag_retirement(Flag.objects.get(name=name), now=now)
    if not status.eligible:
        raise RetirementRefused(status.detail)
    return _save_change(
        name=name,
        expected_version=expected_version,
        changes={},
        actor=actor,
        reason=reason,
        action="flag.retire",
        user=user,
        request=request,
        extra_fields={"retired": True, "retired_at": now},
    )


# --- selectors for the admin -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortPreview:
    enabled: int
    active: int
    before: int


def flag_cohort_preview(flag: Flag, changes: Mapping[str, Any]) -> CohortPreview:
    """How many active users the flag includes now, and would include with ``changes`` applied."""
    resolved = _resolve(changes)
    forced_off, _ = _config()
    current = _load_snapshots().get(flag.name)
    if current is None:
        raise FlagError(f"No flag named {flag.name!r}.")
    values = {key: value for key, value in resolved.items() if key not in USER_LISTS}
    proposed_groups = {key: values.get(key, getattr(flag, key)) for key in GROUPS}
    members = _members({g.pk for g in proposed_groups.values() if g is not None})
    internal, beta = proposed_groups["internal_group"], proposed_groups["beta_group"]
    proposed = FlagSnapshot(
        name=flag.name,
        enabled=values.get("enabled", flag.enabled),
        kill_switch=values.get("kill_switch", flag.kill_switch),
        basis_points=values.get("rollout_basis_points", flag.rollout_basis_points),
        salt=flag.salt,
        retired=flag.retired,
        beta_enabled=values.get("beta_enabled", flag.beta_enabled),
        internal_group=internal.name if internal else None,
        beta_group=beta.name if beta else None,
        internal_members=frozenset(members.get(internal.pk, ()) if internal else ()),
        beta_members=frozenset(members.get(beta.pk, ()) if beta else ()),
        allow=_ids(resolved["allow_users"]) if "allow_users" in resolved else current.allow,
        deny=_ids(resolved["deny_users"]) if "deny_users" in resolved else current.deny,
    )
    off = flag.name in forced_off
    active = enabled = before = 0
    for user_id in get_user_model().objects.filter(is_active=True).values_list("pk", flat=True).iterator():
        active += 1
        enabled += decide(proposed, user_id, forced_off=off).enabled
        before += decide(current, user_id, forced_off=off).enabled
    return CohortPreview(enabled=enabled, active=active, before=before)


def _ids(users: Iterable[Any]) -> frozenset[object]:
    return frozenset(user.pk for user in users)


def _members(group_ids: set[int]) -> dict[int, set[object]]:
    members: dict[int, set[object]] = {gid: set() for gid in group_ids}
    if group_ids:
        through = get_user_model().groups.through
        for user_id, group_id in through.objects.filter(group_id__in=group_ids).values_list(
            "user_id", "group_id"
        ):
            members[group_id].add(user_id)
    return members


def flag_history(flag: Flag) -> QuerySet[AuditEvent]:
    """The flag's audit events, newest first."""
    return AuditEvent.objects.filter(target_type="flag", target_id=flag.name).order_by("-sequence")
