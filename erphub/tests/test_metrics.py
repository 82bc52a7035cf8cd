"""``/metrics`` (architecture §6, §9): what a real download counts shows in the scrape, a bearer token guards
it, production without a token is warned about, and in multiprocess mode the scrape sums every worker."""

from __future__ import annotations

import json

import pytest
from django.core.checks import run_checks
from django.test import Client
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from blobs.tests.factories import make_blob, make_user
from erphub.tests.test_settings import start

UNWRAP_OK = {"provider": "local", "operation": "unwrap", "status": "success"}


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of sample ``name{labels}`` in an exposition; 0 when it is absent (a counter not yet used)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == (labels or {}):
                return s.value
    return 0.0


def families(text: str) -> set[str]:
    """Metric family names in an exposition (counters without their ``_total``)."""
    return {family.name for family in text_string_to_metric_families(text)}


def scrape(client: Client, **headers: str) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    assert response["Cache-Control"] == "no-store"
    return response.content.decode()


@pytest.mark.django_db
def test_a_download_shows_up_in_the_scrape():
    owner = make_user("owner")
    blob = make_blob(owner, b"x" * 5000)
    client = Client()
    client.force_login(owner)
    before = scrape(Client())  # anonymous: no token configured, no session needed
    response = client.get(f"/secure/files/{blob.pk}/stream")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"x" * 5000
    after = scrape(Client())
    # The blob's data key was never used for a download: one cache miss, one unwrap through the local KEK.
    assert sample(after, "kms_calls_total", UNWRAP_OK) == sample(before, "kms_calls_total", UNWRAP_OK) + 1
    assert sample(after, "dek_cache_misses_total") == sample(before, "dek_cache_misses_total") + 1
    # Every metric the product defines is exposed, used or not.
    assert {
        "kms_calls",
        "kms_call_duration_seconds",
        "dek_cache_hits",
        "dek_cache_misses",
        "audit_write_failures",
    } <= families(after)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Bearer ", "Basic czNjcmV0LXRva2Vu", "s3cret-token", "Bearer s3cret-tokenX"],
)
def test_with_a_token_anything_but_the_token_is_401(settings, authorization):
    settings.METRICS_TOKEN = "s3cret-token"
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {
        "detail": "A valid metrics bearer token is required.",
        "code": "not_authenticated",
    }
    assert b"kms_calls" not in response.content


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])  # RFC 9110 §11.1: the scheme is case-insensitive
def test_with_the_token_the_scrape_is_served(settings, scheme):
    settings.METRICS_TOKEN = "s3cret-token"
    assert "kms_calls" in families(scrape(Client(), Authorization=f"{scheme} s3cret-token"))


def test_only_get():
    assert Client().post("/metrics").status_code == 405


@pytest.mark.parametrize(
    ("debug", "token", "warned"),
    [(False, None, True), (False, "t", False), (True, None, False), (True, "t", False)],
)
def test_production_without_a_token_is_warned_about(settings, debug, token, warned):
    settings.DEBUG = debug
    settings.METRICS_TOKEN = token
    ids = [m.id for m in run_checks()]
    assert ("erphub.W001" in ids) is warned


def test_multiprocess_scrape_sums_the_workers(tmp_path):
    # Two "gunicorn workers" count a KMS call each into the multiprocess directory; a third process (a
    # scrape, answered by whichever worker) reports the sum, not its own zero.
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    work = (
        "import django; django.setup(); from kms.metrics import record_call; "
        "record_call(provider='local', operation='unwrap', status='success', seconds=0.001)"
    )
    for _ in range(2):
        result = start(tmp_path, argv=("-c", work), **env)
        assert result.returncode == 0, result.stderr
    assert len(list(multiproc.glob("counter_*.db"))) == 2  # one file per worker pid
    scraper = (
        "import django; django.setup(); from django.test import Client; "
        "r = Client(HTTP_HOST='localhost').get('/metrics'); print(r.status_code); print(r.content.decode())"
    )
    result = start(tmp_path, argv=("-c", scraper), **env)
    assert result.returncode == 0, result.stderr
    # stdout also carries the request's JSON access line (erphub.access_log): skip it.
    output = "\n".join(line for line in result.stdout.splitlines() if not line.startswith('{"'))
    status, _, text = output.partition("\n")
    assert status == "200"
    assert sample(text, "kms_calls_total", UNWRAP_OK) == 2
    assert sample(text, "kms_call_duration_seconds_count", {"provider": "local", "operation": "unwrap"}) == 2


def test_gunicorn_conf_marks_a_dead_worker(tmp_path):
    # A gauge with multiprocess_mode="livesum" written by a "worker"; child_exit drops that worker's file.
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    code = (
        "import os; from prometheus_client import Gauge; "
        "Gauge('g_live', 'x', multiprocess_mode='livesum').set(1); print(os.getpid())"
    )
    worker = start(tmp_path, argv=("-c", code), PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    assert worker.returncode == 0, worker.stderr
    pid = worker.stdout.strip()
    assert (multiproc / f"gauge_livesum_{pid}.db").exists()
    master = (
        f"from types import SimpleNamespace; from erphub.gunicorn_conf import child_exit; "
        f"child_exit(None, SimpleNamespace(pid={pid}))"
    )
    result = start(tmp_path, argv=("-c", master), PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    assert result.returncode == 0, result.stderr
    assert not (multiproc / f"gauge_livesum_{pid}.db").exists()


@pytest.mark.django_db
def test_request_database_and_cache_metrics_come_from_django_prometheus():
    from django.core.cache import cache

    owner = make_user("metrics-owner")
    client = Client()
    client.force_login(owner)
    before = scrape(Client())
    assert client.get("/secure/files/").status_code == 200
    cache.get("probe")
    after = scrape(Client())
    names = families(after)
    assert {"django_http_requests_before_middlewares", "django_db_execute", "django_cache_get"} <= names
    assert sample(after, "django_http_requests_before_middlewares_total") > sample(
        before, "django_http_requests_before_middlewares_total"
    )
    # The default cache without REDIS_URL (core.cache.LockedFileCache) counts as django-prometheus's own
    # file cache does.
    assert sample(after, "django_cache_get_total", {"backend": "filebased"}) > sample(
        before, "django_cache_get_total", {"backend": "filebased"}
    )
