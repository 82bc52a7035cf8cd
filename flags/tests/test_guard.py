"""The rollout guard's decisions (flags.guard, manage.py rollout_guard), fast: Prometheus is a stub HTTP
server on 127.0.0.1 answering its HTTP API's JSON (a fake of an external server), the workers' multiprocess
metrics are written by real prometheus_client processes, and the clock is injected. At the end, the same
guard against a real Prometheus (Debian's binary) scraping a real gunicorn that is made to fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone
from prometheus_client import REGISTRY

from audit.models import AuditEvent
from blobs.tests.liveserver import (
    ROOT,
    Gunicorn,
    ServerError,
    free_port,
    manage,
    prepare_database,
    server_env,
)
from blobs.tests.liveserver import Session as LiveSession
from flags import guard
from flags.checks import check_flags_settings
from flags.guard import flag_guard, histogram_quantile
from flags.models import Flag

from .factories import make_flag

pytestmark = pytest.mark.django_db

ERROR_RATE = "erp_hub:blob_download:error_rate"
LATENCY_5M = "min_over_time(erp_hub:blob_download:latency_p95[300s])"
KMS = "erp_hub:kms:success_rate"
RECORDS = {
    "erp_hub:blob_download:error_rate": ERROR_RATE,
    "erp_hub:blob_download:latency_p95": LATENCY_5M,
    KMS: KMS,
}


def vector(*values: float) -> dict:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, str(v)]} for v in values]},
    }


class FakePrometheus:
    """``GET /api/v1/query?query=...`` answered from ``answers`` (query → value list, or status + body)."""

    def __init__(self) -> None:
        self.answers: dict[str, object] = {ERROR_RATE: [0.0], LATENCY_5M: [], KMS: [1.0]}
        self.queries: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query).get("query", [""])[0]
                fake.queries.append(query)
                answer = fake.answers.get(query)
                if answer is None:  # a hold query: the record's own answer, unless the test set one
                    record = next((r for r in RECORDS if r in query), None)
                    answer = fake.answers.get(RECORDS.get(record, ""), [])
                status, body = answer if isinstance(answer, tuple) else (200, vector(*answer))
                data = json.dumps(body).encode() if isinstance(body, dict) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def prometheus(settings) -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    settings.FLAGS = {**settings.FLAGS, "GUARD": {"PROMETHEUS_URL": fake.url, "MULTIPROC_DIR": None}}
    yield fake
    fake.close()


@pytest.fixture
def flag() -> Flag:
    return Flag.objects.get(name="secure_blob_streaming")


def runs(result: str) -> float:
    return REGISTRY.get_sample_value("rollout_guard_runs_total", {"result": result}) or 0.0


def run_command(*args: str) -> tuple[int, str]:
    """``manage.py rollout_guard``: its exit status and stdout."""
    from io import StringIO

    out = StringIO()
    try:
        call_command("rollout_guard", *args, stdout=out)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue()
    return 0, out.getvalue()


# --- trip or not ------------------------------------------------------------------------------------------


def test_healthy_prints_the_values_exits_0_and_changes_nothing(prometheus, flag):
    before = runs("healthy")
    code, out = run_command()
    assert code == 0
    assert "secure_blob_streaming: healthy" in out
    assert "download error rate 0.00 %" in out
    assert "KMS success rate 100.00 %" in out
    assert "P95 download latency n/a" in out  # no download finished: no sample, not a failure
    flag.refresh_from_db()
    assert not flag.kill_switch
    assert not AuditEvent.objects.filter(target_type="flag").exists()
    assert prometheus.queries == [ERROR_RATE, LATENCY_5M, KMS]
    assert runs("healthy") == before + 1


@pytest.mark.parametrize(
    ("query", "value", "trigger"),
    [
        (ERROR_RATE, 0.07, "error_rate"),
        (LATENCY_5M, 12.5, "latency_p95"),
        (KMS, 0.85, "kms_success_rate"),
    ],
)
def test_a_fired_trigger_trips_the_kill_switch_audited_with_its_value_and_query(
    prometheus, flag, caplog, query, value, trigger
):
    prometheus.answers[query] = [value]
    before = runs("tripped")
    with caplog.at_level(logging.ERROR, logger="flags.guard"):
        code, out = run_command()
    assert code == 1
    assert out == ""
    [line] = [r.getMessage() for r in caplog.records if r.name == "flags.guard"]
    assert "kill switch tripped" in line
    assert query in line
    flag.refresh_from_db()
    assert flag.kill_switch
    event = AuditEvent.objects.get(action="flag.kill_switch", target_id="secure_blob_streaming")
    assert event.actor == "system:rollout-guard"
    fired = [c for c in event.details["trigger"]["checks"] if c["fired"]]
    assert fired == [
        {
            "trigger": trigger,
            "value": value,
            "threshold": {"error_rate": 0.05, "latency_p95": 10.0, "kms_success_rate": 0.9}[trigger],
            "for_seconds": 300.0 if trigger == "latency_p95" else 0.0,
            "query": query,
            "fired": True,
        }
    ]
    assert event.details["trigger"]["source"] == f"prometheus {prometheus.url}"
    assert runs("tripped") == before + 1


def test_a_switch_already_on_records_nothing_new_and_still_fails(prometheus, flag, caplog):
    prometheus.answers[ERROR_RATE] = [0.5]
    assert run_command()[0] == 1
    with caplog.at_level(logging.ERROR, logger="flags.guard"):
        assert run_command()[0] == 1
    assert "kill switch already on" in caplog.records[-1].getMessage()
    assert AuditEvent.objects.filter(action="flag.kill_switch").count() == 1


def test_values_at_the_thresholds_do_not_trip(prometheus, flag):
    prometheus.answers.update({ERROR_RATE: [0.05], LATENCY_5M: [10.0], KMS: [0.9]})
    assert run_command()[0] == 0
    flag.refresh_from_db()
    assert not flag.kill_switch


def test_thresholds_and_windows_come_from_settings(prometheus, settings, flag):
    settings.FLAGS = {
        **settings.FLAGS,
        "GUARD": {
            **settings.FLAGS["GUARD"],
            "ERROR_RATE_MAX": 0.10,
            "ERROR_RATE_FOR_SECONDS": 120,
            "LATENCY_P95_FOR_SECONDS": 600,
            "KMS_SUCCESS_FOR_SECONDS": 60,
        },
    }
    windowed = {
        "min_over_time(erp_hub:blob_download:error_rate[120s])": [0.07],
        "min_over_time(erp_hub:blob_download:latency_p95[600s])": [3.0],
        "max_over_time(erp_hub:kms:success_rate[60s])": [0.99],
    }
    prometheus.answers.update(windowed)
    assert run_command()[0] == 0  # 7 % is under the configured 10 %
    assert prometheus.queries == list(windowed)
    assert not check_flags_settings()


def test_several_series_the_worst_decides(prometheus, flag):
    prometheus.answers[KMS] = [1.0, 0.5]
    assert run_command()[0] == 1


# --- metrics that cannot be read ------------------------------------------------------------------------


def test_unreachable_prometheus_does_not_trip_exits_2_with_one_log_line(settings, flag, caplog):
    settings.FLAGS = {**settings.FLAGS, "GUARD": {"PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"}}
    before = runs("unavailable")
    with caplog.at_level(logging.INFO):
        code, out = run_command()
    assert (code, out) == (2, "")
    lines = [r for r in caplog.records if r.name == "flags.guard"]
    assert len(lines) == 1
    assert lines[0].levelno == logging.ERROR
    assert "not guarded, metrics unavailable: Prometheus at http://127.0.0.1:" in lines[0].getMessage()
    assert "\n" not in lines[0].getMessage()
    flag.refresh_from_db()
    assert not flag.kill_switch
    assert not AuditEvent.objects.filter(target_type="flag").exists()
    assert runs("unavailable") == before + 1


@pytest.mark.parametrize("how", ["option", "setting"])
def test_fail_closed_trips_when_prometheus_cannot_be_reached(settings, flag, how):
    guard_settings = {"PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}", "FAIL_CLOSED": how == "setting"}
    settings.FLAGS = {**settings.FLAGS, "GUARD": guard_settings}
    code, _ = run_command(*(["--fail-closed"] if how == "option" else []))
    assert code == 1
    flag.refresh_from_db()
    assert flag.kill_switch
    event = AuditEvent.objects.get(action="flag.kill_switch")
    assert event.actor == "system:rollout-guard"
    assert "fail-closed" in event.details["reason"]
    assert event.details["trigger"]["fail_closed"] is True
    assert "ConnectionError" in event.details["trigger"]["error"]


@pytest.mark.parametrize(
    "answer",
    [
        [],  # the recording rule is not loaded: an idle-safe ratio always has a sample
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
        (200, b"<html>not prometheus</html>"),
        (503, b"unavailable"),
    ],
)
def test_a_broken_answer_is_unavailable_not_healthy(prometheus, flag, answer):
    prometheus.answers[ERROR_RATE] = answer
    assert run_command()[0] == 2
    flag.refresh_from_db()
    assert not flag.kill_switch


def test_nan_is_no_sample(prometheus, flag):
    prometheus.answers[LATENCY_5M] = [float("nan")]
    code, out = run_command()
    assert code == 0
    assert "P95 download latency n/a" in out


def test_no_source_at_all_is_unavailable(settings, flag):
    settings.FLAGS = {**settings.FLAGS, "GUARD": {"PROMETHEUS_URL": None, "MULTIPROC_DIR": None}}
    outcome = flag_guard(name="secure_blob_streaming")
    assert outcome.exit_code == 2
    assert "set PROMETHEUS_URL" in outcome.lines[0]


def test_a_bad_prometheus_url_is_a_system_check_error(settings):
    settings.FLAGS = {**settings.FLAGS, "GUARD": {"PROMETHEUS_URL": "prometheus:9090", "FAIL_CLOSED": "yes"}}
    assert {(e.id, "PROMETHEUS_URL" in e.msg or "FAIL_CLOSED" in e.msg) for e in check_flags_settings()} == {
        ("flags.E006", True)
    }


# --- --advance ----------------------------------------------------------------------------------------------


@pytest.fixture
def now(monkeypatch):
    moment = {"now": timezone.now()}
    monkeypatch.setattr(guard, "clock", lambda: moment["now"])
    return moment


def at_stage(*, beta: bool, basis_points: int, since) -> Flag:
    flag = make_flag("guarded", enabled=True, beta_enabled=beta, rollout_basis_points=basis_points)
    Flag.objects.filter(pk=flag.pk).update(changed_at=since)
    return flag


def test_advance_waits_for_the_hold_then_moves_exactly_one_stage(prometheus, now):
    start = now["now"]
    at_stage(beta=False, basis_points=0, since=start)  # Internal, hold 48 h

    now["now"] = start + timedelta(hours=47, minutes=59)
    code, out = run_command("--flag", "guarded", "--advance")
    assert code == 0
    assert "Internal since" in out
    assert "Beta from" in out
    assert not AuditEvent.objects.filter(action="flag.stage").exists()

    now["now"] = start + timedelta(hours=48)
    before = runs("advanced")
    code, out = run_command("--flag", "guarded", "--advance")
    assert code == 0
    assert "advanced Internal → Beta" in out
    flag = Flag.objects.get(name="guarded")
    assert (flag.beta_enabled, flag.rollout_basis_points) == (True, 0)
    event = AuditEvent.objects.get(action="flag.stage")
    assert event.actor == "system:rollout-guard"
    assert event.details["stage"] == "beta"
    assert event.details["skipped"] == []
    assert event.details["trigger"]["from_stage"] == "internal"
    assert {c["trigger"] for c in event.details["trigger"]["checks"]} == {
        "error_rate",
        "latency_p95",
        "kms_success_rate",
    }
    assert runs("advanced") == before + 1

    # The next run: Beta's own 72 h hold starts at that change (changed_at is now), so nothing moves.
    Flag.objects.filter(name="guarded").update(changed_at=now["now"])
    now["now"] += timedelta(hours=71)
    assert "Beta since" in run_command("--flag", "guarded", "--advance")[1]
    now["now"] += timedelta(hours=1)
    assert "advanced Beta → 25 %" in run_command("--flag", "guarded", "--advance")[1]
    assert Flag.objects.get(name="guarded").rollout_basis_points == 2_500


def test_a_trigger_during_the_hold_blocks_the_advance_even_if_healthy_now(prometheus, now):
    at_stage(beta=False, basis_points=0, since=now["now"] - timedelta(hours=50))
    hold = {
        "max_over_time(erp_hub:blob_download:error_rate[172800s])": [0.2],  # 48 h: Internal's hold
        "max_over_time(min_over_time(erp_hub:blob_download:latency_p95[300s])[172800s:1m])": [1.0],
        "min_over_time(erp_hub:kms:success_rate[172800s])": [1.0],
    }
    prometheus.answers.update(hold)
    code, out = run_command("--flag", "guarded", "--advance")
    assert code == 0
    assert "not advanced: a trigger held during Internal's hold: download error rate 20.00 %" in out
    assert prometheus.queries[3:] == list(hold)
    flag = Flag.objects.get(name="guarded")
    assert not flag.beta_enabled
    assert not flag.kill_switch  # the past is not a reason to trip now
    prometheus.answers["max_over_time(erp_hub:blob_download:error_rate[172800s])"] = [0.01]
    assert "advanced Internal → Beta" in run_command("--flag", "guarded", "--advance")[1]
    event = AuditEvent.objects.get(action="flag.stage")
    assert event.details["trigger"]["hold"]["checks"][0]["value"] == 0.01


def test_hold_times_are_configurable(prometheus, now, settings):
    settings.FLAGS = {**settings.FLAGS, "STAGE_HOLD_HOURS": {"25": 1}}
    at_stage(beta=True, basis_points=2_500, since=now["now"] - timedelta(hours=1))
    assert "advanced 25 % → 50 %" in run_command("--flag", "guarded", "--advance")[1]


def test_a_zero_hold_advances_at_once_without_reading_history(prometheus, now, settings):
    settings.FLAGS = {**settings.FLAGS, "STAGE_HOLD_HOURS": {"50": 0}}
    at_stage(beta=True, basis_points=5_000, since=now["now"])
    assert "advanced 50 % → 100 %" in run_command("--flag", "guarded", "--advance")[1]
    assert prometheus.queries == [ERROR_RATE, LATENCY_5M, KMS]


def test_a_state_between_stages_advances_to_the_next_stage_not_beyond(prometheus, now):
    at_stage(beta=True, basis_points=1_000, since=now["now"] - timedelta(days=30))  # 10 %: counts as Beta
    assert "advanced Beta → 25 %" in run_command("--flag", "guarded", "--advance")[1]


def test_advance_never_happens_when_a_trigger_fires(prometheus, now):
    at_stage(beta=False, basis_points=0, since=now["now"] - timedelta(days=30))
    prometheus.answers[ERROR_RATE] = [0.5]
    assert run_command("--flag", "guarded", "--advance")[0] == 1
    flag = Flag.objects.get(name="guarded")
    assert flag.kill_switch
    assert not flag.beta_enabled
    assert not AuditEvent.objects.filter(action="flag.stage").exists()


def test_advance_leaves_a_killed_or_disabled_flag_alone(prometheus, now):
    at_stage(beta=False, basis_points=0, since=now["now"] - timedelta(days=30))
    Flag.objects.filter(name="guarded").update(kill_switch=True)
    assert "kill switch is on; not advancing" in run_command("--flag", "guarded", "--advance")[1]
    Flag.objects.filter(name="guarded").update(kill_switch=False, enabled=False)
    assert "the flag is off; not advancing" in run_command("--flag", "guarded", "--advance")[1]
    assert not AuditEvent.objects.filter(action="flag.stage").exists()


def test_at_100_percent_it_says_when_the_flag_can_retire_and_never_retires(prometheus, now):
    since = now["now"]
    at_stage(beta=True, basis_points=10_000, since=since)
    now["now"] = since + timedelta(days=6)
    code, out = run_command("--flag", "guarded", "--advance")
    assert code == 0
    assert "may retire after 7 healthy days" in out
    now["now"] = since + timedelta(days=7)
    code, out = run_command("--flag", "guarded", "--advance")
    assert code == 0
    assert "it may retire" in out
    assert "never done here" in out
    assert not Flag.objects.get(name="guarded").retired
    # Without --advance a healthy run says it too.
    assert "the guard never retires by itself" in run_command("--flag", "guarded")[1]


def test_an_unknown_flag_is_a_command_error(prometheus):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No flag named 'nope'"):
        call_command("rollout_guard", "--flag", "nope")


# --- without PROMETHEUS_URL: the workers' multiprocess metrics ------------------------------------------

TRAFFIC = """
import sys
from prometheus_client import Counter, Histogram
downloads = Counter("file_downloads", "d", ["status"])
kms = Counter("kms_calls", "k", ["provider", "operation", "status"])
duration = Histogram("file_download_duration_seconds", "d", buckets=(0.5, 1.0, 10.0, 30.0))
ok, errors, kms_ok, kms_failed, seconds = (float(a) for a in sys.argv[1:])
downloads.labels(status="success").inc(ok)
downloads.labels(status="error").inc(errors)
kms.labels(provider="local", operation="unwrap", status="success").inc(kms_ok)
kms.labels(provider="local", operation="unwrap", status="unavailable").inc(kms_failed)
for _ in range(int(ok + errors)):
    duration.observe(seconds)
"""


def traffic(directory, ok=0, errors=0, kms_ok=0, kms_failed=0, seconds=0.1) -> None:
    """What a worker process writes: prometheus_client in multiprocess mode, a process of its own."""
    subprocess.run(
        [sys.executable, "-c", TRAFFIC, *(str(v) for v in (ok, errors, kms_ok, kms_failed, seconds))],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"},
        check=True,
    )


@pytest.fixture
def workers(settings, tmp_path, monkeypatch):
    directory = tmp_path / "metrics"
    directory.mkdir()
    settings.FLAGS = {
        **settings.FLAGS,
        "GUARD": {"PROMETHEUS_URL": None, "MULTIPROC_DIR": str(directory), "LOCAL_SAMPLE_SECONDS": 60},
    }
    # Hours of healthy history before the first sample: totals since start would hide a new failure.
    traffic(directory, ok=10_000, kms_ok=10_000)
    during: dict[str, float] = {}
    waited: list[float] = []

    def fake_sleep(seconds: float) -> None:  # "the interval passes": the workers serve `during`
        waited.append(seconds)
        traffic(directory, **during)

    monkeypatch.setattr(guard, "sleep", fake_sleep)
    return {"during": during, "waited": waited}


def test_local_metrics_healthy_over_the_interval(workers, flag):
    workers["during"].update(ok=100, errors=1, kms_ok=50, seconds=0.2)
    code, out = run_command()
    assert code == 0
    assert workers["waited"] == [60]
    assert "download error rate 0.99 %" in out
    assert "KMS success rate 100.00 %" in out
    assert "P95 download latency 0.475 s" in out  # linear inside the (0, 0.5] bucket, as Prometheus does
    assert "increase over 60 s" not in out  # the query is in the audit data, not the healthy line
    flag.refresh_from_db()
    assert not flag.kill_switch


def test_local_metrics_failing_over_the_interval_trip(workers, flag):
    workers["during"].update(ok=10, errors=5, kms_ok=1, kms_failed=9)
    assert run_command()[0] == 1
    event = AuditEvent.objects.get(action="flag.kill_switch")
    assert event.actor == "system:rollout-guard"
    checks = {c["trigger"]: c for c in event.details["trigger"]["checks"]}
    assert checks["error_rate"]["value"] == pytest.approx(5 / 15)  # not 5 / 10015: since the first sample
    assert checks["kms_success_rate"]["value"] == pytest.approx(0.1)
    assert checks["error_rate"]["query"] == "erp_hub:blob_download:error_rate (increase over 60 s)"


def test_local_metrics_idle_is_healthy(workers, flag):
    code, out = run_command()
    assert code == 0
    assert "download error rate 0.00 %" in out
    assert "P95 download latency n/a" in out


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ({}, None),
        ({0.5: 0, 1.0: 0, float("inf"): 0}, None),
        ({0.5: 100, 1.0: 100, float("inf"): 100}, 0.475),  # rank 95 of 100 inside (0, 0.5]
        ({0.5: 50, 1.0: 100, float("inf"): 100}, 0.95),  # rank 95: 45 of 50 into (0.5, 1]
        ({0.5: 0, 10.0: 0, 30.0: 10, float("inf"): 10}, 29.0),
        ({0.5: 0, 10.0: 0, float("inf"): 10}, 10.0),  # in +Inf: the highest finite bound
    ],
)
def test_histogram_quantile_as_prometheus_computes_it(buckets, expected):
    assert histogram_quantile(0.95, buckets) == (pytest.approx(expected) if expected is not None else None)


# --- a real Prometheus scraping a real gunicorn -----------------------------------------------------------

PROMETHEUS = shutil.which("prometheus")
RULES = ROOT / "deploy" / "prometheus" / "recording-rules.yml"
WAIT = 45.0  # seconds any one condition may take to show in Prometheus


def wait_until(what: str, check, logs: tuple[Path, ...] = ()) -> None:
    """Polls ``check`` (a condition in Prometheus or the app), up to WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError, KeyError, IndexError, requests.RequestException):
            pass
        time.sleep(0.25)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out waiting for {what}\n{tails}")


class RealPrometheus:
    def __init__(self, work: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = work / "recording-rules.yml"
        rules.write_text(RULES.read_text().replace("interval: 30s", "interval: 1s"))
        config = work / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rules)],
                    "scrape_configs": [{"job_name": "erp-hub", "static_configs": [{"targets": [target]}]}],
                }
            )
        )
        self.log = work / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={work / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def values(self, expr: str) -> list[float]:
        reply = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        return [float(r["value"][1]) for r in reply.json()["data"]["result"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the process this test started, by its handle
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def real_prometheus_and_gunicorn(tmp_path) -> Iterator[tuple[RealPrometheus, Gunicorn, dict[str, str]]]:
    if PROMETHEUS is None:
        if os.environ.get("REQUIRE_PROMETHEUS"):
            pytest.fail("REQUIRE_PROMETHEUS is set but Debian's prometheus is missing (.ci/run installs it)")
        pytest.skip("Debian's prometheus binary is not installed (apt-get install prometheus)")
    (tmp_path / "metrics").mkdir()
    password = secrets.token_urlsafe(18)
    env = server_env(
        tmp_path,
        username="guard-admin",
        password=password,
        key_id="guard-1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),  # /metrics sums both workers, as in production
    )
    prepare_database(env)
    with contextlib.ExitStack() as stack:
        server = Gunicorn.start(env, tmp_path / "gunicorn.log", timeout=60, name="guard")
        stack.callback(server.stop)
        server.password = password  # type: ignore[attr-defined]
        try:
            server.wait_until_healthy(30)
        except ServerError as exc:
            pytest.fail(str(exc))
        prometheus = RealPrometheus(tmp_path, f"{server.host}:{server.port}")
        stack.callback(prometheus.stop)
        logs = (prometheus.log, server.log_path)
        wait_until("the erp-hub target up", lambda: prometheus.values('up{job="erp-hub"}') == [1.0], logs)
        # Every download series exists from the first scrape (blobs.metrics), so rate() sees each increase.
        wait_until(
            "the download counters scraped",
            lambda: prometheus.values('count(file_downloads_total{job="erp-hub"})') == [3.0],
            logs,
        )
        yield prometheus, server, {**env, "PROMETHEUS_URL": prometheus.url}


def guard_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py rollout_guard`` as the CronJob runs it: its own process, the server's database."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "rollout_guard", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


STAGED_FLAG = """
from datetime import timedelta
from django.utils import timezone
from flags.models import Flag
Flag.objects.create(name="staged", enabled=True, changed_at=timezone.now() - timedelta(hours=49))
"""
AUDIT_OF_FLAG = """
import json
from audit.models import AuditEvent
from flags.models import Flag
flag = Flag.objects.get(name="secure_blob_streaming")
events = AuditEvent.objects.filter(target_type="flag", target_id=flag.name).order_by("sequence")
print(json.dumps({"kill_switch": flag.kill_switch,
                  "events": [{"action": e.action, "actor": e.actor, "details": e.details} for e in events]}))
"""


@pytest.mark.e2e
def test_the_guard_trips_on_real_prometheus_data_and_not_on_healthy_data(real_prometheus_and_gunicorn):
    prometheus, server, env = real_prometheus_and_gunicorn
    logs = (prometheus.log, server.log_path)
    session = LiveSession(server)
    session.login("guard-admin", server.password)  # type: ignore[attr-defined]
    blob_ids = []
    for i in range(4):
        reply = session.request(
            "POST",
            f"/secure/files/?filename=guard-{i}.bin",
            body=os.urandom(2048),
            headers={"Content-Type": "application/octet-stream", **session.csrf_headers()},
        )
        assert reply.status == 201, reply.body
        blob_ids.append(reply.json()["id"])

    # Healthy traffic: every download succeeds; Prometheus has seen them all and evaluated the rules.
    for blob_id in blob_ids * 2:
        assert session.request("GET", f"/secure/files/{blob_id}/stream").status == 200
    wait_until(
        "8 successful downloads in Prometheus",
        lambda: prometheus.values('sum(file_downloads_total{status="success"})') == [8.0],
        logs,
    )
    wait_until(
        "a P95 latency recorded", lambda: len(prometheus.values("erp_hub:blob_download:latency_p95")) == 1
    )
    healthy = guard_process(env)
    assert healthy.returncode == 0, healthy.stderr
    assert "secure_blob_streaming: healthy (prometheus http://127.0.0.1:" in healthy.stdout
    assert "download error rate 0.00 %" in healthy.stdout
    state = json.loads(manage(env, "shell", "-c", AUDIT_OF_FLAG).strip().splitlines()[-1])
    assert state == {"kill_switch": False, "events": []}

    # --advance on the same healthy data: the hold queries (subqueries over 48 h) run on the real Prometheus.
    manage(env, "shell", "-c", STAGED_FLAG)
    advanced = guard_process(env, "--flag", "staged", "--advance")
    assert advanced.returncode == 0, advanced.stderr
    assert "staged: advanced Internal → Beta." in advanced.stdout

    # Made to fail: every stored object is corrupted, so every download is refused (integrity error).
    from blobs.services import object_name

    storage = Path(env["BLOB_STORAGE_DIR"])
    for blob_id in blob_ids:
        path = storage / object_name(uuid.UUID(blob_id))
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01  # the last segment's tag
        path.write_bytes(bytes(data))
    for blob_id in blob_ids:
        assert session.request("GET", f"/secure/files/{blob_id}/stream").status >= 500
    wait_until(
        "the error rate above 5 % in Prometheus",
        lambda: prometheus.values("erp_hub:blob_download:error_rate > 0.05") != [],
        logs,
    )
    tripped = guard_process(env)
    assert tripped.returncode == 1, (tripped.stdout, tripped.stderr)
    assert tripped.stdout == ""
    # One log line (JSON in production) from the guard; the audit event is the other JSON line on stderr.
    records = [json.loads(ln) for ln in tripped.stderr.splitlines() if ln.startswith("{")]
    [line] = [r["event"] for r in records if r.get("logger") == "flags.guard"]
    assert [r["level"] for r in records if r.get("logger") == "flags.guard"] == ["error"]
    assert "kill switch tripped" in line
    assert "download error rate" in line
    assert "erp_hub:blob_download:error_rate" in line

    state = json.loads(manage(env, "shell", "-c", AUDIT_OF_FLAG).strip().splitlines()[-1])
    assert state["kill_switch"] is True
    [event] = state["events"]
    assert (event["action"], event["actor"]) == ("flag.kill_switch", "system:rollout-guard")
    checks = {c["trigger"]: c for c in event["details"]["trigger"]["checks"]}
    assert checks["error_rate"]["fired"] is True
    assert checks["error_rate"]["value"] == pytest.approx(4 / 12)  # 4 refused of 12 downloads in the window
    assert checks["error_rate"]["query"] == "erp_hub:blob_download:error_rate"
    assert checks["kms_success_rate"]["value"] == 1.0  # local keys: the KMS was never the problem

    # The running workers enforce it: the secure API answers 503 for everyone within seconds.
    wait_until(
        "the kill switch enforced", lambda: session.request("GET", "/secure/files/").status == 503, logs
    )
