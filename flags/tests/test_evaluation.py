"""The decision order over snapshots (pure): table-driven, and the explained path always agrees with the
hot path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flags.bucketing import in_rollout
from flags.evaluation import FlagSnapshot, decide

USER = 7
BASE = FlagSnapshot(name="f", enabled=True, kill_switch=False, basis_points=0, salt="s")


@pytest.mark.parametrize(
    ("changes", "forced_off", "user", "expected"),
    [
        ({}, True, USER, (False, "env_kill_switch")),
        ({"retired": True}, False, USER, (True, "retired")),
        ({"retired": True}, True, USER, (False, "env_kill_switch")),
        ({"kill_switch": True, "allow": frozenset({USER})}, False, USER, (False, "kill_switch")),
        ({"enabled": False, "allow": frozenset({USER})}, False, USER, (False, "disabled")),
        ({"basis_points": 10_000}, False, None, (False, "anonymous")),
        ({"deny": frozenset({USER}), "allow": frozenset({USER})}, False, USER, (False, "deny")),
        ({"allow": frozenset({USER}), "deny": frozenset({8})}, False, USER, (True, "allow")),
        ({"internal_members": frozenset({USER})}, False, USER, (True, "internal")),
        ({"beta_members": frozenset({USER})}, False, USER, (False, "off")),  # beta not included yet
        ({"beta_members": frozenset({USER}), "beta_enabled": True}, False, USER, (True, "beta")),
        ({"basis_points": 10_000}, False, USER, (True, "bucket")),
        ({}, False, USER, (False, "off")),
    ],
)
def test_the_first_rule_that_applies_decides(changes, forced_off, user, expected):
    import dataclasses

    decision = decide(dataclasses.replace(BASE, **changes), user, forced_off=forced_off)
    assert (decision.enabled, decision.reason) == expected


def test_an_unknown_flag_is_off():
    assert decide(None, USER).reason == "unknown"


ids = st.frozensets(st.integers(min_value=1, max_value=30), max_size=8)


@given(
    snapshot=st.builds(
        FlagSnapshot,
        name=st.just("f"),
        enabled=st.booleans(),
        kill_switch=st.booleans(),
        basis_points=st.integers(min_value=0, max_value=10_000),
        salt=st.text(max_size=8),
        retired=st.booleans(),
        beta_enabled=st.booleans(),
        internal_members=ids,
        beta_members=ids,
        allow=ids,
        deny=ids,
    ),
    user=st.one_of(st.none(), st.integers(min_value=1, max_value=30)),
    forced_off=st.booleans(),
)
def test_the_explanation_gives_the_same_answer_and_ends_on_it(snapshot, user, forced_off):
    quick = decide(snapshot, user, forced_off=forced_off)
    explained = decide(snapshot, user, forced_off=forced_off, explain=True)
    assert (explained.enabled, explained.reason) == (quick.enabled, quick.reason)
    assert explained.steps[-1].decided is explained.enabled
    assert all(step.decided is None for step in explained.steps[:-1])
    if quick.reason == "bucket" or quick.reason == "off":
        assert quick.enabled == in_rollout(snapshot.salt, user, snapshot.basis_points)
