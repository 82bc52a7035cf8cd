"""The cap on concurrent key-provider calls (kms.bulkhead, issue 15 item 18): with every slot held by a call
hanging on a real black-hole KMS, the next call is refused at once with KeyUnavailable instead of queueing,
and that refusal is not taken as evidence that the provider is down."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import REGISTRY

from kms import bulkhead, status
from kms.exceptions import KeyUnavailable
from kms.registry import get_provider
from kms.tests.servers import wait_until

pytestmark = pytest.mark.django_db


def _rejections(alias: str) -> float:
    return REGISTRY.get_sample_value("kms_bulkhead_rejections_total", {"provider": alias}) or 0.0


@pytest.fixture
def hung_vault(settings, black_hole):
    """A Vault Transit provider whose server accepts connections and never answers (one attempt, and a
    read timeout long enough that the held call is still hanging when the test makes its second one)."""
    settings.KMS_PROVIDERS = {
        **settings.KMS_PROVIDERS,
        "vault": {
            "BACKEND": "kms.providers.vault.VaultTransitKeyProvider",
            "OPTIONS": {
                "url": f"http://127.0.0.1:{black_hole.port}",
                "token": "erphub-test",
                "key": "blobs",
                "max_attempts": 1,
                "read_timeout": 120,
            },
        },
    }
    settings.KMS = {**settings.KMS, "MAX_CONCURRENT_CALLS": 1}
    return black_hole


def test_a_call_beyond_the_cap_fails_fast_while_another_hangs(hung_vault):
    provider = get_provider("vault")
    held: list[BaseException] = []

    def hang() -> None:
        try:
            provider.wrap(b"k" * 32, context={"blob_id": "held"})
        except KeyUnavailable as exc:
            held.append(exc)

    holder = threading.Thread(target=hang, daemon=True)
    holder.start()
    wait_until(lambda: len(hung_vault._held) >= 1, timeout=30, what="the first call to reach the KMS")
    before = _rejections("vault")
    with pytest.raises(KeyUnavailable, match="call slots of this process are busy") as refused:
        provider.wrap(b"k" * 32, context={"blob_id": "refused"})
    assert refused.value.status_code == 503
    assert refused.value.response_headers() == {"Retry-After": "30"}
    assert _rejections("vault") == before + 1
    assert status.latest("vault") is None  # a full bulkhead says nothing about the provider
    hung_vault.close()  # the KMS hangs up: the held call fails and gives its slot back
    holder.join(timeout=30)
    assert not holder.is_alive()
    assert len(held) == 1
    assert status.latest("vault").ok is False  # that failure is evidence: readiness says so at once
    assert len(hung_vault._held) == 1  # the refused call never reached the KMS


def test_zero_turns_the_cap_off(settings):
    settings.KMS = {**settings.KMS, "MAX_CONCURRENT_CALLS": 0}
    with bulkhead.slot("local"), bulkhead.slot("local"):
        pass


def test_a_negative_cap_is_refused(settings):
    settings.KMS = {**settings.KMS, "MAX_CONCURRENT_CALLS": -1}
    with pytest.raises(ImproperlyConfigured, match="MAX_CONCURRENT_CALLS"), bulkhead.slot("local"):
        pass
