"""A cap on concurrent key-provider calls per provider and process (issue 15 item 18; architecture.md §4).

A hung KMS holds each caller for the whole retry deadline. Without a cap every upload and cold download
joins the queue, and a worker's connections (or, under gthread, its threads) all end up waiting on it. With
``KMS["MAX_CONCURRENT_CALLS"]`` slots per alias, a call that finds them all taken fails at once with
``KeyUnavailable`` (503 + Retry-After) instead of queueing: an outage costs a few requests' worth of waiting,
and the rest of the worker keeps serving. A refusal is not evidence that the provider is down (a healthy KMS
under load fills the slots too), so it is not recorded in ``kms.status``; it is counted
(``kms_bulkhead_rejections_total``). 0 turns the cap off.

``threading`` primitives: under the event worker they are gevent's (architecture.md §12).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import kms_setting
from .exceptions import KeyUnavailable
from .metrics import BULKHEAD_REJECTIONS

_lock = threading.Lock()
_slots: dict[str, threading.BoundedSemaphore | None] = {}  # alias -> its slots (None: no cap)


def _semaphore(alias: str) -> threading.BoundedSemaphore | None:
    with _lock:
        if alias not in _slots:
            limit = kms_setting("MAX_CONCURRENT_CALLS")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ImproperlyConfigured(
                    f"KMS['MAX_CONCURRENT_CALLS'] is {limit!r}; use a whole number, 0 for no cap."
                )
            _slots[alias] = threading.BoundedSemaphore(limit) if limit else None
        return _slots[alias]


@contextlib.contextmanager
def slot(alias: str) -> Iterator[None]:
    """Hold one of ``alias``'s call slots for the block, or raise KeyUnavailable at once if none is free."""
    semaphore = _semaphore(alias)
    if semaphore is None:
        yield
        return
    if not semaphore.acquire(blocking=False):
        BULKHEAD_REJECTIONS.labels(provider=alias).inc()
        raise KeyUnavailable(
            f"Key provider {alias!r}: all {kms_setting('MAX_CONCURRENT_CALLS')} call slots of this process "
            "are busy (KMS_MAX_CONCURRENT_CALLS); refused at once instead of queueing.",
            provider=alias,
        )
    try:
        yield
    finally:
        semaphore.release()


def reset() -> None:
    # Calls holding a slot of a dropped semaphore release into it: harmless, it is no longer handed out.
    with _lock:
        _slots.clear()


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "KMS":
        reset()
