"""kms.health: a probe never waits on the key provider; probes that arrive together start one background
round-trip (single flight per alias) and answer from what is already known."""

from __future__ import annotations

import threading

import pytest

from kms import health, status
from kms.providers.local import LocalKeyProvider

PROBES = 8


@pytest.fixture
def held_wraps(monkeypatch):
    """Real LocalKeyProvider.wrap calls, counted, each held until the test releases it: a probe that
    waited for one would never return."""
    calls: list[str] = []
    release = threading.Event()
    real_wrap = LocalKeyProvider.wrap

    def spy(self, data_key, *, context):
        calls.append(self.alias)
        if not release.wait(timeout=30):
            raise AssertionError("the held wrap was never released")
        return real_wrap(self, data_key, context=context)

    monkeypatch.setattr(LocalKeyProvider, "wrap", spy)
    yield calls, release
    release.set()


def probe_together() -> list[health.ProviderHealth]:
    """PROBES threads probe at once, like a readiness storm; each must return on its own."""
    results: list[health.ProviderHealth] = []

    def probe() -> None:
        results.append(health.provider_health("local"))

    threads = [threading.Thread(target=probe) for _ in range(PROBES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a probe waited for the key provider"
    assert len(results) == PROBES
    return results


def settle() -> None:
    thread = health.refreshing("local")
    if thread is not None:
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_concurrent_probes_start_one_round_trip_and_none_waits_for_it(held_wraps):
    calls, release = held_wraps
    results = probe_together()
    assert all(r.detail == health.NOT_CHECKED and not r.ok for r in results)
    assert health.refreshing("local") is not None
    release.set()
    settle()
    assert calls == ["local"]
    assert health.provider_health("local").ok


def test_concurrent_probes_of_a_failing_provider_start_one_round_trip(held_wraps, settings, tmp_path):
    settings.KMS_PROVIDERS = {
        "local": {
            "BACKEND": "kms.providers.local.LocalKeyProvider",
            "OPTIONS": {"key_file": str(tmp_path / "gone.key")},
        }
    }
    calls, release = held_wraps
    probe_together()
    release.set()
    settle()
    assert calls == ["local"]
    after = health.provider_health("local")
    assert not after.ok
    assert after.detail == "round-trip failed: KeyUnavailable"  # no path or key id


def test_the_ttl_has_a_default_when_the_setting_is_absent(settings, counted_wraps):
    settings.KMS = {}
    now = [0.0]
    status.record_success("local", clock=lambda: now[0])
    now[0] += 59
    assert health.provider_health("local", clock=lambda: now[0]).age_seconds == pytest.approx(59)
    assert health.refreshing("local") is None  # kms.conf's default: 60 seconds
    now[0] += 2
    health.provider_health("local", clock=lambda: now[0])
    settle()
    assert counted_wraps == ["local"]
