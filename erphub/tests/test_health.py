"""``/health`` and ``/ready``: JSON bodies, the failing check named, and never a KMS call inline: what the
process last learned (real traffic, failures at once) and a background round-trip when nothing is recent."""

from __future__ import annotations

import pytest
from django.test import Client

from blobs.tests.factories import make_blob, make_user
from kms import health, status
from kms.registry import default_alias
from kms.tests.servers import free_port

pytestmark = pytest.mark.django_db


def test_health_is_200_json():
    r = Client().get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert "no-cache" in r["Cache-Control"]


def test_health_is_get_only():
    assert Client().post("/health").status_code == 405


def _settle() -> None:
    """Wait for the background round-trip a probe may have started (a real thread)."""
    thread = health.refreshing(default_alias())
    if thread is not None:
        thread.join(timeout=30)
        assert not thread.is_alive()


def _ready(client: Client | None = None):
    """A probe after the first one of a fresh process has had its background round-trip."""
    client = client or Client()
    first = client.get("/ready")
    _settle()
    return first, client.get("/ready")


def test_a_fresh_process_is_not_ready_until_its_background_check_ran(counted_wraps):
    first, second = _ready()
    assert first.status_code == 503
    assert first.json()["checks"]["kms"] == {
        "ok": False,
        "provider": "local",
        "checked_seconds_ago": None,
        "detail": "key provider not checked yet",
    }
    assert second.status_code == 200
    assert counted_wraps == ["local"]


def test_ready_when_everything_works():
    _, r = _ready()
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["storage"] == {"ok": True}
    assert body["checks"]["kms"]["ok"] is True
    assert body["checks"]["kms"]["provider"] == "local"
    assert "no-cache" in r["Cache-Control"]


def test_ready_is_503_naming_the_key_provider_when_the_master_key_is_missing(master_key_missing):
    _, r = _ready()
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
    _, r = _ready()
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["storage"]["ok"] is False
    assert "Blob storage failed" in checks["storage"]["detail"]
    assert checks["kms"]["ok"] is True


def test_ready_says_so_when_storage_is_below_its_free_space_floor(settings):
    # A floor above what the real filesystem has free: the same answer as a disk with 236 KiB left. Still
    # ready: downloads work, and the shared volume would take every pod out at once.
    settings.BLOBS = {**settings.BLOBS, "MIN_FREE_BYTES": 1 << 62}
    _, r = _ready()
    assert r.status_code == 200
    checks = r.json()["checks"]
    assert checks["storage"] == {"ok": True, "nearly_full": True, "detail": "free space below MIN_FREE_BYTES"}
    assert checks["kms"]["ok"] is True
    settings.BLOBS = {**settings.BLOBS, "MIN_FREE_BYTES": 0}  # 0 turns the floor off
    assert Client().get("/ready").json()["checks"]["storage"] == {"ok": True}


def test_ready_does_not_call_the_kms_on_every_probe(counted_wraps):
    client = Client()
    _ready(client)
    for _ in range(5):
        assert client.get("/ready").status_code == 200
    _settle()
    assert counted_wraps == ["local"]  # one round-trip, then the cached result


def test_an_upload_counts_as_a_successful_round_trip(counted_wraps):
    make_blob(make_user("u"), b"data")
    # The blob's data key, and the audit log's sealing key (audit/sealed.py: once per process and hour).
    assert counted_wraps == ["local", "local"]
    r = Client().get("/ready")
    assert r.status_code == 200
    _settle()
    assert counted_wraps == ["local", "local"]  # the upload's wrap was evidence enough


def test_a_failure_seen_by_traffic_makes_ready_fail_at_once(settings):
    # A cloud provider (no local key check to catch it) that worked a moment ago and is now unreachable:
    # nothing listens on its port, so each call fails at once.
    settings.KMS_PROVIDERS = {
        **settings.KMS_PROVIDERS,
        "vault": {
            "BACKEND": "kms.providers.vault.VaultTransitKeyProvider",
            "OPTIONS": {
                "url": f"http://127.0.0.1:{free_port()}",
                "token": "t",
                "key": "k",
                "max_attempts": 1,
            },
        },
    }
    settings.KMS_DEFAULT_PROVIDER = "vault"
    settings.KMS = {**settings.KMS, "HEALTH_TTL_SECONDS": 3600}
    health.record_success("vault")  # the last round-trip, well inside HEALTH_TTL_SECONDS
    assert Client().get("/ready").status_code == 200
    client = Client()
    client.force_login(make_user("u"))
    upload = client.post("/secure/files/?filename=x", data=b"x", content_type="application/octet-stream")
    assert upload.status_code == 503
    r = Client().get("/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["kms"]["detail"] == "key provider round-trip failed"


def test_a_stale_result_is_checked_again(counted_wraps, settings):
    settings.KMS = {**settings.KMS, "HEALTH_TTL_SECONDS": 0}
    client = Client()
    for _ in range(3):
        client.get("/ready")
        _settle()
    assert len(counted_wraps) == 3


def test_a_failing_kms_is_not_hammered_by_probes(master_key_missing, counted_wraps):
    client = Client()
    for _ in range(5):
        assert client.get("/ready").status_code == 503
        _settle()
    assert len(counted_wraps) == 1  # the failure is remembered briefly


def test_provider_health_with_an_injected_clock(counted_wraps, settings):
    settings.KMS = {**settings.KMS, "HEALTH_TTL_SECONDS": 60}
    now = [1000.0]

    def clock() -> float:
        return now[0]

    status.record_success("local", clock=clock)
    now[0] += 59
    cached = health.provider_health("local", clock=clock)
    assert cached.ok
    assert cached.age_seconds == pytest.approx(59)
    assert health.refreshing("local") is None
    now[0] += 2
    stale = health.provider_health("local", clock=clock)
    assert stale.ok  # the last result, while a refresh runs
    assert stale.age_seconds == pytest.approx(61)
    _settle()
    assert counted_wraps == ["local"]


def test_a_failure_is_checked_again_after_the_failure_ttl(counted_wraps):
    now = [0.0]

    def clock() -> float:
        return now[0]

    status.record_failure("local", "wrap failed: KeyUnavailable", clock=clock)
    now[0] += health.FAILURE_TTL_SECONDS - 0.1
    assert not health.provider_health("local", clock=clock).ok
    assert health.refreshing("local") is None
    now[0] += 0.2
    assert not health.provider_health("local", clock=clock).ok
    _settle()
    assert counted_wraps == ["local"]
    assert health.provider_health("local").ok  # the background round-trip worked
