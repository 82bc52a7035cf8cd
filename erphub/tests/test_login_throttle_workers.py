"""The login lockout holds across gunicorn workers without Redis (`make run`'s default: two workers, the file
cache under var/cache). With a per-process cache each worker counted alone: 10 allowed failures became 20."""

from __future__ import annotations

import http.client
import json
import secrets
import time
from collections.abc import Iterator

import pytest

from blobs.tests.liveserver import Gunicorn, ServerError, serve
from flags.tests.test_workers import worker_of

pytestmark = pytest.mark.e2e

FAILURES = 10  # the default LOGIN_THROTTLE_FAILURES


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Gunicorn]:
    password = secrets.token_urlsafe(18)
    try:
        srv, _env = serve(
            tmp_path_factory.mktemp("lockout"), "lockout", username="admin", password=password, key_id="l-1"
        )
    except ServerError as exc:
        pytest.fail(str(exc))
    srv.password = password  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.stop()


def token(conn: http.client.HTTPConnection, password: str) -> int:
    body = json.dumps({"username": "admin", "password": password})
    conn.request("POST", "/api/token/", body=body, headers={"Content-Type": "application/json"})
    with conn.getresponse() as response:
        response.read()
        return response.status


def one_connection_per_worker(server: Gunicorn) -> dict[int, http.client.HTTPConnection]:
    """Keep-alive connections, one held by each of the two workers (found through /proc)."""
    by_worker: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + 60
    while len(by_worker) < 2 and time.monotonic() < deadline:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        conn.request("GET", "/health")
        with conn.getresponse() as response:
            response.read()
        pid = worker_of(server, conn)
        if pid is not None and pid not in by_worker:
            by_worker[pid] = conn
        else:
            conn.close()
            time.sleep(0.05)
    if len(by_worker) < 2:
        for conn in by_worker.values():
            conn.close()
        pytest.fail("could not reach both workers within 60 s")
    return by_worker


def test_ten_wrong_passwords_spread_over_both_workers_lock_the_account(server):
    conns = list(one_connection_per_worker(server).values())
    try:
        # Half the guesses through each worker: each alone has seen only 5.
        for attempt in range(FAILURES):
            assert token(conns[attempt % 2], "wrong") == 401
        # The right password is refused by both: the count is shared.
        assert [token(conn, server.password) for conn in conns] == [429, 429]  # type: ignore[attr-defined]
    finally:
        for conn in conns:
            conn.close()
