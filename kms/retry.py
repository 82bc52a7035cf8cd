"""One retry and timeout policy for every key provider, and the one wrapper every provider call goes through.

SDK defaults are far too patient for a download path (botocore retries with backoff and a 60 s read
timeout, azure-core's RetryPolicy, google api_core's Retry with a 600 s deadline, requests without a
timeout): a KMS outage would hold request threads for minutes. Providers switch those off and use this
instead: short connect/read timeouts, a few attempts with full-jitter exponential backoff ("Exponential
Backoff And Jitter", AWS Architecture Blog, 2015), and an overall deadline after which no new attempt starts.

Only transient failures are retried: the provider translates each SDK error into a ``kms.exceptions`` type
inside the attempt, and only ``KeyUnavailable(transient=True)`` (throttling, 5xx, timeouts, connection
errors) earns another attempt. Access denied, a missing key or a wrapped key that does not authenticate
would fail the same way again. Every attempt is counted in ``kms_calls_total`` (kms.metrics).

Clock, sleep and randomness are injectable so tests can drive the policy without waiting.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

from .exceptions import KeyUnavailable
from .metrics import record_call, status_of

T = TypeVar("T")

#: Options every remote provider accepts in ``KMS_PROVIDERS[alias]["OPTIONS"]`` (see ``remote_settings``).
REMOTE_OPTIONS = frozenset({"connect_timeout", "read_timeout", "max_attempts", "retry_deadline"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one provider operation is attempted."""

    max_attempts: int = 3
    base_delay: float = 0.05  # first backoff cap, seconds; doubles per retry
    max_delay: float = 1.0  # backoff cap, seconds
    deadline: float = 10.0  # no new attempt starts this long after the first one began
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    random: Callable[[], float] = field(default=random.random, repr=False)

    def backoff(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(retry-1))) before retry ``retry``."""
        return float(self.random() * min(self.max_delay, self.base_delay * 2 ** (retry - 1)))


#: The local provider does no I/O worth retrying.
SINGLE_ATTEMPT = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 2.0  # seconds to establish a connection (TCP + TLS)
    read: float = 5.0  # seconds to wait for a response once connected


def remote_settings(alias: str, options: Mapping[str, Any]) -> tuple[Timeouts, RetryPolicy]:
    """Timeouts and retry policy from a remote provider's ``REMOTE_OPTIONS``, validated."""

    def number(name: str, default: float, *, minimum: float) -> float:
        value = options.get(name, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise ImproperlyConfigured(
                f"KMS_PROVIDERS[{alias!r}]: {name}={value!r} must be a number >= {minimum}."
            )
        return float(value)

    timeouts = Timeouts(
        connect=number("connect_timeout", Timeouts.connect, minimum=0.001),
        read=number("read_timeout", Timeouts.read, minimum=0.001),
    )
    attempts = number("max_attempts", RetryPolicy.max_attempts, minimum=1)
    if attempts != int(attempts):
        raise ImproperlyConfigured(f"KMS_PROVIDERS[{alias!r}]: max_attempts must be a whole number.")
    policy = RetryPolicy(
        max_attempts=int(attempts),
        deadline=number("retry_deadline", RetryPolicy.deadline, minimum=0),
    )
    return timeouts, policy


def call(fn: Callable[[], T], *, provider: str, operation: str, policy: RetryPolicy) -> T:
    """Run ``fn`` under ``policy``, counting each attempt; return its result or raise its last error.

    ``fn`` must raise only ``kms.exceptions`` types for failures it understands (anything else is a bug
    and propagates at once, counted as ``error``).
    """
    started = policy.clock()
    attempt = 0
    while True:
        attempt += 1
        begun = policy.clock()
        try:
            result = fn()
        except BaseException as exc:
            record_call(
                provider=provider, operation=operation, status=status_of(exc), seconds=policy.clock() - begun
            )
            if not (isinstance(exc, KeyUnavailable) and exc.transient) or attempt >= policy.max_attempts:
                raise
            delay = policy.backoff(attempt)
            if policy.clock() - started + delay >= policy.deadline:
                raise
            policy.sleep(delay)
        else:
            record_call(
                provider=provider, operation=operation, status="success", seconds=policy.clock() - begun
            )
            return result
