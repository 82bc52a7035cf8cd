"""The data-key cache: unwrapped data keys in process memory, for the download path only (architecture.md §4).

A hot blob would otherwise cost a KMS call per download (the guide budgets two); with the cache, one per
``MAX_USES`` downloads or ``TTL_SECONDS`` per process, and downloads of cached blobs keep streaming while
the KMS is down. Uploads never come here: a new blob gets a fresh data key.

- In process memory only, never Django's cache or Redis: a shared cache would put data keys on the network
  and in another system's memory and backups.
- Keyed by a SHA-256 over (provider alias, key reference, algorithm, wrapped key, wrap context). The
  plaintext key is never part of a key. The context is in the hash too, so a wrapped key copied onto another
  blob's row misses and goes to the KMS, which refuses it: the cache cannot bypass the wrap's binding.
- Bounded by TTL, by uses per unwrap and by size (least recently used out first).
- Single-flight: concurrent misses for one key make one unwrap; the others wait for it and share its
  result or its error. A failed unwrap is never cached: the next request asks the KMS again.
- Cleared when ``KMS_PROVIDERS``, ``KMS_DEFAULT_PROVIDER`` or ``KMS["DEK_CACHE"]`` change
  (``override_settings``), as the provider registry is. Python cannot wipe ``bytes``; evicted keys are
  left to the garbage collector.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from .base import WrappedKey, encode_context
from .conf import kms_setting
from .metrics import DEK_CACHE_HITS, DEK_CACHE_MISSES


def cache_key(*, alias: str, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
    """SHA-256 over length-prefixed fields, so no two different tuples can collide by concatenation."""
    digest = hashlib.sha256()
    for part in (
        alias.encode(),
        wrapped.key_ref.encode(),
        wrapped.algorithm.encode(),
        bytes(wrapped.ciphertext),
        encode_context(context),
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


@dataclass
class _Entry:
    data_key: bytes = field(repr=False)
    expires_at: float
    uses_left: int


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    data_key: bytes | None = field(default=None, repr=False)
    error: BaseException | None = None


class DataKeyCache:
    """Thread-safe; ``clock`` (monotonic seconds) is injectable for tests."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_uses: int,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        limits = {"TTL_SECONDS": ttl_seconds, "MAX_USES": max_uses, "MAX_ENTRIES": max_entries}
        for name, value in limits.items():
            if value < 0:
                raise ImproperlyConfigured(f"KMS['DEK_CACHE'][{name!r}] is {value}; use 0 (off) or more.")
        self.ttl_seconds = ttl_seconds
        self.max_uses = max_uses
        self.max_entries = max_entries
        self.enabled = bool(ttl_seconds and max_uses and max_entries)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._flights: dict[bytes, _Flight] = {}
        self._generation = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            # An unwrap in flight now was made under the old configuration: it must not repopulate.
            self._generation += 1

    def get_or_unwrap(
        self, *, alias: str, wrapped: WrappedKey, context: Mapping[str, str], unwrap: Callable[[], bytes]
    ) -> bytes:
        """The data key for ``wrapped``: from the cache, from an unwrap in flight, or from ``unwrap()``."""
        if not self.enabled:
            return unwrap()
        key = cache_key(alias=alias, wrapped=wrapped, context=context)
        with self._lock:
            cached = self._take(key)
            if cached is None:
                flight = self._flights.get(key)
                leader = flight is None
                if flight is None:
                    flight = self._flights[key] = _Flight()
                generation = self._generation
        if cached is not None:
            DEK_CACHE_HITS.inc()
            return cached
        assert flight is not None  # set under the lock whenever nothing was cached
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.data_key is not None
            with self._lock:
                self._charge(key)
            DEK_CACHE_HITS.inc()
            return flight.data_key
        DEK_CACHE_MISSES.inc()
        try:
            data_key = unwrap()
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.data_key = data_key
        finally:
            with self._lock:
                if flight.data_key is not None and generation == self._generation:
                    self._store(key, flight.data_key)
                del self._flights[key]
            flight.done.set()
        return data_key

    # The helpers below run under self._lock.

    def _take(self, key: bytes) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at:
            del self._entries[key]
            return None
        self._charge(key)
        return entry.data_key

    def _charge(self, key: bytes) -> None:
        # One use of a cached key; the last use removes it, so the next download asks the KMS again.
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.uses_left -= 1
        if entry.uses_left <= 0:
            del self._entries[key]
        else:
            self._entries.move_to_end(key)

    def _store(self, key: bytes, data_key: bytes) -> None:
        if self.max_uses <= 1:
            return  # the unwrap's own use was the only one allowed
        self._entries[key] = _Entry(
            data_key=data_key, expires_at=self._clock() + self.ttl_seconds, uses_left=self.max_uses - 1
        )
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


_lock = threading.Lock()
_cache: DataKeyCache | None = None


def dek_cache() -> DataKeyCache:
    """This process's cache, built from ``KMS["DEK_CACHE"]`` on first use."""
    global _cache
    cache = _cache
    if cache is not None:
        return cache
    with _lock:
        if _cache is None:
            config = kms_setting("DEK_CACHE")
            _cache = DataKeyCache(
                ttl_seconds=config["TTL_SECONDS"],
                max_uses=config["MAX_USES"],
                max_entries=config["MAX_ENTRIES"],
            )
        return _cache


def reset() -> None:
    global _cache
    with _lock:
        if _cache is not None:
            _cache.clear()
        _cache = None


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in {"KMS_PROVIDERS", "KMS_DEFAULT_PROVIDER", "KMS"}:
        reset()
