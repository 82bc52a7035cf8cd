"""The default cache's backends (core/cache.py): the file cache's atomic counters across processes,
its bound, and Redis failing mid-run (a private redis-server, stopped by PID) without a caller noticing."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import REGISTRY

from core import cache as core_cache
from core.cache import LockedFileCache, ResilientRedisCache, is_shared_by_replicas
from core.tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def file_cache(location: Path, **options: int) -> LockedFileCache:
    return LockedFileCache(str(location), {"OPTIONS": options})


# --- the file cache: several processes, one count ----------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from core.cache import LockedFileCache
    cache = LockedFileCache(sys.argv[1], {})
    print("ADDED" if cache.add("once", 1, 60) else "NOT-ADDED", flush=True)
    for _ in range(int(sys.argv[2])):
        cache.add("counter", 0, 60)
        cache.incr("counter")
    """
)


def test_increments_from_several_processes_all_count(tmp_path):
    # Django's FileBasedCache reads then writes: two processes both read 4 and both write 5.
    processes, each = 4, 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), str(each)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    assert file_cache(tmp_path).get("counter") == processes * each
    # add() is decided under the lock too: exactly one process created the key.
    assert sorted(out.strip() for out, _ in outputs) == ["ADDED"] + ["NOT-ADDED"] * (processes - 1)


def test_incr_keeps_the_expiry_of_the_first_write(tmp_path, monkeypatch):
    cache = file_cache(tmp_path)
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    assert cache.add("k", 0, timeout=100)
    now[0] += 60
    assert cache.incr("k") == 1  # a fixed window: incrementing does not extend it
    now[0] += 41
    assert cache.get("k") is None
    with pytest.raises(ValueError, match="not found"):
        cache.incr("k")
    assert cache.add("k", 0, timeout=100)  # an expired entry is free for add()


def test_entries_are_bounded(tmp_path):
    cache = file_cache(tmp_path, MAX_ENTRIES=10, CULL_FREQUENCY=2)
    for i in range(40):
        cache.set(f"k-{i}", i, timeout=1000)
        assert len(list(tmp_path.glob("*.djcache"))) <= 10
    assert cache.get("k-39") == 39  # the entry being written is never the one culled


def test_the_first_cull_spares_live_entries_when_expired_ones_make_room(tmp_path, monkeypatch):
    cache = file_cache(tmp_path, MAX_ENTRIES=10)
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    for i in range(5):
        cache.set(f"live-{i}", i, timeout=1000)
    for i in range(5):
        cache.set(f"short-{i}", i, timeout=10)
    now[0] += 11
    cache.set("one-more", 1, timeout=1000)
    assert [cache.get(f"live-{i}") for i in range(5)] == [0, 1, 2, 3, 4]
    assert cache.get("one-more") == 1
    assert len(list(tmp_path.glob("*.djcache"))) == 6


def test_update_is_a_read_modify_write_under_the_lock(tmp_path):
    cache = file_cache(tmp_path)
    assert cache.update("h", lambda v: ([1], "first" if v is None else "again"), 60) == "first"
    assert cache.update("h", lambda v: ([*v, 2], len(v)), 60) == 1
    assert cache.get("h") == [1, 2]


def test_the_directory_and_files_are_private(tmp_path):
    location = tmp_path / "cache"
    cache = file_cache(location)
    cache.set("k", "v")
    assert location.stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o077 == 0 for f in location.iterdir())


def test_a_directory_others_may_write_to_is_refused(tmp_path):
    location = tmp_path / "shared"
    location.mkdir()
    location.chmod(0o777)  # e.g. under /tmp: another local user could plant a pickle
    with pytest.raises(ImproperlyConfigured, match="writable by no one else"):
        file_cache(location).get("key")
    location.chmod(0o700)
    assert file_cache(location).get("key", "miss") == "miss"


def test_an_unreadable_entry_is_a_miss(tmp_path):
    cache = file_cache(tmp_path / "cache")
    cache.set("key", "value")
    # Not an expiry time but a string: comparing it with the clock raises TypeError.
    Path(cache._key_to_file("key")).write_bytes(pickle.dumps("soon") + b"junk")
    assert cache.get("key", "miss") == "miss"


def test_neither_files_nor_process_memory_are_shared_by_replicas(tmp_path):
    # So the flags read their version stamp from the database with either (flags.services._stamp_cache).
    assert not is_shared_by_replicas(file_cache(tmp_path))
    assert not is_shared_by_replicas(LocMemCache("per-process", {}))


# --- Redis stopping mid-run ------------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tmp_path)
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def disconnect(cache: ResilientRedisCache) -> None:
    # Django's close() keeps the connection pool for the next request; a test's sockets must go.
    for pool in cache._cache._pools.values():
        pool.disconnect()
    core_cache._availability.clear()


def errors(operation: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("cache_errors_total", {"operation": operation, "reason": reason})
    return value or 0.0


def test_redis_stopping_mid_run_degrades_to_process_memory_logged_once(redis_server, caplog, monkeypatch):
    now = [5000.0]
    monkeypatch.setattr(ResilientRedisCache, "clock", staticmethod(lambda: now[0]))
    cache = ResilientRedisCache(
        redis_server.url,
        {"OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5, "RETRY_SECONDS": 5}},
    )
    try:
        cache.set("k", "from-redis", 60)
        assert cache.get("k") == "from-redis"
        assert is_shared_by_replicas(cache)

        redis_server.stop()
        failed, skipped = errors("get", "error"), errors("get", "skipped")
        with caplog.at_level(logging.WARNING, logger="core.cache"):
            assert cache.get("k", "default") == "default"  # no exception: the fallback answers
            assert not is_shared_by_replicas(cache)  # the flags read their stamp from the database meanwhile
            # The login lockout's add + incr still count, in this process.
            assert cache.add("attempts", 0, 60)
            assert [cache.incr("attempts") for _ in range(3)] == [1, 2, 3]
            # And the upload throttle's atomic read-modify-write.
            bump = lambda v: ((v or 0) + 1, (v or 0) + 1)  # noqa: E731
            assert [cache.update("history", bump, 60) for _ in range(2)] == [1, 2]
            for _ in range(50):
                cache.get("k")
        assert errors("get", "error") == failed + 1  # one real attempt, then the circuit is open
        assert errors("get", "skipped") == skipped + 50
        unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(unavailable) == 1
        assert redis_server.url not in caplog.text

        # Still down at the retry: one more attempt, and no new log line within the log interval.
        caplog.clear()
        now[0] += 6
        with caplog.at_level(logging.WARNING, logger="core.cache"):
            assert cache.get("k") is None
        assert errors("get", "error") == failed + 2
        assert "unavailable" not in caplog.text

        redis_server.start()  # empty: it keeps nothing on disk
        raw = redis.Redis.from_url(redis_server.url)
        try:
            raw.set(":1:k", 42)  # Django's key for "k"; integers are stored as such
        finally:
            raw.close()
        now[0] += 6
        with caplog.at_level(logging.WARNING, logger="core.cache"):
            assert cache.get("k") == 42  # from Redis again, not the fallback
        assert is_shared_by_replicas(cache)
        assert "available again" in caplog.text
    finally:
        disconnect(cache)


def test_a_redis_that_stops_answering_costs_one_timeout_then_the_fallback_answers(redis_server):
    cache = ResilientRedisCache(
        redis_server.url,
        {"OPTIONS": {"socket_connect_timeout": 0.3, "socket_timeout": 0.3, "RETRY_SECONDS": 60}},
    )
    try:
        cache.set("k", "v", 60)  # the connection is open before Redis hangs
        redis_server.pause()
        failed, skipped = errors("get", "error"), errors("get", "skipped")
        try:
            assert cache.get("k", "fallback") == "fallback"  # the socket timeout, not a hang
            assert [cache.get("k", "fallback") for _ in range(20)] == ["fallback"] * 20
        finally:
            redis_server.resume()
        assert errors("get", "error") == failed + 1  # one call waited for the timeout; the rest did not ask
        assert errors("get", "skipped") == skipped + 20
    finally:
        disconnect(cache)


def test_a_missing_key_is_still_value_error_with_redis_down(redis_server, monkeypatch):
    cache = ResilientRedisCache(redis_server.url, {"OPTIONS": {"socket_connect_timeout": 0.5}})
    try:
        with pytest.raises(ValueError, match="not found"):
            cache.incr("missing")  # from Redis
        redis_server.stop()
        with pytest.raises(ValueError, match="not found"):
            cache.incr("missing")  # from the fallback: the login lockout's "expired meanwhile" path
    finally:
        disconnect(cache)


def test_unknown_resilience_values_are_refused():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="RETRY_SECONDS"):
        ResilientRedisCache("redis://127.0.0.1:1/0", {"OPTIONS": {"RETRY_SECONDS": "soon"}})
