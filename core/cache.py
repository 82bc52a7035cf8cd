"""The default cache's two backends (``settings.CACHES``): login lockout, upload throttle, flag version stamp.

``LockedFileCache`` — no ``REDIS_URL`` (``make run``, one machine). A per-process cache (LocMem) multiplied
the login allowance by the number of gunicorn workers: 2 workers let 20 wrong passwords through instead of
10. Files under ``var/cache`` are shared by every process on the machine, need no table and no query, and
``make run`` works on a fresh clone. Django's ``FileBasedCache`` is not safe for counters across processes
(``add`` and ``incr`` are a read then a write, so two workers both see 4 and both write 5): here every write
takes one ``flock`` on ``<dir>/.lock`` and ``add``/``incr``/``delete`` decide inside it; reads take it
shared. Writes go in place under that lock, not to a temporary file renamed over the entry as Django does:
ext4 flushes a file renamed over another (``auto_da_alloc``), 2.5 ms a write on this project's machines. The
number of entries is bounded (``MAX_ENTRIES``) and culling drops expired entries before live ones, so
flooding the cache with new names does not quietly reset lockout counters while expired ones remain. It is
one machine's: the flags' version stamp, which must reach every replica within seconds, is then read from the
database (once per interval per worker, as before).

Both add ``update(key, function, timeout)``: a read-modify-write no other process interleaves with (the upload
throttle's request history, which Django's get-then-set would lose entries of under concurrency).

``ResilientRedisCache`` — ``REDIS_URL``: shared by every worker and replica. A cache outage must not fail a
request (a download never fails because a cache did): a Redis error is counted (``cache_errors_total``),
logged at most once per ``LOG_INTERVAL_SECONDS``, and the call is answered by a process-local fallback
(LocMem), so throttles and the lockout still count, per process, while Redis is away. After an error Redis
is not asked again for ``RETRY_SECONDS`` (every call would otherwise wait for its socket timeout); then the
next call tries it again. Meanwhile ``is_shared_by_replicas()`` is false: the flags read their stamp from the
database.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured
from django_prometheus.cache.backends.redis import NativeRedisCache
from django_prometheus.cache.metrics import (
    django_cache_get_total,
    django_cache_hits_total,
    django_cache_misses_total,
)
from prometheus_client import Counter
from redis.exceptions import RedisError, WatchError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ``operation``: the cache method (get, set, add, incr, ...); ``reason``: ``error`` (Redis failed the call)
#: or ``skipped`` (Redis failed recently: the fallback answered without asking it).
CACHE_ERRORS = Counter(
    "cache_errors",  # exposed as cache_errors_total
    "Shared-cache calls answered by the process-local fallback, by operation and reason.",
    ["operation", "reason"],
)


def is_shared_by_replicas(cache: BaseCache) -> bool:
    """Whether a value one process sets in ``cache`` is seen right now by every process of every replica:
    not for a per-process cache (LocMem, dummy), nor one machine's files, nor Redis while it is unavailable
    (its fallback is per process). Other backends (Memcached, a database cache) are assumed shared."""
    if isinstance(cache, LocMemCache | DummyCache):
        return False
    return bool(getattr(cache, "shared_by_replicas", True))


# --- no Redis: files shared by the processes of one machine ------------------------------------------------


class LockedFileCache(FileBasedCache):
    """Django's file cache with writes serialised across processes (one ``flock``), atomic ``add`` and
    ``incr``, and culling that drops expired entries first. ``LOCATION``: a directory (created 0700)."""

    lock_name = ".lock"
    shared_by_replicas = False  # one machine's processes only
    # Django's private helpers, which django-stubs does not declare.
    _dir: str
    _max_entries: int
    _cull_frequency: int
    _key_to_file: Callable[..., str]
    _delete: Callable[[str], bool]
    _list_cache_files: Callable[[], list[str]]
    _createdir: Callable[[], None]

    def __init__(self, dir: str, params: dict[str, Any]) -> None:
        super().__init__(dir, params)
        self._lock_path = os.path.join(self._dir, self.lock_name)
        self._checked = False

    def _check_private(self) -> None:
        # Entries are pickles: whoever else could write into the directory could run code in this process.
        info = os.stat(self._dir)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise ImproperlyConfigured(
                f"The cache directory {self._dir} (ERPHUB_CACHE_DIR) must belong to this user and be "
                "writable by no one else (0700)."
            )
        self._checked = True

    @contextmanager
    def _locked(self, *, shared: bool = False) -> Iterator[None]:
        # No yield point inside (plain file I/O): a gevent worker's other greenlets cannot ask for the lock
        # while one holds it, so the blocking flock never waits on its own process.
        self._createdir()
        if not self._checked:
            self._check_private()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self, fname: str) -> tuple[float | None, Any] | None:
        """(expiry, value) of a live entry, else None."""
        try:
            with open(fname, "rb") as f:
                expiry = pickle.load(f)  # noqa: S301 - our own files, in a 0700 directory (Django's format)
                if expiry is not None and expiry < time.time():
                    return None
                return expiry, pickle.loads(zlib.decompress(f.read()))  # noqa: S301 - as above
        except FileNotFoundError:
            return None
        except (EOFError, pickle.UnpicklingError, zlib.error, ValueError, TypeError, AttributeError):
            return None  # empty, cut short (a crash mid-write) or otherwise unreadable: a miss, not an error

    def _write(self, fname: str, expiry: float | None, value: Any) -> None:
        """With the lock held. In place, and no O_TRUNC either: ext4 flushes a file truncated to zero."""
        data = pickle.dumps(expiry, self.pickle_protocol) + zlib.compress(
            pickle.dumps(value, self.pickle_protocol)
        )
        fd = os.open(fname, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        django_cache_get_total.labels(backend="filebased").inc()
        fname = self._key_to_file(key, version)
        with self._locked(shared=True):
            entry = self._read(fname)
        if entry is None:
            django_cache_misses_total.labels(backend="filebased").inc()
            return default
        django_cache_hits_total.labels(backend="filebased").inc()
        return entry[1]

    def _set_locked(self, fname: str, value: Any, timeout: Any) -> None:
        self._cull()
        self._write(fname, self.get_backend_timeout(timeout), value)

    def set(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        fname = self._key_to_file(key, version)
        with self._locked():
            self._set_locked(fname, value, timeout)

    def add(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        fname = self._key_to_file(key, version)
        with self._locked():
            if self._read(fname) is not None:
                return False
            self._set_locked(fname, value, timeout)
            return True

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> Any:
        fname = self._key_to_file(key, version)
        with self._locked():
            entry = self._read(fname)
            if entry is None:
                raise ValueError(f"Key '{key}' not found")
            expiry, value = entry
            value += delta
            self._write(fname, expiry, value)  # the window keeps the expiry its first write gave it
            return value

    def update(
        self,
        key: str,
        function: Callable[[Any], tuple[Any, T]],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> T:
        """``function(current value or None) -> (new value, result)``, atomically; returns the result."""
        fname = self._key_to_file(key, version)
        with self._locked():
            entry = self._read(fname)
            value, result = function(None if entry is None else entry[1])
            self._set_locked(fname, value, timeout)
            return result

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        fname = self._key_to_file(key, version)
        with self._locked():
            entry = self._read(fname)
            if entry is None:
                return False
            self._write(fname, self.get_backend_timeout(timeout), entry[1])
            return True

    def delete(self, key: str, version: int | None = None) -> bool:
        fname = self._key_to_file(key, version)
        with self._locked():
            return self._delete(fname)

    def has_key(self, key: str, version: int | None = None) -> bool:
        fname = self._key_to_file(key, version)
        with self._locked(shared=True):
            return self._read(fname) is not None

    def clear(self) -> None:
        with self._locked():
            for fname in self._list_cache_files():
                self._delete(fname)

    def _cull(self) -> None:
        """Called with the lock held, before a write. Expired entries go first; if that is not enough room,
        a random ``1/CULL_FREQUENCY`` of the rest (Django's rule)."""
        filelist = self._list_cache_files()
        if len(filelist) < self._max_entries:
            return
        live = []
        for fname in filelist:
            if self._read(fname) is None:
                self._delete(fname)
            else:
                live.append(fname)
        if len(live) < self._max_entries:
            return
        if self._cull_frequency == 0:
            victims = live
        else:
            victims = random.sample(live, int(len(live) / self._cull_frequency))
        for fname in victims:
            self._delete(fname)


# --- Redis, with a process-local fallback while it is away --------------------------------------------------


class _Availability:
    """One per Redis location and process (cache instances are per thread; this state is not)."""

    def __init__(
        self, location: str, retry_seconds: float, log_interval: float, fallback_entries: int
    ) -> None:
        self.lock = threading.Lock()
        self.retry_seconds = retry_seconds
        self.log_interval = log_interval
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.logged_at = -float("inf")
        self.fallback = LocMemCache(
            f"erphub-cache-fallback:{location}", {"OPTIONS": {"MAX_ENTRIES": fallback_entries}}
        )

    def skip(self, now: float) -> bool:
        return self.down_since is not None and now < self.retry_at

    def failed(self, operation: str, exc: RedisError, now: float) -> None:
        with self.lock:
            first = self.down_since is None
            if first:
                self.down_since = now
            self.retry_at = now + self.retry_seconds
            log = first or now - self.logged_at >= self.log_interval
            if log:
                self.logged_at = now
        if log:
            # The exception's class and text (host and port, never the URL: it may carry a password).
            logger.warning(
                "shared cache unavailable (%s on %s: %s); serving with a process-local cache, "
                "retrying every %.0f s",
                type(exc).__name__,
                operation,
                exc,
                self.retry_seconds,
            )

    def succeeded(self, now: float) -> None:
        if self.down_since is None:
            return
        with self.lock:
            down_since, self.down_since = self.down_since, None
        if down_since is not None:
            logger.warning("shared cache available again after %.1f s", now - down_since)


_availability: dict[str, _Availability] = {}
_availability_lock = threading.Lock()

#: ``OPTIONS`` of ours (the rest go to redis-py's connection pool: socket_timeout, ...), with defaults.
RESILIENCE_OPTIONS = {
    "RETRY_SECONDS": 5.0,  # after an error, Redis is left alone this long (the fallback answers)
    "LOG_INTERVAL_SECONDS": 60.0,  # while it stays down, one log line per this many seconds
    "FALLBACK_MAX_ENTRIES": 10_000,  # bound of the process-local fallback
}


class ResilientRedisCache(NativeRedisCache):
    """django-prometheus's Redis cache (Django's native backend) whose errors never reach the caller.

    ``OPTIONS`` may add ``RETRY_SECONDS``, ``LOG_INTERVAL_SECONDS`` and ``FALLBACK_MAX_ENTRIES``; set
    ``socket_connect_timeout`` and ``socket_timeout`` too, or a Redis that stops answering (rather than
    refusing connections) holds each request for the operating system's TCP timeout."""

    #: Injectable clock (tests).
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS", {}))
        ours = {name: options.pop(name, default) for name, default in RESILIENCE_OPTIONS.items()}
        for name, value in ours.items():
            if not isinstance(value, int | float) or value < 0:
                raise ImproperlyConfigured(f"CACHES OPTIONS {name}={value!r}: a number >= 0 expected.")
        super().__init__(server, {**params, "OPTIONS": options})
        with _availability_lock:
            key = server if isinstance(server, str) else ",".join(server)
            if key not in _availability:
                _availability[key] = _Availability(
                    key,
                    float(ours["RETRY_SECONDS"]),
                    float(ours["LOG_INTERVAL_SECONDS"]),
                    int(ours["FALLBACK_MAX_ENTRIES"]),
                )
            self._availability = _availability[key]

    @property
    def shared_by_replicas(self) -> bool:
        return not self._availability.skip(self.clock())

    def _guarded(self, operation: str, primary: Callable[[], T], fallback: Callable[[BaseCache], T]) -> T:
        state = self._availability
        now = self.clock()
        if state.skip(now):
            CACHE_ERRORS.labels(operation=operation, reason="skipped").inc()
            return fallback(state.fallback)
        try:
            result = primary()
        except RedisError as exc:  # connection refused or reset, timeouts, a Redis out of memory, ...
            CACHE_ERRORS.labels(operation=operation, reason="error").inc()
            state.failed(operation, exc, self.clock())
            return fallback(state.fallback)
        state.succeeded(self.clock())
        return result

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._guarded(
            "get",
            lambda: super(ResilientRedisCache, self).get(key, default, version),
            lambda f: f.get(key, default, version),
        )

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> None:
        self._guarded(
            "set",
            lambda: super(ResilientRedisCache, self).set(key, value, timeout, version),
            lambda f: f.set(key, value, timeout, version),
        )

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return self._guarded(
            "add",
            lambda: super(ResilientRedisCache, self).add(key, value, timeout, version),
            lambda f: f.add(key, value, timeout, version),
        )

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        # A missing key is ValueError from either side (Django's contract), not a cache error.
        return self._guarded(
            "incr",
            lambda: super(ResilientRedisCache, self).incr(key, delta, version),
            lambda f: f.incr(key, delta, version),
        )

    def update(
        self,
        key: Any,
        function: Callable[[Any], tuple[Any, T]],
        timeout: Any = DEFAULT_TIMEOUT,
        version: Any = None,
    ) -> T:
        """``function(current value or None) -> (new value, result)``, atomically (WATCH/MULTI: retried if
        another client changed the key meanwhile); returns the result. The fallback serialises with a lock."""

        def on_redis() -> T:
            made = self.make_and_validate_key(key, version=version)
            client = self._cache.get_client(made, write=True)
            serializer = self._cache._serializer
            seconds = self.get_backend_timeout(timeout)
            with client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(made)
                        raw = pipe.get(made)
                        value, result = function(None if raw is None else serializer.loads(raw))
                        pipe.multi()
                        pipe.set(made, serializer.dumps(value), ex=seconds)
                        pipe.execute()
                        return result
                    except WatchError:
                        continue

        def on_fallback(fallback: BaseCache) -> T:
            with self._availability.lock:
                value, result = function(fallback.get(key, None, version))
                fallback.set(key, value, timeout, version)
                return result

        return self._guarded("update", on_redis, on_fallback)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return self._guarded(
            "touch",
            lambda: super(ResilientRedisCache, self).touch(key, timeout, version),
            lambda f: f.touch(key, timeout, version),
        )

    def delete(self, key: Any, version: Any = None) -> bool:
        return self._guarded(
            "delete",
            lambda: super(ResilientRedisCache, self).delete(key, version),
            lambda f: f.delete(key, version),
        )

    def has_key(self, key: Any, version: Any = None) -> bool:
        return self._guarded(
            "has_key",
            lambda: super(ResilientRedisCache, self).has_key(key, version),
            lambda f: f.has_key(key, version),
        )

    def get_many(self, keys: Any, version: Any = None) -> dict[Any, Any]:
        keys = list(keys)
        return self._guarded(
            "get_many",
            lambda: super(ResilientRedisCache, self).get_many(keys, version),
            lambda f: f.get_many(keys, version),
        )

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> list[Any]:
        return self._guarded(
            "set_many",
            lambda: super(ResilientRedisCache, self).set_many(data, timeout, version),
            lambda f: f.set_many(data, timeout, version),
        )

    def delete_many(self, keys: Any, version: Any = None) -> None:
        keys = list(keys)
        self._guarded(
            "delete_many",
            lambda: super(ResilientRedisCache, self).delete_many(keys, version),
            lambda f: f.delete_many(keys, version),
        )

    def clear(self) -> None:
        def both() -> None:
            self._availability.fallback.clear()
            super(ResilientRedisCache, self).clear()

        self._guarded("clear", both, lambda f: f.clear())
