"""kms.retry: bounded, jittered retries of transient failures only; every attempt counted (kms.metrics).

Clock, sleep and randomness are injected: nothing here waits.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from kms import retry
from kms.exceptions import KeyNotFound, KeyUnavailable, UnwrapFailed
from kms.tests.conftest import calls


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy(fake: FakeTime, *, rand: float = 1.0, **kwargs) -> retry.RetryPolicy:
    return retry.RetryPolicy(sleep=fake.sleep, clock=fake.clock, random=lambda: rand, **kwargs)


def failing(errors: list[BaseException], result: str = "ok"):
    attempts: list[int] = []

    def fn() -> str:
        attempts.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return fn, attempts


def transient() -> KeyUnavailable:
    return KeyUnavailable("throttled", provider="t", transient=True)


def test_transient_failures_are_retried_with_growing_jittered_backoff():
    fake = FakeTime()
    fn, attempts = failing([transient(), transient()])
    p = policy(fake, rand=0.5, base_delay=0.1, max_delay=1.0, max_attempts=3)
    before = calls("t-backoff", "wrap", "unavailable"), calls("t-backoff", "wrap", "success")
    assert retry.call(fn, provider="t-backoff", operation="wrap", policy=p) == "ok"
    assert len(attempts) == 3
    assert fake.sleeps == pytest.approx([0.05, 0.1])  # random() * min(cap, base * 2**(n-1))
    assert calls("t-backoff", "wrap", "unavailable") - before[0] == 2
    assert calls("t-backoff", "wrap", "success") - before[1] == 1


def test_backoff_is_capped():
    p = retry.RetryPolicy(base_delay=0.1, max_delay=0.3, random=lambda: 1.0)
    assert [p.backoff(n) for n in (1, 2, 3, 4, 10)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])


def test_full_jitter_can_be_zero():
    assert retry.RetryPolicy(random=lambda: 0.0).backoff(3) == 0.0


def test_gives_up_after_max_attempts_with_the_last_error():
    fake = FakeTime()
    errors = [transient() for _ in range(5)]
    last = errors[2]
    fn, attempts = failing(errors)
    with pytest.raises(KeyUnavailable) as info:
        retry.call(fn, provider="t-max", operation="unwrap", policy=policy(fake, max_attempts=3))
    assert info.value is last
    assert len(attempts) == 3
    assert len(fake.sleeps) == 2
    assert calls("t-max", "unwrap", "unavailable") == 3


def test_no_attempt_starts_after_the_deadline():
    fake = FakeTime()

    def slow_failure() -> str:
        fake.now += 4.0  # each attempt times out after 4 s
        raise transient()

    with pytest.raises(KeyUnavailable):
        retry.call(
            slow_failure,
            provider="t-deadline",
            operation="wrap",
            policy=policy(fake, max_attempts=10, deadline=9.0, base_delay=0.5, max_delay=0.5),
        )
    # Attempt 1 (4 s), sleep 0.5, attempt 2 (to 8.5 s); a third would start at 9.0 s, the deadline: none.
    assert calls("t-deadline", "wrap") == 2


@pytest.mark.parametrize(
    "error",
    [
        KeyUnavailable("access denied", provider="t"),  # not transient
        KeyNotFound("gone", provider="t"),
        UnwrapFailed("wrong blob", provider="t"),
    ],
    ids=["access-denied", "not-found", "unwrap-failed"],
)
def test_permanent_failures_are_not_retried(error):
    fake = FakeTime()
    fn, attempts = failing([error])
    alias = f"t-perm-{type(error).__name__}"
    with pytest.raises(type(error)):
        retry.call(fn, provider=alias, operation="unwrap", policy=policy(fake))
    assert len(attempts) == 1
    assert fake.sleeps == []
    assert calls(alias, "unwrap") == 1


def test_a_bug_propagates_at_once_counted_as_error():
    fake = FakeTime()
    fn, attempts = failing([ZeroDivisionError()])
    with pytest.raises(ZeroDivisionError):
        retry.call(fn, provider="t-bug", operation="wrap", policy=policy(fake))
    assert len(attempts) == 1
    assert calls("t-bug", "wrap", "error") == 1


def test_durations_are_observed_per_attempt():
    from prometheus_client import REGISTRY

    fake = FakeTime()

    def takes_a_while() -> str:
        fake.now += 0.2
        return "ok"

    retry.call(takes_a_while, provider="t-duration", operation="wrap", policy=policy(fake))
    labels = {"provider": "t-duration", "operation": "wrap"}
    assert REGISTRY.get_sample_value("kms_call_duration_seconds_count", labels) == 1
    assert REGISTRY.get_sample_value("kms_call_duration_seconds_sum", labels) == pytest.approx(0.2)


def test_remote_settings_defaults_and_overrides():
    timeouts, p = retry.remote_settings("aws", {})
    assert (timeouts.connect, timeouts.read, p.max_attempts) == (2.0, 5.0, 3)
    timeouts, p = retry.remote_settings(
        "aws", {"connect_timeout": 0.5, "read_timeout": 1, "max_attempts": 1, "retry_deadline": 3}
    )
    assert (timeouts.connect, timeouts.read, p.max_attempts, p.deadline) == (0.5, 1.0, 1, 3.0)


@pytest.mark.parametrize(
    "options",
    [
        {"connect_timeout": 0},
        {"read_timeout": "5"},
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"read_timeout": True},
    ],
)
def test_remote_settings_refuse_nonsense(options):
    with pytest.raises(ImproperlyConfigured, match=r"KMS_PROVIDERS\['aws'\]"):
        retry.remote_settings("aws", options)


def test_local_provider_calls_are_counted_too(settings):
    import os

    from kms.registry import get_provider

    provider = get_provider("local")
    before_wrap, before_unwrap = calls("local", "wrap", "success"), calls("local", "unwrap", "success")
    wrapped = provider.wrap(os.urandom(32), context={"blob_id": "x"})
    provider.unwrap(wrapped, context={"blob_id": "x"})
    assert calls("local", "wrap", "success") - before_wrap == 1
    assert calls("local", "unwrap", "success") - before_unwrap == 1
