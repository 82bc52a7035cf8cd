"""What this process last learned about each key provider (architecture.md §6 /ready), from any call.

Every wrap/unwrap/rewrap a request makes is evidence (``kms.base.KeyProvider._call`` records it here): a
success says the provider works, a ``KeyUnavailable`` says it does not, at once — readiness must not keep
saying "healthy" while real traffic fails. ``kms.health`` reads this and refreshes it in the background.
No imports from the registry or providers: ``kms.base`` records into it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Observation:
    at: float  # monotonic seconds
    ok: bool
    detail: str


_lock = threading.Lock()
_observations: dict[str, Observation] = {}  # alias -> the latest
_generation = 0  # bumped by reset(): a result computed before it must not land after it


def record_success(alias: str, *, clock: Callable[[], float] = time.monotonic) -> None:
    with _lock:
        _observations[alias] = Observation(at=clock(), ok=True, detail="ok")


def record_failure(alias: str, detail: str, *, clock: Callable[[], float] = time.monotonic) -> None:
    with _lock:
        _observations[alias] = Observation(at=clock(), ok=False, detail=detail)


def latest(alias: str) -> Observation | None:
    with _lock:
        return _observations.get(alias)


def generation() -> int:
    return _generation


def record_if_current(alias: str, observation: Observation, *, generation_seen: int) -> None:
    """Store a background check's result unless ``reset`` ran since it began, or traffic has since
    reported something newer."""
    with _lock:
        if generation_seen != _generation:
            return
        current = _observations.get(alias)
        if current is None or current.at <= observation.at:
            _observations[alias] = observation


def reset() -> None:
    global _generation
    with _lock:
        _observations.clear()
        _generation += 1
