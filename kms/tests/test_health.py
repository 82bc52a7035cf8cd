"""kms.health: probes that arrive together share one key-provider round-trip (single-flight per alias)."""

from __future__ import annotations

import threading

import pytest

from kms import health
from kms.providers.local import LocalKeyProvider

PROBES = 8


@pytest.fixture
def held_wraps(monkeypatch):
    """Real LocalKeyProvider.wrap calls, counted. The first one waits until every probe has started, so the
    others arrive while its round-trip is in flight."""
    calls: list[str] = []
    entered: set[threading.Thread] = set()
    everyone_in = threading.Condition()
    real_wrap = LocalKeyProvider.wrap

    def spy(self, data_key, *, context):
        with everyone_in:
            calls.append(self.alias)
            first = len(calls) == 1
            if first and not everyone_in.wait_for(lambda: len(entered) == PROBES, timeout=30):
                raise AssertionError("not every probe started")
        return real_wrap(self, data_key, context=context)

    def clock() -> float:
        with everyone_in:
            entered.add(threading.current_thread())
            everyone_in.notify_all()
        return 1000.0

    monkeypatch.setattr(LocalKeyProvider, "wrap", spy)
    return calls, clock


def probe_together(clock) -> list[health.ProviderHealth]:
    """PROBES threads (one each, so the spy can tell them apart) probe at once, like a readiness storm."""
    results: list[health.ProviderHealth] = []

    def probe() -> None:
        results.append(health.provider_health("local", clock=clock))

    threads = [threading.Thread(target=probe) for _ in range(PROBES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == PROBES
    return results


def test_concurrent_probes_make_one_round_trip(held_wraps):
    calls, clock = held_wraps
    results = probe_together(clock)
    assert calls == ["local"]
    assert all(r.ok for r in results)


def test_concurrent_probes_of_a_failing_provider_make_one_round_trip(held_wraps, settings, tmp_path):
    settings.KMS_PROVIDERS = {
        "local": {
            "BACKEND": "kms.providers.local.LocalKeyProvider",
            "OPTIONS": {"key_file": str(tmp_path / "gone.key")},
        }
    }
    calls, clock = held_wraps
    results = probe_together(clock)
    assert calls == ["local"]
    assert not any(r.ok for r in results)
    assert all("gone.key" in r.detail for r in results)


def test_the_ttl_has_a_default_when_the_setting_is_absent(settings, counted_wraps):
    settings.KMS = {}
    calls = counted_wraps
    now = [0.0]
    assert health.provider_health("local", clock=lambda: now[0]).ok
    now[0] += 59
    assert health.provider_health("local", clock=lambda: now[0]).age_seconds == pytest.approx(59)
    assert len(calls) == 1  # kms.conf's default: 60 seconds
    now[0] += 2
    assert health.provider_health("local", clock=lambda: now[0]).age_seconds == 0
    assert len(calls) == 2
