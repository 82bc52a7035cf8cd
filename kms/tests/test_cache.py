"""kms.cache: TTL, uses, LRU bound, single-flight, failures not cached, settings reset (architecture §4)."""

from __future__ import annotations

import secrets
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import REGISTRY

from kms.base import WrappedKey
from kms.cache import DataKeyCache, cache_key, dek_cache
from kms.exceptions import KeyUnavailable

CONTEXT = {"blob_id": "00000000-0000-0000-0000-000000000001"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Unwrapper:
    """Stands in for a provider's unwrap: returns a fixed key per wrapped key and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.keys: dict[bytes, bytes] = {}

    def __call__(self, wrapped: WrappedKey):
        def unwrap() -> bytes:
            self.calls += 1
            return self.keys.setdefault(wrapped.ciphertext, secrets.token_bytes(32))

        return unwrap


def wrapped(n: int = 0, key_ref: str = "mk-1") -> WrappedKey:
    return WrappedKey(ciphertext=bytes([n]) * 60, key_ref=key_ref, algorithm="AES-256-GCM")


def make(clock: Clock | None = None, *, ttl: float = 60, uses: int = 100, entries: int = 10) -> DataKeyCache:
    return DataKeyCache(ttl_seconds=ttl, max_uses=uses, max_entries=entries, clock=clock or Clock())


def get(c: DataKeyCache, unwrapper: Unwrapper, w: WrappedKey, alias: str = "local") -> bytes:
    return c.get_or_unwrap(alias=alias, wrapped=w, context=CONTEXT, unwrap=unwrapper(w))


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_a_hit_costs_no_unwrap_and_returns_the_same_key():
    c, u = make(), Unwrapper()
    first = get(c, u, wrapped())
    assert [get(c, u, wrapped()) for _ in range(5)] == [first] * 5
    assert u.calls == 1


def test_hits_and_misses_are_counted():
    c, u = make(), Unwrapper()
    hits, misses = counter("dek_cache_hits_total"), counter("dek_cache_misses_total")
    for _ in range(4):
        get(c, u, wrapped())
    assert counter("dek_cache_misses_total") - misses == 1
    assert counter("dek_cache_hits_total") - hits == 3


def test_entries_expire_after_the_ttl():
    clock = Clock()
    c, u = make(clock, ttl=30), Unwrapper()
    get(c, u, wrapped())
    clock.now += 29.9
    get(c, u, wrapped())
    assert u.calls == 1
    clock.now += 0.1
    get(c, u, wrapped())
    assert u.calls == 2


def test_a_key_serves_at_most_max_uses_per_unwrap():
    c, u = make(uses=3), Unwrapper()
    for _ in range(9):
        get(c, u, wrapped())
    assert u.calls == 3  # 3 uses each, the unwrap's own included


def test_max_uses_of_one_caches_nothing():
    c, u = make(uses=1), Unwrapper()
    for _ in range(3):
        get(c, u, wrapped())
    assert u.calls == 3
    assert len(c) == 0


def test_least_recently_used_goes_first_beyond_max_entries():
    c, u = make(entries=2), Unwrapper()
    get(c, u, wrapped(1))
    get(c, u, wrapped(2))
    get(c, u, wrapped(1))  # 1 is now the most recently used
    get(c, u, wrapped(3))  # evicts 2
    assert len(c) == 2
    assert u.calls == 3
    get(c, u, wrapped(1))
    assert u.calls == 3
    get(c, u, wrapped(2))
    assert u.calls == 4


@pytest.mark.parametrize("field", ["ttl", "uses", "entries"])
def test_zero_in_any_setting_disables_the_cache(field):
    c, u = make(**{field: 0}), Unwrapper()
    for _ in range(3):
        get(c, u, wrapped())
    assert u.calls == 3
    assert len(c) == 0
    assert not c.enabled


def test_negative_settings_are_refused():
    with pytest.raises(ImproperlyConfigured, match="MAX_USES"):
        make(uses=-1)


def test_every_part_of_the_key_matters():
    base = cache_key(alias="local", wrapped=wrapped(1), context=CONTEXT)
    assert cache_key(alias="local", wrapped=wrapped(1), context=dict(CONTEXT)) == base
    others = [
        cache_key(alias="other", wrapped=wrapped(1), context=CONTEXT),
        cache_key(alias="local", wrapped=wrapped(2), context=CONTEXT),
        cache_key(alias="local", wrapped=wrapped(1, key_ref="mk-2"), context=CONTEXT),
        cache_key(
            alias="local",
            wrapped=WrappedKey(ciphertext=wrapped(1).ciphertext, key_ref="mk-1", algorithm="other"),
            context=CONTEXT,
        ),
        cache_key(alias="local", wrapped=wrapped(1), context={"blob_id": "another"}),
        # Length prefixes: moving a byte from one field to the next is a different key.
        cache_key(alias="localm", wrapped=WrappedKey(b"\x01" * 60, "k-1", "AES-256-GCM"), context=CONTEXT),
    ]
    assert len({base, *others}) == len(others) + 1


def test_a_wrapped_key_copied_to_another_blob_is_not_served_from_the_cache():
    # The context (blob id) is part of the key: the copy misses and goes to the KMS, which refuses it.
    c, u = make(), Unwrapper()
    w = wrapped()
    get(c, u, w)
    c.get_or_unwrap(alias="local", wrapped=w, context={"blob_id": "another"}, unwrap=u(w))
    assert u.calls == 2


def test_the_plaintext_key_is_not_in_the_cache_key():
    c, u = make(), Unwrapper()
    data_key = get(c, u, wrapped())
    assert all(data_key not in key for key in c._entries)
    shown = repr(c._entries)
    assert data_key.hex() not in shown
    assert repr(data_key) not in shown


def test_a_failed_unwrap_is_not_cached():
    c = make()
    attempts = []

    def failing() -> bytes:
        attempts.append(1)
        raise KeyUnavailable("KMS down", provider="local")

    for _ in range(2):
        with pytest.raises(KeyUnavailable):
            c.get_or_unwrap(alias="local", wrapped=wrapped(), context=CONTEXT, unwrap=failing)
    assert len(attempts) == 2
    assert len(c) == 0
    u = Unwrapper()
    get(c, u, wrapped())  # the KMS is back: the next request unwraps and caches
    get(c, u, wrapped())
    assert u.calls == 1


def test_clear_empties_the_cache():
    c, u = make(), Unwrapper()
    get(c, u, wrapped())
    c.clear()
    get(c, u, wrapped())
    assert u.calls == 2


THREADS = 8


def _in_threads(target, count: int = THREADS) -> list:
    results: list = [None] * count

    def run(i: int) -> None:
        try:
            results[i] = target()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    return results


class HeldUnwrap:
    """An unwrap that waits until every thread has asked the cache, so they all miss together."""

    def __init__(self, c: DataKeyCache, outcome: bytes | Exception) -> None:
        self.calls = 0
        self._outcome = outcome
        self._waiting = threading.Condition()
        self._asked = 0
        real_take = c._take

        def take(key: bytes):  # counts the threads that looked in the cache
            with self._waiting:
                self._asked += 1
                self._waiting.notify_all()
            return real_take(key)

        c._take = take  # type: ignore[method-assign]

    def __call__(self) -> bytes:
        self.calls += 1
        with self._waiting:
            if not self._waiting.wait_for(lambda: self._asked == THREADS, timeout=30):
                raise AssertionError("not every thread asked")
        if isinstance(self._outcome, Exception):
            raise self._outcome
        return self._outcome


def test_concurrent_misses_for_one_key_make_one_unwrap():
    c = make()
    data_key = secrets.token_bytes(32)
    held = HeldUnwrap(c, data_key)
    results = _in_threads(lambda: c.get_or_unwrap(alias="a", wrapped=wrapped(), context=CONTEXT, unwrap=held))
    assert results == [data_key] * THREADS
    assert held.calls == 1
    assert len(c) == 1


def test_concurrent_misses_share_a_failure_and_cache_nothing():
    c = make()
    held = HeldUnwrap(c, KeyUnavailable("KMS down", provider="local"))
    results = _in_threads(lambda: c.get_or_unwrap(alias="a", wrapped=wrapped(), context=CONTEXT, unwrap=held))
    assert all(isinstance(r, KeyUnavailable) for r in results)
    assert held.calls == 1
    assert len(c) == 0
    assert c._flights == {}


def test_an_unwrap_in_flight_during_clear_does_not_repopulate():
    c = make()
    u = Unwrapper()

    def unwrap_then_clear() -> bytes:
        key = u(wrapped())()
        c.clear()  # the configuration changed while the KMS call was in flight
        return key

    c.get_or_unwrap(alias="local", wrapped=wrapped(), context=CONTEXT, unwrap=unwrap_then_clear)
    assert len(c) == 0


# --- the process cache and its settings --------------------------------------------------------------------


def test_the_process_cache_follows_the_settings(settings):
    settings.KMS = {**settings.KMS, "DEK_CACHE": {"TTL_SECONDS": 7, "MAX_USES": 5, "MAX_ENTRIES": 3}}
    c = dek_cache()
    assert (c.ttl_seconds, c.max_uses, c.max_entries) == (7, 5, 3)
    assert dek_cache() is c
    # Only the keys a deployment changes; the rest default.
    settings.KMS = {**settings.KMS, "DEK_CACHE": {"MAX_USES": 0}}
    assert dek_cache() is not c
    assert not dek_cache().enabled
    assert dek_cache().ttl_seconds == 300


@pytest.mark.parametrize("setting", ["KMS_PROVIDERS", "KMS_DEFAULT_PROVIDER", "KMS"])
def test_changing_a_kms_setting_clears_the_process_cache(settings, setting):
    u = Unwrapper()
    get(dek_cache(), u, wrapped())
    old = dek_cache()
    setattr(settings, setting, getattr(settings, setting))
    assert len(old) == 0
    get(dek_cache(), u, wrapped())
    assert u.calls == 2


def test_an_unknown_cache_setting_is_refused(settings):
    with pytest.raises(ImproperlyConfigured, match="TTL"):
        settings.KMS = {**settings.KMS, "DEK_CACHE": {"TTL": 5}}
