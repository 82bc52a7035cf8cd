"""PostgreSQL restarting under a live gunicorn (issue 16: "in-flight requests fail cleanly and the next ones
succeed without restarting the app").

The test owns its PostgreSQL (core/tests/postgres_server.py: initdb into a temporary directory, its own
port), so it runs in both suites and never touches the machine's service. A gunicorn (event worker, 2
workers) serves downloads, ranged reads, uploads and metadata from four client threads while PostgreSQL
goes down (fast shutdown), stays down for a moment and comes back on the same port. Every request answers
either as usual, or 503 ``database_unavailable`` with Retry-After, or — a download whose headers were
already sent — ends short of its Content-Length; never a 500. Afterwards the same worker processes serve
again, every ready blob decrypts to its SHA-256, no object is left without a row (a ``pending`` row an
upload cut by the outage leaves is blobs_gc's to remove), and the audit chain verifies.

Run with the default connection pool (every worker holds pooled connections the restart breaks; the pool's
health check must replace them) and without it (``DATABASE_POOL_MAX_SIZE=0``: a connection per request).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest

from blobs.tests.liveserver import Gunicorn, ServerError, Session, manage, prepare_database, server_env
from core.tests import postgres_server
from core.tests.postgres_server import PostgresServer

pytestmark = pytest.mark.e2e

SEGMENT_SIZE = 65536
SIZE = 4 * 1024 * 1024 + 77
DOWN_SECONDS = 1.0  # how long PostgreSQL stays stopped: requests arrive while nothing answers on its port
HTTP_TIMEOUT = 30.0
USERNAME = "admin"


@dataclass
class Outcome:
    kind: str
    started: float
    status: int | None  # None: no status line (the connection failed before one)
    body: bytes
    headers: http.client.HTTPMessage | None
    cut: bool  # the body ended before its Content-Length
    ok: bool  # answered as when nothing is wrong
    finished: float = field(default_factory=time.monotonic)  # made when the answer is in


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    binaries = postgres_server.bin_dir()
    if binaries is None:
        if postgres_server.REQUIRED:
            pytest.fail("initdb/postgres are not installed (REQUIRE_POSTGRES_SERVER=1: install postgresql)")
        pytest.skip("initdb/postgres are not installed")
    server = PostgresServer(binaries)
    try:
        server.start()
        server.execute('CREATE DATABASE "erphub"')
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def env(postgres, tmp_path_factory) -> dict[str, str]:
    """A migrated database with a superuser on the private PostgreSQL; the server's environment."""
    var_dir = tmp_path_factory.mktemp("pg-restart")
    environment = server_env(
        var_dir,
        username=USERNAME,
        password=secrets.token_urlsafe(18),
        key_id="pgr-1",
        DATABASE_URL=postgres.url("erphub"),
        AUDIT_SIGNING_KEY=base64.b64encode(os.urandom(32)).decode(),
        BLOB_SEGMENT_SIZE=str(SEGMENT_SIZE),
    )
    try:
        prepare_database(environment)
    except ServerError as exc:
        pytest.fail(str(exc))
    return environment


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(16).randbytes(SIZE)


def request(session: Session, kind: str, method: str, path: str, **kwargs) -> Outcome:
    """One request on a fresh connection; a body that ends early is recorded (``cut``), not raised."""
    started = time.monotonic()
    conn = session.connection()
    try:
        try:
            conn.request(method, path, headers=session.headers(kwargs.pop("headers", None)), **kwargs)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException):
            return Outcome(kind, started, None, b"", None, cut=False, ok=False)
        with response:
            try:
                body, cut = response.read(), False
            except http.client.IncompleteRead as exc:
                body, cut = exc.partial, True
            except OSError:
                body, cut = b"", True
        return Outcome(kind, started, response.status, body, response.headers, cut=cut, ok=False)
    finally:
        conn.close()


def upload(session: Session, payload: bytes) -> Outcome:
    outcome = request(
        session,
        "upload",
        "POST",
        f"/secure/files/?{urlencode({'filename': 'during-restart.bin'})}",
        body=payload,
        headers={"Content-Type": "application/octet-stream", **session.csrf_headers()},
    )
    if outcome.status == 201 and not outcome.cut:
        outcome.ok = json.loads(outcome.body)["sha256"] == hashlib.sha256(payload).hexdigest()
    return outcome


def traffic(session: Session, blob_id: str, data: bytes, n: int) -> Outcome:
    """The n-th request of a client: a full download, a ranged read, metadata or an upload, in turn."""
    rng = random.Random(n)
    stream = f"/secure/files/{blob_id}/stream"
    kind = ("full", "range", "metadata", "upload")[n % 4]
    if kind == "full":
        outcome = request(session, kind, "GET", stream)
        outcome.ok = outcome.status == 200 and outcome.body == data
    elif kind == "range":
        start = rng.randrange(SIZE - 200_000)
        stop = start + rng.randrange(1, 200_000)
        outcome = request(session, kind, "GET", stream, headers={"Range": f"bytes={start}-{stop - 1}"})
        outcome.ok = outcome.status == 206 and outcome.body == data[start:stop]
    elif kind == "metadata":
        outcome = request(session, kind, "GET", f"/secure/files/{blob_id}/")
        outcome.ok = outcome.status == 200 and json.loads(outcome.body)["size"] == SIZE
    else:
        outcome = upload(session, rng.randbytes(150_000 + n))
    return outcome


def assert_clean(outcome: Outcome) -> None:
    """Not as usual, so an outage's answer: 503 database_unavailable with Retry-After, or a download whose
    status line was already sent (200/206) ending short. Never a 500 page or a connection refused."""
    described = (outcome.kind, outcome.status, outcome.cut, outcome.body[:300])
    if outcome.status == 503:
        assert not outcome.cut, described
        assert json.loads(outcome.body)["code"] == "database_unavailable", described
        assert outcome.headers is not None, described
        assert int(outcome.headers["Retry-After"]) > 0, described
    else:
        assert outcome.kind in ("full", "range"), described
        assert outcome.status in (200, 206), described
        assert outcome.cut, described
        assert b"Traceback" not in outcome.body, described


def pids(server: Gunicorn) -> set[int]:
    return {server.proc.pid, *server.worker_pids()}


@pytest.mark.parametrize("pool_max_size", ["4", "0"], ids=["pool", "no-pool"])
def test_postgresql_restarting_fails_only_what_was_in_flight(postgres, env, data, pool_max_size, tmp_path):
    server_environment = {**env, "DATABASE_POOL_MAX_SIZE": pool_max_size}
    server = Gunicorn.start(server_environment, tmp_path / "gunicorn.log", timeout=60, name="pg-restart")
    try:
        server.wait_until_healthy(60)
        sessions = [Session(server, timeout=HTTP_TIMEOUT) for _ in range(4)]
        for session in sessions:
            session.login(USERNAME, env["DJANGO_SUPERUSER_PASSWORD"])
        first = upload(sessions[0], data)
        assert first.ok, first
        blob_id = json.loads(first.body)["id"]
        for n in range(8):  # every kind on both workers before the restart
            assert traffic(sessions[n % 4], blob_id, data, n).ok
        workers = pids(server)
        assert len(workers) == 3, workers  # the master and its 2 workers

        stop = threading.Event()
        outcomes: list[Outcome] = []

        def client(index: int) -> None:
            n = index
            while not stop.is_set():
                outcomes.append(traffic(sessions[index], blob_id, data, n))
                n += 4

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)  # traffic before the restart
            went_down = time.monotonic()
            postgres.stop()  # fast shutdown: every open connection of the app is closed under it
            time.sleep(DOWN_SECONDS)
            postgres.start()
            came_back = time.monotonic()
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)

        failed = [o for o in outcomes if not o.ok]
        counts = Counter((o.kind, o.status, "cut" if o.cut else "whole") for o in failed)
        print(f"pool {pool_max_size}: {len(outcomes)} requests, {len(failed)} failed: {dict(counts)}")
        for outcome in failed:
            assert_clean(outcome)
        # The outage was seen by what was in flight while PostgreSQL was stopped.
        during = [o for o in outcomes if o.started < came_back and o.finished > went_down + 0.2]
        assert during, "no request was in flight while PostgreSQL was down"
        seen = [(o.kind, o.status, round(o.finished - came_back, 2)) for o in during]
        if pool_max_size == "0":  # a request that cannot connect fails at once: 503
            assert any(o.status == 503 for o in during), seen
        else:
            # A request asking the pool for a connection waits for one (up to DATABASE_POOL_TIMEOUT, 10 s)
            # while the pool reconnects: an outage shorter than that delays what was in flight rather than
            # failing it (or fails it cleanly, above, if its connection broke under a query).
            assert any(o.status == 503 or o.finished >= came_back for o in during), seen

        # No restart of the app: the same processes answer, and the next requests succeed. A request that
        # started while PostgreSQL was coming back may still fail (a clean 503); the ones after it reconnect.
        retried = 0
        for session in sessions:
            for _ in range(10):
                outcome = traffic(session, blob_id, data, 2)
                if outcome.ok:
                    break
                assert_clean(outcome)
                retried += 1
        print(f"requests failed after PostgreSQL was back, before one succeeded per client: {retried}")
        after = [traffic(sessions[n % 4], blob_id, data, n) for n in range(16)]
        assert [(o.kind, o.ok) for o in after] == [(o.kind, True) for o in after], [
            (o.kind, o.status, o.body[:200]) for o in after if not o.ok
        ]
        assert pids(server) == workers
    finally:
        server.stop()

    assert_store_consistent(server_environment)
    out = manage(server_environment, "audit_verify", "--full", timeout=120)  # raises unless it exits 0
    assert out.startswith("ok: "), out


def assert_store_consistent(environment: dict[str, str]) -> None:
    """Every ready blob decrypts to its SHA-256 (blobs_verify exits non-zero otherwise); no object is left
    that no row names (blobs_gc finds no orphan); a pending row is allowed: blobs_gc removes it."""
    verified = manage(environment, "blobs_verify", timeout=120)
    total = re.search(r"^total\t(\d+)\t(\d+)$", verified, re.MULTILINE)
    assert total, verified
    assert int(total.group(2)) == 0, verified
    removed = manage(environment, "blobs_gc", "--older-than", "0", timeout=120)
    match = re.search(r"removed (\d+) pending row\(s\) and (\d+) orphan object\(s\)", removed)
    assert match, removed
    print(f"ready blobs verified: {total.group(1)}; blobs_gc: {removed.strip()}")
    assert match.group(2) == "0", removed
