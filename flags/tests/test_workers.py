"""A change made through the admin is enforced by every gunicorn worker within 5 seconds, without a restart.

A real gunicorn (2 gthread workers, erphub.gunicorn_conf, its own SQLite database and var dir) from the
suite's live-server harness. Each worker is reached over its own keep-alive connection; which worker holds a
connection is read from /proc (the server-side socket's inode among the worker's open files), so the test
knows it watches both workers — including the one that did not serve the admin's request. Runs twice: with
the stamp read from the database (no shared cache), and with Redis as the shared cache where redis-server
is installed.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from blobs.tests.liveserver import Gunicorn, ServerError, Session, free_port, prepare_database, server_env

pytestmark = pytest.mark.e2e

DEADLINE = 5.0  # docs/architecture.md §7: every worker within seconds
POLL = 0.05


def _inode_of_server_side(server_port: int, client_port: int) -> str | None:
    """The inode of the server's end of the loopback connection from ``client_port`` (from /proc/net/tcp)."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return fields[9]
    return None


def worker_of(server: Gunicorn, conn: http.client.HTTPConnection) -> int | None:
    inode = _inode_of_server_side(server.port, conn.sock.getsockname()[1])
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in server.worker_pids():
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd) == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def get(conn: http.client.HTTPConnection, path: str, cookies: str) -> int:
    conn.request("GET", path, headers={"Cookie": cookies, "Accept": "application/json"})
    with conn.getresponse() as response:
        response.read()
        return response.status


@pytest.fixture(params=["database", "redis"])
def server(request, tmp_path_factory) -> Iterator[Gunicorn]:
    var_dir = tmp_path_factory.mktemp("flags-workers")
    extra: dict[str, str] = {}
    if request.param == "redis":
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
    with contextlib.ExitStack() as stack:
        if request.param == "redis":
            port = free_port()
            redis = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(var_dir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(redis.wait, timeout=10)
            stack.callback(redis.terminate)
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            extra["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        password = secrets.token_urlsafe(18)
        env = server_env(var_dir, username="operator", password=password, key_id="flags-1", **extra)
        prepare_database(env)
        srv = Gunicorn.start(env, var_dir / "gunicorn.log", timeout=60, name="flags")
        stack.callback(srv.stop)
        srv.password = password  # type: ignore[attr-defined]
        try:
            srv.wait_until_healthy(30)
        except ServerError as exc:
            pytest.fail(str(exc))
        yield srv


def test_a_kill_switch_set_in_the_admin_reaches_both_workers_within_5_seconds(server):
    admin = Session(server)
    admin.login("operator", server.password)  # type: ignore[attr-defined]
    cookies = "; ".join(f"{k}={v}" for k, v in admin.cookies.items())

    # One warm keep-alive connection per worker: both have loaded the flag and answer 200.
    # A worker still booting (a loaded machine) accepts nothing yet: keep trying for a while, not N times.
    by_worker: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + 60
    while len(by_worker) < 2 and time.monotonic() < deadline:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        assert get(conn, "/secure/files/", cookies) == 200
        pid = worker_of(server, conn)
        if pid is not None and pid not in by_worker:
            by_worker[pid] = conn
        else:
            conn.close()
            time.sleep(POLL)
    if len(by_worker) < 2:
        for conn in by_worker.values():
            conn.close()
        pytest.fail("could not reach both workers within 60 s")

    changelist = admin.request("GET", "/admin/flags/flag/")
    flag_id = re.search(
        rb'href="/admin/flags/flag/(\d+)/change/">secure_blob_streaming<', changelist.body
    ).group(1)
    kill_path = f"/admin/flags/flag/{flag_id.decode()}/kill/"
    page = admin.request("GET", kill_path)
    version = re.search(rb'name="version" value="(\d+)"', page.body).group(1).decode()

    try:
        reply = admin.request(
            "POST",
            kill_path,
            body=urlencode({"version": version, "reason": "cross-worker proof"}),
            headers={"Content-Type": "application/x-www-form-urlencoded", **admin.csrf_headers()},
        )
        saved_at = time.monotonic()
        assert reply.status == 302, reply.body[:500]

        seen: dict[int, float] = {}
        while len(seen) < 2 and time.monotonic() - saved_at < DEADLINE + 1:
            for pid, conn in by_worker.items():
                if pid in seen:
                    continue
                status = get(conn, "/secure/files/", cookies)
                assert worker_of(server, conn) == pid  # still the same worker's connection
                if status == 503:
                    seen[pid] = time.monotonic() - saved_at
                else:
                    assert status == 200
            time.sleep(POLL)
        print(f"kill switch seen by workers after {sorted(round(t, 3) for t in seen.values())} s")
        assert len(seen) == 2, f"only {len(seen)} worker(s) saw the change within {DEADLINE} s"
        assert max(seen.values()) <= DEADLINE
    finally:
        for conn in by_worker.values():
            conn.close()
