"""The key provider's health for ``/ready`` (architecture.md §6): never a key-service call inline.

``/ready`` reads what this process last learned about the provider (``kms.status``): every call real traffic
makes is evidence, a failure counting at once. When nothing recent is known (no traffic for
``HEALTH_TTL_SECONDS`` after a success, ``FAILURE_TTL_SECONDS`` after a failure), the probe starts one
background round-trip (a daemon thread, one per alias at a time; a greenlet under the event worker) and
answers from what it has meanwhile. A hung KMS therefore costs a probe nothing, and a probe storm costs at
most one call in flight per alias and process, itself bounded by the provider's timeouts and the bulkhead.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import status
from .base import DATA_KEY_BYTES
from .conf import kms_setting
from .exceptions import KmsError
from .registry import get_provider
from .status import record_failure, record_success

__all__ = ["ProviderHealth", "provider_health", "record_failure", "record_success", "refreshing", "reset"]

FAILURE_TTL_SECONDS = 5.0
NOT_CHECKED = "not checked yet"
_lock = threading.Lock()
_refreshes: dict[str, threading.Thread] = {}  # alias -> its background round-trip in flight


@dataclass(frozen=True)
class ProviderHealth:
    alias: str
    ok: bool
    age_seconds: float | None  # None: nothing known yet
    detail: str


def round_trip(alias: str) -> str:
    """Wrap and unwrap a throwaway key; returns the key reference used. Raises KmsError."""
    provider = get_provider(alias)
    probe = secrets.token_bytes(DATA_KEY_BYTES)
    context = {"purpose": "health-check"}
    wrapped = provider.wrap(probe, context=context)
    if not hmac.compare_digest(provider.unwrap(wrapped, context=context), probe):
        raise KmsError("Round-trip returned a different key.", provider=alias)
    return wrapped.key_ref


def _refresh(alias: str, generation: int, clock: Callable[[], float]) -> None:
    try:
        round_trip(alias)
    except KmsError as exc:
        # kms.base already recorded a KeyUnavailable; a mismatched round trip is recorded here.
        status.record_if_current(
            alias,
            status.Observation(at=clock(), ok=False, detail=f"round-trip failed: {type(exc).__name__}"),
            generation_seen=generation,
        )
    finally:
        with _lock:
            _refreshes.pop(alias, None)


def _start_refresh(alias: str, clock: Callable[[], float]) -> None:
    with _lock:
        if alias in _refreshes:
            return  # single flight: one round-trip per alias and process at a time
        thread = _refreshes[alias] = threading.Thread(
            target=_refresh, args=(alias, status.generation(), clock), name=f"kms-health-{alias}", daemon=True
        )
    thread.start()


def refreshing(alias: str) -> threading.Thread | None:
    """The background round-trip in flight for ``alias``, if any (tests join it)."""
    with _lock:
        return _refreshes.get(alias)


def provider_health(alias: str, *, clock: Callable[[], float] = time.monotonic) -> ProviderHealth:
    """What is known about ``alias`` now; starts a background round-trip when that is stale. Never waits."""
    now = clock()
    seen = status.latest(alias)
    if seen is None:
        _start_refresh(alias, clock)
        return ProviderHealth(alias=alias, ok=False, age_seconds=None, detail=NOT_CHECKED)
    age = now - seen.at
    ttl = kms_setting("HEALTH_TTL_SECONDS") if seen.ok else FAILURE_TTL_SECONDS
    if age >= ttl:
        # Stale: answer with the last result (a hung refresh ends within the provider's deadline and then
        # records a failure) and check again in the background.
        _start_refresh(alias, clock)
    return ProviderHealth(alias=alias, ok=seen.ok, age_seconds=age, detail=seen.detail)


def reset() -> None:
    status.reset()
