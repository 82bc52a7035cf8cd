"""The key provider's last successful round-trip, remembered per process (architecture.md §6 /ready).

A readiness probe must not call a KMS each time: every wrap/unwrap the application does counts as
evidence, and only when none is recent enough does a probe pay for one real round-trip. Failures are
remembered briefly too, so a probe storm against a dead KMS costs one call per interval. Probes that
arrive together while the result is stale wait for one round-trip (single-flight per alias) rather than
each making their own.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .base import DATA_KEY_BYTES
from .conf import kms_setting
from .exceptions import KmsError
from .registry import get_provider

FAILURE_TTL_SECONDS = 5.0
_lock = threading.Lock()
_results: dict[str, tuple[float, bool, str]] = {}  # alias -> (monotonic time, ok, message)
_flights: dict[str, threading.Lock] = {}  # alias -> held while one probe makes the round-trip


@dataclass(frozen=True)
class ProviderHealth:
    alias: str
    ok: bool
    age_seconds: float
    detail: str


def record_success(alias: str, *, clock: Callable[[], float] = time.monotonic) -> None:
    with _lock:
        _results[alias] = (clock(), True, "ok")


def round_trip(alias: str) -> str:
    """Wrap and unwrap a throwaway key; returns the key reference used. Raises KmsError."""
    provider = get_provider(alias)
    probe = secrets.token_bytes(DATA_KEY_BYTES)
    context = {"purpose": "health-check"}
    wrapped = provider.wrap(probe, context=context)
    if not hmac.compare_digest(provider.unwrap(wrapped, context=context), probe):
        raise KmsError("Round-trip returned a different key.", provider=alias)
    return wrapped.key_ref


def _fresh(alias: str, now: float) -> ProviderHealth | None:
    with _lock:
        cached = _results.get(alias)
    if cached is None:
        return None
    at, ok, detail = cached
    ttl = kms_setting("HEALTH_TTL_SECONDS") if ok else FAILURE_TTL_SECONDS
    if now - at < ttl:
        return ProviderHealth(alias=alias, ok=ok, age_seconds=now - at, detail=detail)
    return None


def provider_health(alias: str, *, clock: Callable[[], float] = time.monotonic) -> ProviderHealth:
    cached = _fresh(alias, clock())
    if cached is not None:
        return cached
    with _lock:
        flight = _flights.setdefault(alias, threading.Lock())
    with flight:
        # Another probe may have finished the round-trip while this one waited for the flight.
        cached = _fresh(alias, clock())
        if cached is not None:
            return cached
        try:
            round_trip(alias)
        except KmsError as exc:
            result = (clock(), False, str(exc))
        else:
            result = (clock(), True, "ok")
        with _lock:
            _results[alias] = result
    return ProviderHealth(alias=alias, ok=result[1], age_seconds=0.0, detail=result[2])


def reset() -> None:
    with _lock:
        _results.clear()
