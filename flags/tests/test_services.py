"""Evaluation and changes: the decision order, one answer per request, no query once warm, changes seen
through the version stamp, and every change audited with old → new values."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.core.cache import caches
from django.test import RequestFactory
from django.utils import timezone
from prometheus_client import REGISTRY

from audit.models import AuditEvent
from core.actors import Actor
from flags import services
from flags.bucketing import in_rollout
from flags.exceptions import FlagConflict, FlagError, FlagRetired, InvalidRollout, RetirementRefused
from flags.models import SECURE_BLOB_STREAMING, Flag
from flags.services import (
    flag_cohort_preview,
    flag_decide,
    flag_explain,
    flag_is_enabled,
    flag_reshuffle_salt,
    flag_retire,
    flag_retirement,
    flag_set_stage,
    flag_trip_kill_switch,
    flag_update,
)
from flags.testing import override_flag
from flags.tests.factories import make_flag, make_user

pytestmark = pytest.mark.django_db

OPERATOR = Actor.system("test-operator")


@pytest.fixture(autouse=True)
def _fresh_snapshot():
    services.flag_cache_reset()
    yield
    services.flag_cache_reset()


def evaluations(flag: str, result: str) -> float:
    return REGISTRY.get_sample_value("flag_evaluations_total", {"flag": flag, "result": result}) or 0.0


# --- the decision order ---------------------------------------------------------------------------


def test_the_decision_order_from_kill_switch_to_bucket():
    internal = Group.objects.create(name="staff-internal")
    beta = Group.objects.create(name="beta-testers")
    flag = make_flag(internal_group=internal, beta_group=beta, beta_enabled=True, rollout_basis_points=0)
    denied = make_user(groups=("staff-internal",))
    allowed = make_user()
    insider = make_user(groups=("staff-internal",))
    tester = make_user(groups=("beta-testers",))
    nobody = make_user()
    flag.deny_users.add(denied)
    flag.allow_users.add(allowed)
    reasons = {
        u.username: flag_decide(flag.name, u).reason for u in (denied, allowed, insider, tester, nobody)
    }
    assert reasons == {
        denied.username: "deny",  # deny wins over the internal group
        allowed.username: "allow",
        insider.username: "internal",
        tester.username: "beta",
        nobody.username: "off",
    }
    flag_update(name=flag.name, expected_version=None, changes={"enabled": False}, actor=OPERATOR, reason="t")
    assert {flag_decide(flag.name, u).reason for u in (allowed, insider)} == {"disabled"}
    flag_update(
        name=flag.name,
        expected_version=None,
        changes={"enabled": True, "kill_switch": True},
        actor=OPERATOR,
        reason="t",
    )
    assert {flag_decide(flag.name, u).reason for u in (allowed, insider, nobody)} == {"kill_switch"}


def test_beta_members_wait_for_the_beta_stage():
    beta = Group.objects.create(name="beta-testers")
    flag = make_flag(beta_group=beta, beta_enabled=False)
    tester = make_user(groups=("beta-testers",))
    assert not flag_is_enabled(flag.name, tester)
    flag_set_stage(
        name=flag.name, stage="beta", expected_version=None, actor=OPERATOR, reason="beta", confirm_skip=True
    )
    assert flag_is_enabled(flag.name, tester)


def test_the_bucket_decides_the_rest_exactly_like_the_pure_core():
    flag = make_flag(rollout_basis_points=3_000)
    users = [make_user() for _ in range(60)]
    for user in users:
        assert flag_is_enabled(flag.name, user) == in_rollout(flag.salt, user.pk, 3_000)


def test_anonymous_and_unknown_flags_are_off(caplog):
    make_flag(rollout_basis_points=10_000)
    assert flag_decide("new_thing", AnonymousUser()).reason == "anonymous"
    assert flag_decide("no_such_flag", make_user()).reason == "unknown"
    flag_decide("no_such_flag", make_user())
    warnings = [r.getMessage() for r in caplog.records if "no_such_flag" in r.getMessage()]
    assert warnings == ["Flag 'no_such_flag' does not exist: it is off for everyone (run migrate?)."]


def test_the_environment_kill_switch_overrides_the_database(settings):
    user = make_user()
    assert flag_is_enabled(SECURE_BLOB_STREAMING, user)  # the migration's 100 %
    settings.FLAGS = {**settings.FLAGS, "FORCED_OFF": [SECURE_BLOB_STREAMING]}
    decision = flag_decide(SECURE_BLOB_STREAMING, user)
    assert (decision.enabled, decision.reason, decision.killed) == (False, "env_kill_switch", True)


def test_the_migration_keeps_everyone_in():
    flag = Flag.objects.get(name=SECURE_BLOB_STREAMING)
    assert (flag.enabled, flag.kill_switch, flag.rollout_basis_points) == (True, False, 10_000)
    assert all(flag_is_enabled(SECURE_BLOB_STREAMING, make_user()) for _ in range(20))


# --- per request, warm, and across changes -----------------------------------------------------------------


def test_one_answer_per_request_even_if_the_flag_changes_meanwhile():
    flag = make_flag(rollout_basis_points=10_000)
    user = make_user()
    request = RequestFactory().get("/")
    assert flag_is_enabled(flag.name, user, request=request)
    flag_trip_kill_switch(name=flag.name, actor=OPERATOR, reason="incident")
    assert flag_is_enabled(flag.name, user, request=request)  # a stream that started keeps its answer
    assert not flag_is_enabled(flag.name, user, request=RequestFactory().get("/"))  # the next request


def test_warm_evaluation_costs_no_query(django_assert_num_queries):
    flag = make_flag(rollout_basis_points=5_000)
    users = [make_user() for _ in range(5)]
    flag_is_enabled(flag.name, users[0])  # warm
    with django_assert_num_queries(0):
        for user in users * 20:
            flag_is_enabled(flag.name, user)
            flag_is_enabled(SECURE_BLOB_STREAMING, user, request=RequestFactory().get("/"))


def test_the_stamp_is_checked_at_most_once_per_interval(django_assert_num_queries, monkeypatch):
    flag = make_flag(rollout_basis_points=10_000)
    user = make_user()
    now = [1000.0]
    monkeypatch.setattr(services, "clock", lambda: now[0])
    flag_is_enabled(flag.name, user)
    now[0] += 0.5
    with django_assert_num_queries(0):
        flag_is_enabled(flag.name, user)
    now[0] += 0.6  # past one second: one look at the stamp, no reload while nothing changed
    with django_assert_num_queries(1):
        flag_is_enabled(flag.name, user)


def test_a_change_by_another_worker_is_seen_after_the_interval(monkeypatch):
    """Another worker's commit: the stamp row moves, this process's snapshot is stale until it looks."""
    flag = make_flag(rollout_basis_points=10_000)
    user = make_user()
    now = [1000.0]
    monkeypatch.setattr(services, "clock", lambda: now[0])
    assert flag_is_enabled(flag.name, user)
    # What another process does: write the row and raise the stamp (without this process's receivers).
    Flag.objects.filter(pk=flag.pk).update(kill_switch=True)
    from django.db.models import F

    from flags.models import FlagStamp

    FlagStamp.objects.filter(pk=1).update(value=F("value") + 1)
    assert flag_is_enabled(flag.name, user)  # within the interval: the snapshot still answers
    now[0] += 1.01
    assert not flag_is_enabled(flag.name, user)


def test_a_shared_cache_carries_the_stamp_without_database_queries(
    settings, tmp_path, django_assert_num_queries, monkeypatch, django_capture_on_commit_callbacks
):
    # A file-based cache is shared between processes on one machine, like Redis between replicas.
    settings.CACHES = {
        **settings.CACHES,
        "flags": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        },
    }
    settings.FLAGS = {**settings.FLAGS, "VERSION_CACHE": "flags"}
    flag = make_flag(rollout_basis_points=10_000)
    user = make_user()
    now = [1000.0]
    monkeypatch.setattr(services, "clock", lambda: now[0])
    assert flag_is_enabled(flag.name, user)
    now[0] += 2
    with django_assert_num_queries(0):  # the stamp comes from the cache now
        assert flag_is_enabled(flag.name, user)
    with django_capture_on_commit_callbacks(execute=True):
        flag_trip_kill_switch(name=flag.name, actor=OPERATOR, reason="incident")
    assert caches["flags"].get(services.STAMP_KEY) == services._database_stamp()
    now[0] += 2
    assert not flag_is_enabled(flag.name, user)


def test_group_membership_changes_reach_the_snapshot():
    internal = Group.objects.create(name="insiders")
    flag = make_flag(internal_group=internal)
    user = make_user()
    assert not flag_is_enabled(flag.name, user)
    user.groups.add(internal)
    assert flag_is_enabled(flag.name, user)


def test_evaluations_are_counted_by_flag_and_result_never_by_user():
    flag = make_flag(rollout_basis_points=10_000)
    before_on = evaluations(flag.name, "on")
    before_unknown = evaluations("_unknown", "off")
    request = RequestFactory().get("/")
    for _ in range(3):
        flag_is_enabled(flag.name, make_user(), request=request)  # memoized: counted once
    flag_is_enabled("typo_flag", make_user())
    assert evaluations(flag.name, "on") == before_on + 1
    assert evaluations("_unknown", "off") == before_unknown + 1
    labels = {
        sample.labels["flag"]
        for metric in REGISTRY.collect()
        if metric.name == "flag_evaluations"
        for sample in metric.samples
    }
    assert "typo_flag" not in labels


def test_explain_walks_the_same_order_and_agrees_with_the_answer():
    beta = Group.objects.create(name="beta-testers")
    flag = make_flag(beta_group=beta, beta_enabled=True, rollout_basis_points=4_000)
    for user in [make_user(groups=("beta-testers",)), *(make_user() for _ in range(20))]:
        explained = flag_explain(flag.name, user)
        assert explained.enabled == flag_is_enabled(flag.name, user)
        assert explained.steps[-1].decided == explained.enabled
        assert [s.check for s in explained.steps][:3] == ["environment kill switch", "kill switch", "enabled"]
    outsider = next(u for u in (make_user() for _ in range(100)) if not in_rollout(flag.salt, u.pk, 4_000))
    steps = flag_explain(flag.name, outsider).steps
    assert [s.check for s in steps] == [
        "environment kill switch",
        "kill switch",
        "enabled",
        "deny list",
        "allow list",
        "internal group",
        "beta group",
        "bucket",
        "result",
    ]


def test_override_flag_as_context_manager_and_decorator():
    user = make_user()
    with override_flag(SECURE_BLOB_STREAMING, active=False):
        assert not flag_is_enabled(SECURE_BLOB_STREAMING, user)
        with override_flag(SECURE_BLOB_STREAMING, active=True):
            assert flag_is_enabled(SECURE_BLOB_STREAMING, user)
        assert not flag_is_enabled(SECURE_BLOB_STREAMING, user)
    assert flag_is_enabled(SECURE_BLOB_STREAMING, user)

    @override_flag("never_created", active=True)
    def decorated():
        return flag_is_enabled("never_created", user)

    assert decorated()
    assert not flag_is_enabled("never_created", user)


# --- changes ------------------------------------------------------------------------------------------------


def test_a_change_is_one_audit_event_with_old_and_new_values_in_its_transaction():
    operator = make_user("olga")
    flag = make_flag(rollout_basis_points=100)
    make_user("vip")
    updated = flag_update(
        name=flag.name,
        expected_version=flag.version,
        changes={"rollout_basis_points": 2_500, "allow_users": ["vip"]},
        actor=Actor.for_user(operator),
        user=operator,
        reason="stage 3 per the plan",
    )
    assert updated.version == flag.version + 1
    assert updated.changed_by == operator
    event = AuditEvent.objects.get(action="flag.update")
    assert (event.actor, event.target_type, event.target_id) == ("olga", "flag", flag.name)
    assert event.details["reason"] == "stage 3 per the plan"
    assert event.details["changes"] == {
        "rollout_basis_points": {"old": 100, "new": 2_500},
        "allow_users": {"old": [], "new": ["vip"]},
    }


def test_no_change_writes_nothing():
    flag = make_flag(rollout_basis_points=100)
    flag_update(
        name=flag.name,
        expected_version=flag.version,
        changes={"rollout_basis_points": 100},
        actor=OPERATOR,
        reason="same",
    )
    assert not AuditEvent.objects.filter(action="flag.update").exists()
    assert Flag.objects.get(pk=flag.pk).version == flag.version


def test_the_second_of_two_saves_from_the_same_version_is_refused():
    flag = make_flag(rollout_basis_points=100)
    read = flag.version
    flag_update(
        name=flag.name,
        expected_version=read,
        changes={"rollout_basis_points": 2_500},
        actor=OPERATOR,
        reason="first",
    )
    with pytest.raises(FlagConflict, match="nothing was saved"):
        flag_update(
            name=flag.name,
            expected_version=read,
            changes={"rollout_basis_points": 500},
            actor=OPERATOR,
            reason="second",
        )
    assert Flag.objects.get(pk=flag.pk).rollout_basis_points == 2_500
    assert AuditEvent.objects.filter(action="flag.update").count() == 1


@pytest.mark.parametrize("value", [-1, 10_001, 25.5, "2500", True])
def test_rollouts_out_of_range_are_refused(value):
    flag = make_flag()
    with pytest.raises(InvalidRollout):
        flag_update(
            name=flag.name,
            expected_version=None,
            changes={"rollout_basis_points": value},
            actor=OPERATOR,
            reason="bad",
        )


def test_the_database_constraint_keeps_basis_points_in_range():
    from django.db import IntegrityError, transaction

    flag = make_flag()
    with pytest.raises(IntegrityError), transaction.atomic():
        Flag.objects.filter(pk=flag.pk).update(rollout_basis_points=10_001)


def test_a_reason_is_required():
    flag = make_flag()
    with pytest.raises(FlagError, match="reason"):
        flag_update(
            name=flag.name, expected_version=None, changes={"enabled": False}, actor=OPERATOR, reason=" "
        )


def test_stage_skips_need_confirmation():
    flag = make_flag()
    flag_set_stage(name=flag.name, stage="internal", expected_version=None, actor=OPERATOR, reason="start")
    with pytest.raises(FlagError, match="skips Beta, 25 %, 50 %"):
        flag_set_stage(name=flag.name, stage="100", expected_version=None, actor=OPERATOR, reason="go")
    flag = flag_set_stage(
        name=flag.name, stage="100", expected_version=None, actor=OPERATOR, reason="go", confirm_skip=True
    )
    assert flag.rollout_basis_points == 10_000
    event = AuditEvent.objects.filter(action="flag.stage").first()
    assert (event.details["stage"], event.details["skipped"]) == ("100", ["beta", "25", "50"])


def test_the_kill_switch_ignores_versions_and_records_the_trigger():
    flag = make_flag(rollout_basis_points=10_000)
    flag_trip_kill_switch(
        name=flag.name,
        actor=Actor.system("rollout-guard"),
        reason="download error rate above 5 %",
        details={"error_rate": 0.07},
    )
    event = AuditEvent.objects.get(action="flag.kill_switch")
    assert event.actor == "system:rollout-guard"
    assert event.details["trigger"] == {"error_rate": 0.07}
    assert event.details["changes"] == {"kill_switch": {"old": False, "new": True}}
    flag_trip_kill_switch(name=flag.name, actor=Actor.system("rollout-guard"), reason="again")
    assert AuditEvent.objects.filter(action="flag.kill_switch").count() == 1  # idempotent


def test_reshuffle_draws_a_new_salt_and_cohort_and_is_audited():
    flag = make_flag(rollout_basis_points=5_000)
    users = [make_user() for _ in range(40)]
    before = {u.pk for u in users if flag_is_enabled(flag.name, u)}
    new = flag_reshuffle_salt(name=flag.name, expected_version=flag.version, actor=OPERATOR, reason="skewed")
    assert new.salt != flag.salt
    after = {u.pk for u in users if flag_is_enabled(flag.name, u)}
    assert before != after
    event = AuditEvent.objects.get(action="flag.reshuffle")
    assert event.details["changes"]["salt"] == {"old": flag.salt, "new": new.salt}


def test_retirement_needs_100_percent_unchanged_for_the_configured_days(settings):
    settings.FLAGS = {**settings.FLAGS, "RETIRE_AFTER_DAYS": 7}
    flag = make_flag(rollout_basis_points=10_000, changed_at=timezone.now() - timedelta(days=6))
    assert not flag_retirement(flag).eligible
    with pytest.raises(RetirementRefused, match="may retire after 7 healthy days"):
        flag_retire(name=flag.name, expected_version=None, actor=OPERATOR, reason="done")
    Flag.objects.filter(pk=flag.pk).update(changed_at=timezone.now() - timedelta(days=8))
    flag_retire(name=flag.name, expected_version=None, actor=OPERATOR, reason="stable a week")
    user = make_user()
    assert flag_decide(flag.name, user).reason == "retired"
    with pytest.raises(FlagRetired):
        flag_trip_kill_switch(name=flag.name, actor=OPERATOR, reason="late")


def test_a_retired_flag_is_a_constant_that_is_not_counted():
    flag = make_flag(rollout_basis_points=10_000, retired=True, retired_at=timezone.now())
    before = evaluations(flag.name, "on")
    assert all(flag_is_enabled(flag.name, make_user()) for _ in range(5))
    assert evaluations(flag.name, "on") == before


def test_cohort_preview_counts_active_users_now_and_with_the_change():
    flag = make_flag(rollout_basis_points=0)
    users = [make_user() for _ in range(50)]
    make_user(is_active=False)
    preview = flag_cohort_preview(flag, {"rollout_basis_points": 5_000})
    assert preview.before == 0
    assert preview.active == 50  # the inactive user is not counted
    assert preview.enabled == sum(in_rollout(flag.salt, u.pk, 5_000) for u in users)


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_saves_from_one_version_let_exactly_one_through():
    """Real concurrency (two threads, two connections): the row lock makes the second see the new version."""
    import threading

    from django.db import connection

    if connection.vendor != "postgresql":
        # The SQLite test database lives in memory (shared cache), which fails a second writer with "table
        # is locked" instead of waiting; the product's file database queues writers (BEGIN IMMEDIATE).
        pytest.skip("needs PostgreSQL (CI runs the suite on it)")
    flag = make_flag("raced", rollout_basis_points=100)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def save(value: int) -> None:
        try:
            barrier.wait(timeout=10)
            flag_update(
                name="raced",
                expected_version=flag.version,
                changes={"rollout_basis_points": value},
                actor=OPERATOR,
                reason=f"to {value}",
            )
            outcomes.append("saved")
        except FlagConflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=save, args=(value,)) for value in (2_500, 5_000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["conflict", "saved"]
    assert Flag.objects.get(name="raced").version == flag.version + 1
    assert AuditEvent.objects.filter(action="flag.update", target_id="raced").count() == 1
