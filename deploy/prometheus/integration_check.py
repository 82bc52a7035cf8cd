"""Integration check: a real Prometheus scrapes a live gunicorn and evaluates our recording rules and alerts.

Run by .ci/deploy-checks (needs Debian's `prometheus` binary and the project's virtualenv). Everything
listens on 127.0.0.1 and stops by itself (bounded waits, bounded traffic):

1. gunicorn (deploy/docker/serve.sh, two gthread workers, multiprocess metrics, METRICS_TOKEN, the master's
   metrics listener on METRICS_PORT) on SQLite, with KEY_PROVIDER=vault pointing at a loopback port where
   nothing listens: every key wrap fails;
2. Prometheus with deploy/prometheus/recording-rules.yml and alerts.yml (intervals shortened to 1 s) and the
   bearer-token scrape job of prometheus.yml, which scrapes the metrics listener as in production;
3. idle: the scrape is up (the token works), the error rate reads 0 and the KMS success rate 1, not NaN;
4. failing: N uploads, each one failed KMS attempt (KMS_MAX_ATTEMPTS=1): Prometheus must see exactly N
   failed attempts summed over both workers, a KMS success rate of 0 and KMSKeyRetrievalFailing pending;
5. downloads: blobs imported before the start under the local master key (still configured for unwrapping),
   one of them with its stored first segment altered: GOOD good downloads and BAD refused ones (integrity
   error), spread over several scrapes. The recording rules must read exactly what was sent: error rate
   BAD / (GOOD + BAD), the bytes of the good ones, nothing in progress, a p95 duration present, and
   BlobDownloadErrorRateHigh pending.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parents[2]
RULES = Path(__file__).resolve().parent
PYTHON = ROOT / ".venv" / "bin" / "python"
UPLOADS = 5
GOOD, BAD = 6, 2  # downloads that succeed and that fail their integrity check
BLOB_SIZE = 200_000
TIMEOUT = 60.0  # seconds any one wait may take


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310 (loopback URLs)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError, KeyError, IndexError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"integration check: timed out waiting for {what}")


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict[str, object]]:
        status, body = http(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if status != 200:
            raise ValueError(f"query {expr!r}: HTTP {status}")
        result: list[dict[str, object]] = json.loads(body)["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        if len(result) != 1:
            raise ValueError(f"{expr}: {len(result)} samples")
        return float(result[0]["value"][1])  # type: ignore[index]


def import_blobs(workdir: Path, env: dict[str, str]) -> tuple[str, str]:
    """Two blobs imported under the local master key; the second one's stored first segment is altered,
    so every download of it fails its integrity check before a byte is sent. Returns their ids."""
    ids = []
    for name in ("good.bin", "bad.bin"):
        path = workdir / name
        path.write_bytes(os.urandom(BLOB_SIZE))
        done = subprocess.run(
            [str(PYTHON), "manage.py", "blobs_import", str(path), "--owner", "admin"],
            cwd=ROOT,
            env={**env, "KEY_PROVIDER": "local"},
            check=True,
            capture_output=True,
            text=True,
        )
        ids.append(done.stdout.split("\t", 1)[0].strip())
    bad = uuid.UUID(ids[1]).hex
    (stored,) = (workdir / "var" / "blobs").glob(f"{bad[:2]}/{bad[2:4]}/{bad}")
    data = bytearray(stored.read_bytes())
    data[100] ^= 0x01  # inside the first segment's ciphertext (after the 40-byte header)
    stored.chmod(0o600)
    stored.write_bytes(bytes(data))
    return ids[0], ids[1]


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the session this script started for it
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="erp-hub-integration-"))
    app_port, metrics_port, prometheus_port = free_port(), free_port(), free_port()
    # Bound but never listening: connections to it are refused, so every Vault call fails at once.
    dead_kms = socket.socket()
    dead_kms.bind(("127.0.0.1", 0))
    token, password = secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    env = {
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ERPHUB_VAR_DIR": str(workdir / "var"),
        "METRICS_TOKEN": token,
        "KEY_PROVIDER": "vault",
        # The local provider stays configured for unwrapping: the blobs imported below are wrapped by it.
        "BLOB_MASTER_KEYS": "mk-check-1:" + base64.b64encode(os.urandom(32)).decode(),
        "VAULT_ADDR": f"http://127.0.0.1:{dead_kms.getsockname()[1]}",
        "VAULT_TOKEN": "integration-check",
        "VAULT_TRANSIT_KEY": "erphub",
        "KMS_MAX_ATTEMPTS": "1",
        "KMS_CONNECT_TIMEOUT": "1",
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_PASSWORD": password,
        "GUNICORN_BIND": f"127.0.0.1:{app_port}",
        "METRICS_PORT": str(metrics_port),
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "2",
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
    }
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[BinaryIO] = []
    try:
        for command in (["migrate", "--noinput"], ["bootstrap_admin"]):
            subprocess.run(
                [str(PYTHON), "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True
            )
        good_id, bad_id = import_blobs(workdir, env)
        app_log = (workdir / "app.log").open("wb")
        logs.append(app_log)
        processes.append(
            subprocess.Popen(
                [str(ROOT / "deploy" / "docker" / "serve.sh")],
                cwd=ROOT,
                env={**env, "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics")},
                stdout=app_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        app = f"http://127.0.0.1:{app_port}"
        wait_for("gunicorn /health", lambda: http(f"{app}/health")[0] == 200)
        listener = f"http://127.0.0.1:{metrics_port}/metrics"
        if http(listener)[0] != 401:
            raise SystemExit("integration check: the metrics listener answered a scrape without the token")

        (workdir / "token").write_text(token)
        for name in ("recording-rules.yml", "alerts.yml"):
            text = (RULES / name).read_text().replace("interval: 30s", "interval: 1s")
            (workdir / name).write_text(text)
        (workdir / "prometheus.yml").write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(workdir / "recording-rules.yml"), str(workdir / "alerts.yml")],
                    "scrape_configs": [
                        {
                            "job_name": "erp-hub",
                            "metrics_path": "/metrics",
                            "authorization": {"type": "Bearer", "credentials_file": str(workdir / "token")},
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                        }
                    ],
                }
            )
        )
        prometheus_log = (workdir / "prometheus.log").open("wb")
        logs.append(prometheus_log)
        processes.append(
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    "--log.level=warn",
                ],
                stdout=prometheus_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        prometheus = Prometheus(prometheus_port)
        wait_for("Prometheus ready", lambda: http(f"{prometheus.base}/-/ready")[0] == 200)

        # Idle: the scrape works with the token, and the ratios read their idle values.
        wait_for("the erp-hub target up", lambda: prometheus.value('up{job="erp-hub"}') == 1)
        wait_for("idle error rate 0", lambda: prometheus.value("erp_hub:blob_download:error_rate") == 0)
        wait_for("idle KMS success rate 1", lambda: prometheus.value("erp_hub:kms:success_rate") == 1)
        print(
            "idle: the metrics listener's target up with the bearer token (401 without); error rate 0, "
            "KMS success rate 1"
        )

        # Failing KMS: uploads spread over several scrapes, so that rate() sees the counter rise.
        _, body = http(
            f"{app}/api/token/",
            data=json.dumps({"username": "admin", "password": password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        access = json.loads(body)["access"]
        statuses = []
        for i in range(UPLOADS):
            status, _ = http(
                f"{app}/secure/files/?filename=check-{i}.bin",
                data=os.urandom(4096),
                headers={"Authorization": f"Bearer {access}", "Content-Type": "application/octet-stream"},
            )
            statuses.append(status)
            time.sleep(1.5)
        if any(status < 500 for status in statuses):
            raise SystemExit(f"integration check: uploads with an unreachable KMS answered {statuses}")

        def failed_attempts() -> float:
            return prometheus.value('sum(kms_calls_total{job="erp-hub",status!="success"})')

        wait_for(f"{UPLOADS} failed KMS attempts", lambda: failed_attempts() == UPLOADS)
        wait_for("KMS success rate 0", lambda: prometheus.value("erp_hub:kms:success_rate") == 0)
        wait_for(
            "KMSKeyRetrievalFailing pending",
            lambda: len(prometheus.query('ALERTS{alertname="KMSKeyRetrievalFailing"}')) == 1,
        )
        print(
            f"failing: {UPLOADS} uploads answered {sorted(set(statuses))}; Prometheus counts "
            f"{UPLOADS} failed KMS attempts over 2 workers, KMS success rate 0, "
            "KMSKeyRetrievalFailing pending"
        )

        # Downloads: good ones and ones whose first segment fails authentication, over several scrapes.
        statuses = []
        for i in range(GOOD + BAD):
            blob = bad_id if i % ((GOOD + BAD) // BAD) == 0 else good_id
            status, body = http(
                f"{app}/secure/files/{blob}/stream", headers={"Authorization": f"Bearer {access}"}
            )
            statuses.append(status)
            if status == 200 and len(body) != BLOB_SIZE:
                raise SystemExit(f"integration check: a good download sent {len(body)} of {BLOB_SIZE} bytes")
            time.sleep(1.0)
        if statuses.count(200) != GOOD or len(statuses) - statuses.count(200) != BAD:
            raise SystemExit(f"integration check: downloads answered {statuses}")

        def downloads(status: str) -> float:
            return prometheus.value(f'sum(file_downloads_total{{job="erp-hub",status="{status}"}})')

        wait_for(
            f"{GOOD} + {BAD} downloads scraped",
            lambda: (downloads("success"), downloads("error")) == (GOOD, BAD),
        )
        expected = BAD / (GOOD + BAD)
        wait_for(
            f"error rate {expected}",
            lambda: abs(prometheus.value("erp_hub:blob_download:error_rate") - expected) < 1e-9,
        )
        wait_for(
            "bytes of the good downloads",
            lambda: prometheus.value('sum(file_download_bytes_total{job="erp-hub"})') == GOOD * BLOB_SIZE,
        )
        wait_for("nothing in progress", lambda: prometheus.value("erp_hub:blob_download:active_count") == 0)
        wait_for("a p95 duration", lambda: len(prometheus.query("erp_hub:blob_download:latency_p95")) == 1)
        wait_for(
            "BlobDownloadErrorRateHigh pending",
            lambda: len(prometheus.query('ALERTS{alertname="BlobDownloadErrorRateHigh"}')) == 1,
        )
        print(
            f"downloads: {GOOD} good and {BAD} failing their integrity check; Prometheus reads error rate "
            f"{expected:.2f} (= {BAD}/{GOOD + BAD}), {GOOD * BLOB_SIZE} bytes, 0 in progress, a p95 "
            "duration, BlobDownloadErrorRateHigh pending"
        )
        return 0
    except (SystemExit, subprocess.CalledProcessError) as failure:
        for log in ("app.log", "prometheus.log"):
            path = workdir / log
            if path.exists():
                print(
                    f"--- {log} (last lines)\n" + "\n".join(path.read_text().splitlines()[-20:]),
                    file=sys.stderr,
                )
        if isinstance(failure, subprocess.CalledProcessError):
            print(failure.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
        raise
    finally:
        for process in reversed(processes):
            stop(process)
        for log_file in logs:
            log_file.close()
        dead_kms.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
