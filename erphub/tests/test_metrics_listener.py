"""The dedicated metrics listener (``METRICS_PORT``, erphub/metrics_listener.py) in the gunicorn master.

A real gunicorn (gthread, 2 workers x 4 threads, multiprocess metrics, ``METRICS_TOKEN``): the listener
guards the scrape like ``/metrics``, sums both workers, and — its reason to exist — answers while every worker
thread is held by a download whose client reads nothing, when the app port cannot answer anything. The
workers do not inherit its socket, and it ends with the master. No timed assertions: the 250 ms target is
measured by bench/bench_metrics.py.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from blobs.tests.liveserver import (
    THREADS,
    WORKERS,
    Gunicorn,
    Holders,
    ServerError,
    free_port,
    prepare_database,
    server_env,
)
from blobs.tests.liveserver import Session as LiveSession
from erphub.metrics_listener import start_listener
from erphub.scrape import CONTENT_TYPE, bearer_token_matches

pytestmark = pytest.mark.e2e

TOKEN = secrets.token_urlsafe(24)
BLOB_SIZE = 48 * 1024 * 1024  # far more than the loopback socket buffers hold (tcp_wmem max 4 MiB)
WAIT = 60.0  # seconds any wait for the server may take before the test fails (not a timing assertion)


# --- a real gunicorn with METRICS_PORT ----------------------------------------------------------------------


@dataclass(kw_only=True)
class Server(Gunicorn):
    metrics_port: int
    multiproc_dir: Path
    username: str
    password: str

    def listener(self, path: str = "/metrics", *, token: str | None = TOKEN, method: str = "GET") -> Reply:
        return fetch(self.host, self.metrics_port, path, token=token, method=method)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def fetch(
    host: str, port: int, path: str, *, token: str | None = TOKEN, method: str = "GET", timeout: float = WAIT
) -> Reply:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
        with conn.getresponse() as response:
            return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def value(text: bytes, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def start_server(var_dir: Path, **overrides: str | None) -> tuple[Server, dict[str, str]]:
    """Migrates and starts a server in ``var_dir``; an override ``None`` removes that variable."""
    username, password = "metrics-admin", secrets.token_urlsafe(18)
    env = server_env(var_dir, username=username, password=password, key_id="ml-1")
    for name, setting in overrides.items():
        if setting is None:
            env.pop(name, None)
        else:
            env[name] = setting
    prepare_database(env)
    server = Server.start(
        env,
        var_dir / "gunicorn.log",
        timeout=120,
        name="metrics-listener",
        # The listener's reason to exist is a worker with every thread busy: that is the gthread mode (the
        # event worker has no threads to exhaust, and the listener serves it the same way).
        mode="gthread",
        worker_connections=THREADS,  # every held download on a thread, none queued behind a full worker
        metrics_port=int(port) if (port := env.get("METRICS_PORT", "")).isdigit() else 0,
        multiproc_dir=Path(env.get("PROMETHEUS_MULTIPROC_DIR", var_dir)),
        username=username,
        password=password,
    )
    return server, env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    var_dir = tmp_path_factory.mktemp("metrics-listener")
    (var_dir / "prometheus").mkdir()
    srv, _ = start_server(
        var_dir,
        PROMETHEUS_MULTIPROC_DIR=str(var_dir / "prometheus"),
        METRICS_TOKEN=TOKEN,
        METRICS_PORT=str(free_port()),
    )
    try:
        try:
            srv.wait_until_healthy(WAIT)
        except ServerError as exc:
            pytest.fail(str(exc))
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cookie(server: Server) -> str:
    session = LiveSession(server, timeout=WAIT)
    session.login(server.username, server.password)
    return session.headers()["Cookie"]


@pytest.fixture(scope="module")
def blob_path(server: Server, cookie: str) -> str:
    session = LiveSession(server, timeout=WAIT)
    session.login(server.username, server.password)
    reply = session.request(
        "POST",
        "/secure/files/?filename=big.bin",
        body=os.urandom(BLOB_SIZE),
        headers={"Content-Type": "application/octet-stream", **session.csrf_headers()},
    )
    assert reply.status == 201, reply.body[:300]
    return f"/secure/files/{json.loads(reply.body)['id']}/stream"


# --- holding every worker thread ---------------------------------------------------------------------------


@pytest.fixture
def holders(server: Server, blob_path: str, cookie: str) -> Iterator[Holders]:
    held = Holders(server, blob_path, cookie)
    try:
        yield held
    finally:
        held.close()
        # Back to idle before the next test: every held thread freed, nothing left in progress.
        wait_for(lambda: value(server.listener().body, "file_download_in_progress") == 0)


def wait_for(check, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --- the live server ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_the_listener_refuses_a_scrape_without_the_token(server, token):
    reply = server.listener(token=token)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert reply.headers["Cache-Control"] == "no-store"
    assert json.loads(reply.body) == {
        "detail": "A valid metrics bearer token is required.",
        "code": "not_authenticated",
    }


def test_the_listener_serves_the_token_holder_the_exposition(server):
    reply = server.listener()
    assert reply.status == 200
    assert reply.headers["Content-Type"] == CONTENT_TYPE
    assert reply.headers["Cache-Control"] == "no-store"
    assert {"file_download_bytes", "file_download_in_progress", "dek_cache_hits"} <= {
        family.name for family in text_string_to_metric_families(reply.body.decode())
    }


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/", 404), ("GET", "/health", 404), ("GET", "/metrics/", 404), ("POST", "/metrics", 405),
     ("HEAD", "/metrics", 405), ("DELETE", "/metrics", 405)],
)  # fmt: skip
def test_the_listener_serves_only_get_metrics(server, method, path, status):
    assert server.listener(path, method=method).status == status


def test_the_listener_answers_while_every_worker_thread_is_streaming(server, holders):
    threads = WORKERS * THREADS
    holders.hold_every_thread(threads)
    # Each worker has THREADS threads, so `threads` downloads in progress span both workers: the listener's
    # gauge is the sum of both workers' files.
    wait_for(lambda: value(server.listener().body, "file_download_in_progress") == threads)
    scrape = server.listener()
    assert scrape.status == 200
    assert value(scrape.body, "file_download_in_progress") == threads
    # The app port meanwhile: every thread is blocked in send, so nothing there is answered — not even
    # /health (it is accepted and queued; it would be answered once a download ends).
    with pytest.raises(TimeoutError):
        fetch(server.host, server.port, "/health", timeout=1.0)


def test_the_listener_sums_both_workers_like_the_app_port(server, holders):
    holders.hold_every_thread(WORKERS * THREADS)
    # Both workers have written samples (one file per worker pid and kind).
    pids_in_files = {path.stem.rsplit("_", 1)[1] for path in server.multiproc_dir.glob("*.db")}
    assert {str(pid) for pid in server.worker_pids()} <= pids_in_files
    holders.close()
    wait_for(lambda: value(server.listener().body, "file_download_in_progress") == 0)
    assert value(server.listener().body, "file_downloads_total", status="aborted") >= WORKERS * THREADS
    # The same files summed by the same code: every download and KMS sample is the same on both ports. (A
    # download queued behind the held ones may still end meanwhile: compare once the counts are settled.)
    interesting = ("file_download", "kms_", "dek_cache")

    def ours_and_apps_agree() -> bool:
        app = fetch(server.host, server.port, "/metrics").body
        ours = server.listener().body
        return {k: v for k, v in samples(ours).items() if k[0].startswith(interesting)} == {
            k: v for k, v in samples(app).items() if k[0].startswith(interesting)
        }

    wait_for(ours_and_apps_agree)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _listening_inode(port: int) -> str:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
            return fields[9]
    raise AssertionError(f"nothing listens on port {port}")


def test_the_workers_do_not_inherit_the_listener(server):
    # The workers are forked after the listener started: they must not keep its socket (nor the port, once
    # the master is gone). The app's own socket, by contrast, is shared with them on purpose.
    workers = server.worker_pids()
    assert len(workers) == WORKERS
    listener, app = _listening_inode(server.metrics_port), _listening_inode(server.port)
    assert listener in _socket_inodes(server.proc.pid)
    for pid in workers:
        assert listener not in _socket_inodes(pid)
        assert app in _socket_inodes(pid)


# --- start-up and shutdown ----------------------------------------------------------------------------------


def test_the_listener_stops_with_the_master(tmp_path):
    (tmp_path / "prometheus").mkdir()
    srv, _ = start_server(
        tmp_path, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"), METRICS_PORT=str(free_port())
    )
    try:
        srv.wait_until_healthy(WAIT)
        assert srv.listener(token=None).status == 200  # no METRICS_TOKEN: open, like /metrics
    finally:
        srv.stop()
    assert srv.proc.returncode == 0
    with pytest.raises(ConnectionRefusedError):
        fetch(srv.host, srv.metrics_port, "/metrics")
    with pytest.raises(ProcessLookupError):  # nothing is left of the server's session: master, workers
        os.killpg(srv.proc.pid, 0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"METRICS_PORT": "metrics"}, "METRICS_PORT='metrics' is not a TCP port number"),
        ({"METRICS_PORT": "PORT_IN_USE"}, "Address already in use"),
        ({"METRICS_PORT": "FREE", "PROMETHEUS_MULTIPROC_DIR": None}, "needs PROMETHEUS_MULTIPROC_DIR"),
    ],
)
def test_a_misconfigured_listener_stops_the_server_at_start(tmp_path, overrides, message):
    (tmp_path / "prometheus").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = {"PORT_IN_USE": str(taken.getsockname()[1]), "FREE": str(free_port())}
        env: dict[str, str | None] = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
        env.update({name: ports.get(value, value) if value else value for name, value in overrides.items()})
        srv, _ = start_server(tmp_path, **env)
        try:
            srv.proc.wait(timeout=WAIT)
        finally:
            srv.stop()
    assert srv.proc.returncode != 0
    assert message in srv.log_tail()


# --- in process: the listener alone -------------------------------------------------------------------------


def test_a_forked_child_gets_no_copy_of_the_listener(tmp_path):
    listener = start_listener("127.0.0.1", 0, token=TOKEN, multiproc_dir=str(tmp_path))
    try:
        pid = os.fork()
        if pid == 0:  # the child: the listener's socket must be closed here, and only here
            os._exit(0 if listener.socket.fileno() == -1 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert fetch("127.0.0.1", listener.port, "/metrics").status == 200  # the parent's still serves
    finally:
        listener.shutdown()
        listener.server_close()


@pytest.mark.parametrize(
    ("authorization", "matches"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),  # RFC 9110 §11.1: the scheme is case-insensitive
        ("BEARER  s3cret ", True),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        ("Bearer s3cre", False),
        ("Bearer s3cretX", False),
        ("Basic czNjcmV0", False),
        ("s3cret", False),
    ],
)
def test_the_bearer_check_both_ports_share(authorization, matches):
    assert bearer_token_matches(authorization, "s3cret") is matches


def test_a_scrape_during_a_worker_restart_is_never_partial_or_double_counted(server, holders):
    # A worker dies (kill -9) while every thread streams; gunicorn starts another. Every scrape meanwhile
    # must show totals that neither fall (the dead worker's counters stay) nor jump (nothing counted twice),
    # and the dead worker's downloads leave the in-progress gauge (child_exit drops its live samples).
    threads = WORKERS * THREADS
    holders.hold_every_thread(threads)
    wait_for(lambda: value(server.listener().body, "file_download_in_progress") == threads)
    before = server.listener().body

    def totals(text: bytes) -> tuple[float, float]:
        ended = sum(value(text, "file_downloads_total", status=s) for s in ("success", "aborted", "error"))
        return ended, value(text, "file_download_bytes_total")

    ended_before, bytes_before = totals(before)
    workers = server.worker_pids()
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    seen_in_progress = set()
    deadline = time.monotonic() + WAIT
    while True:
        scrape = server.listener().body
        ended, sent = totals(scrape)
        assert ended == ended_before  # nothing ended: held downloads of the survivor are still open
        assert sent >= bytes_before  # the dead worker's bytes stay counted, never reset
        seen_in_progress.add(value(scrape, "file_download_in_progress"))
        replaced = len(server.worker_pids() - {victim}) == WORKERS
        if replaced and value(scrape, "file_download_in_progress") < threads:
            break
        assert time.monotonic() < deadline, "the worker was not replaced"
        time.sleep(0.05)
    survivors_in_progress = value(server.listener().body, "file_download_in_progress")
    assert 0 < survivors_in_progress < threads
    assert seen_in_progress <= {float(threads), survivors_in_progress}  # never a partial or doubled sum
    holders.close()
    # The survivor's downloads end as aborted; the gauge returns to zero.
    wait_for(lambda: value(server.listener().body, "file_download_in_progress") == 0)
    ended_after, _ = totals(server.listener().body)
    assert ended_after >= ended_before + survivors_in_progress
