"""``/health`` and ``/ready``: JSON bodies, the failing check named, and no KMS call on every probe."""

from __future__ import annotations

import pytest
from django.test import Client

from blobs.tests.factories import make_blob, make_user
from kms import health

pytestmark = pytest.mark.django_db


def test_health_is_200_json():
    r = Client().get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert "no-cache" in r["Cache-Control"]


def test_health_is_get_only():
    assert Client().post("/health").status_code == 405


def test_ready_when_everything_works():
    r = Client().get("/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["storage"] == {"ok": True}
    assert body["checks"]["kms"]["ok"] is True
    assert body["checks"]["kms"]["provider"] == "local"
    assert "no-cache" in r["Cache-Control"]


def test_ready_is_503_naming_the_key_provider_when_the_master_key_is_missing(master_key_missing):
    r = Client().get("/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["kms"]["ok"] is False
    assert body["checks"]["kms"]["detail"] == "key provider round-trip failed"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["storage"]["ok"] is True
    assert "gone.key" not in r.content.decode()  # no paths or key ids in a public body


def test_ready_is_503_naming_storage_when_it_cannot_take_writes(settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(blocker / "blobs")},
        },
    }
    r = Client().get("/ready")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["storage"]["ok"] is False
    assert "Blob storage failed" in checks["storage"]["detail"]
    assert checks["kms"]["ok"] is True


def test_ready_does_not_call_the_kms_on_every_probe(counted_wraps):
    client = Client()
    for _ in range(5):
        assert client.get("/ready").status_code == 200
    assert counted_wraps == ["local"]  # one round-trip, then the cached result


def test_an_upload_counts_as_a_successful_round_trip(counted_wraps):
    make_blob(make_user("u"), b"data")
    # The blob's data key, and the audit log's sealing key (audit/sealed.py: once per process and hour).
    assert counted_wraps == ["local", "local"]
    r = Client().get("/ready")
    assert r.status_code == 200
    assert counted_wraps == ["local", "local"]  # the upload's wrap was evidence enough


def test_a_stale_result_is_checked_again(counted_wraps, settings):
    settings.KMS = {**settings.KMS, "HEALTH_TTL_SECONDS": 0}
    client = Client()
    for _ in range(3):
        client.get("/ready")
    assert len(counted_wraps) == 3


def test_a_failing_kms_is_not_hammered_by_probes(master_key_missing, counted_wraps):
    client = Client()
    for _ in range(5):
        assert client.get("/ready").status_code == 503
    assert len(counted_wraps) == 1  # the failure is remembered briefly


def test_provider_health_with_an_injected_clock(counted_wraps, settings):
    settings.KMS = {**settings.KMS, "HEALTH_TTL_SECONDS": 60}
    now = [1000.0]

    def clock() -> float:
        return now[0]

    assert health.provider_health("local", clock=clock).ok
    now[0] += 59
    cached = health.provider_health("local", clock=clock)
    assert cached.ok
    assert cached.age_seconds == pytest.approx(59)
    assert len(counted_wraps) == 1
    now[0] += 2
    assert health.provider_health("local", clock=clock).age_seconds == 0
    assert len(counted_wraps) == 2


def test_recovery_after_the_failure_ttl(master_key_missing, counted_wraps, settings):
    now = [0.0]

    def clock() -> float:
        return now[0]

    assert not health.provider_health("local", clock=clock).ok
    now[0] += health.FAILURE_TTL_SECONDS - 0.1
    assert not health.provider_health("local", clock=clock).ok
    assert len(counted_wraps) == 1
    settings.KMS_PROVIDERS = {
        "local": {
            "BACKEND": "kms.providers.local.LocalKeyProvider",
            "OPTIONS": {"keys": "mk-back:" + "A" * 43 + "="},
        }
    }
    now[0] += 0.2
    assert health.provider_health("local", clock=clock).ok
    assert len(counted_wraps) == 2
