"""PostgreSQL connection pooling under the event worker (issue 14, issue 16's connection reuse with health
checks; architecture.md §12): each worker lends at most ``DATABASE_POOL_MAX_SIZE`` connections whatever the
number of concurrent requests, gives a download's connection back before its body streams (an aborted one
included: a connection kept by a dead greenlet would shrink the pool for good), and replaces a backend that
PostgreSQL terminated instead of failing the next request with it. The live cases run in the PostgreSQL suite
only; the configuration cases run anywhere."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from blobs.tests.liveserver import Gunicorn, serve
from erphub.tests.test_event_worker import PASSWORD, _connect, _read_response, _token, _upload
from erphub.tests.test_settings import start

WORKERS = 2
POOL_SIZE = 3
PROBE = (
    "import django; django.setup(); from django.conf import settings; d = settings.DATABASES['default']; "
    "print('POOL', json.dumps(d['OPTIONS'].get('pool'))); print('CHECKS', d['CONN_HEALTH_CHECKS'])"
)


# --- configuration ------------------------------------------------------------------------------------------


def _probe(tmp_path: Path, **env: str) -> tuple[dict | None, bool]:
    result = start(tmp_path, argv=("-c", "import json; " + PROBE), **env)
    assert result.returncode == 0, result.stderr
    lines = dict(
        line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("POOL", "CHECKS"))
    )
    return json.loads(lines["POOL"]), lines["CHECKS"] == "True"


def test_postgresql_gets_a_bounded_health_checked_pool_by_default(tmp_path):
    pool, checks = _probe(tmp_path, DATABASE_URL="postgres://erphub@db:5432/erphub")
    assert pool is not None
    assert (pool["min_size"], pool["max_size"], pool["timeout"]) == (2, 8, 10.0)
    assert checks


def test_the_pool_is_sized_from_the_environment_and_0_turns_it_off(tmp_path):
    url = "postgres://erphub@db:5432/erphub"
    pool, _ = _probe(
        tmp_path,
        DATABASE_URL=url,
        DATABASE_POOL_MAX_SIZE="1",
        DATABASE_POOL_MIN_SIZE="4",
        DATABASE_POOL_TIMEOUT="2.5",
    )
    assert pool is not None
    assert (pool["min_size"], pool["max_size"], pool["timeout"]) == (1, 1, 2.5)  # min never above max
    assert _probe(tmp_path, DATABASE_URL=url, DATABASE_POOL_MAX_SIZE="0")[0] is None
    assert _probe(tmp_path)[0] is None  # SQLite: no pool


def test_a_persistent_connection_age_with_the_pool_is_refused_with_the_fix(tmp_path):
    result = start(tmp_path, DATABASE_URL="postgres://erphub@db:5432/erphub", DATABASE_CONN_MAX_AGE="60")
    assert result.returncode != 0
    assert "DATABASE_CONN_MAX_AGE must be 0 with the connection pool" in result.stderr


# --- a live server on PostgreSQL ----------------------------------------------------------------------------


def _backends(database_url: str) -> int:
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [name]
        ).fetchone()
    return int(count)


def _terminate_backends(database_url: str) -> int:
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        ).fetchall()
    return len(rows)


def _request(server: Gunicorn, path: str, token: str, *, headers: str = "") -> int:
    with contextlib.closing(_connect(server)) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{headers}"
            "Connection: close\r\n\r\n".encode()
        )
        return _read_response(sock)[0]


def _abandon_download(server: Gunicorn, path: str, token: str) -> int:
    """Starts a whole download and resets the connection after its first bytes."""
    sock = _connect(server, rcvbuf=16 * 1024)
    try:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        status = int(sock.recv(12).split()[1])
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    return status


@pytest.fixture
def pooled(tmp_path, postgres_database):
    server, _ = serve(
        tmp_path,
        "pool",
        password=PASSWORD,
        key_id="pool-1",
        workers=WORKERS,
        DATABASE_URL=postgres_database,
        DATABASE_POOL_MAX_SIZE=str(POOL_SIZE),
        DATABASE_POOL_MIN_SIZE="1",
        BLOB_SEGMENT_SIZE=str(64 * 1024),
    )
    yield server, postgres_database
    server.stop()


@contextlib.contextmanager
def _peak_backends(database_url: str) -> Iterator[list[int]]:
    """Samples the server's backends (pg_stat_activity, this observer's own excluded) until the block ends;
    yields a list whose one item is the highest count seen."""
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not done.is_set():
                (count,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    [name],
                ).fetchone()
                peak[0] = max(peak[0], int(count))
                done.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def test_many_concurrent_requests_share_a_bounded_pool_and_aborted_downloads_give_theirs_back(pooled):
    server, database_url = pooled
    token = _token(server)
    blob_id = _upload(server, token, bytes(range(256)) * 8192)  # 2 MiB: a download outlives its view
    stream = f"/secure/files/{blob_id}/stream"

    def one(i: int) -> int:
        if i % 4 == 0:
            return _abandon_download(server, stream, token)
        if i % 4 == 1:
            return _request(server, f"/secure/files/{blob_id}/", token)
        return _request(server, stream, token, headers=f"Range: bytes={i}-{i}\r\n")

    with _peak_backends(database_url) as peak, ThreadPoolExecutor(64) as executor:
        statuses = list(executor.map(one, range(256)))
    assert sorted(set(statuses)) == [200, 206]
    assert 0 < peak[0] <= WORKERS * POOL_SIZE  # 64 at once, never more than the pools' size
    # 64 downloads were abandoned mid-body: had any kept its connection, the pools (3 each) would be empty
    # and these would wait out DATABASE_POOL_TIMEOUT and fail with 503.
    with ThreadPoolExecutor(16) as executor:
        after = list(executor.map(lambda i: _request(server, f"/secure/files/{blob_id}/", token), range(32)))
    assert after == [200] * 32
    assert _backends(database_url) <= WORKERS * POOL_SIZE


def test_a_terminated_backend_does_not_fail_the_next_request(pooled):
    server, database_url = pooled
    token = _token(server)
    blob_id = _upload(server, token, b"x" * 1000)
    # Warm both workers' pools, then kill every backend they hold.
    for _ in range(8):
        assert _request(server, f"/secure/files/{blob_id}/", token) == 200
    assert _terminate_backends(database_url) > 0
    statuses = [_request(server, f"/secure/files/{blob_id}/", token) for _ in range(8)]
    statuses += [
        _request(server, f"/secure/files/{blob_id}/stream", token, headers="Range: bytes=0-0\r\n")
        for _ in range(8)
    ]
    assert statuses == [200] * 8 + [206] * 8
