"""The event-driven worker (erphub/event_worker.py): its limits, and a real gunicorn that keeps serving while
clients are slow on purpose.

The live servers run with short timeouts (1-2 s) so that the tests wait seconds, not the defaults' minutes.
Socket timeouts in these tests are failure bounds (a hung server fails the test instead of hanging it), not
measurements: speed is benchmarked in bench/bench_slow_clients.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blobs.tests.liveserver import Gunicorn, serve
from erphub.event_worker import EXEMPT_PATHS, Limits

PASSWORD = "event-worker-pass-1"
BOUND = 15.0  # seconds a socket operation may take before the test fails instead of hanging
SQLITE_POOL_SIZE = 2  # idle SQLite connections a worker of the `slow` server keeps (core/backends/sqlite3)


# --- the limits, without a server ------------------------------------------------------------------------


def test_limits_from_the_environment():
    limits = Limits.from_env(
        {
            "SERVER_HEADER_TIMEOUT": "2.5",
            "SERVER_IDLE_TIMEOUT": "30",
            "SERVER_MAX_CONNECTIONS": "10",
            "SERVER_MAX_CONNECTIONS_PER_ADDRESS": "3",
            "TRUSTED_PROXIES": "10.0.0.0/8, ::1",
        }
    )
    assert (limits.header_timeout, limits.idle_timeout) == (2.5, 30.0)
    assert (limits.max_connections, limits.max_connections_per_address) == (10, 3)
    assert Limits.from_env({}) == Limits()


@pytest.mark.parametrize(
    "env",
    [
        {"SERVER_HEADER_TIMEOUT": "soon"},
        {"SERVER_IDLE_TIMEOUT": "0"},
        {"SERVER_MAX_CONNECTIONS": "-1"},
        {"SERVER_MAX_CONNECTIONS_PER_ADDRESS": "2.5"},
        {"TRUSTED_PROXIES": "10.0.0.0/33"},
    ],
)
def test_bad_limits_refuse_to_start(env):
    with pytest.raises(RuntimeError, match=next(iter(env))):
        Limits.from_env(env)


def test_trusted_proxies_and_unix_sockets_are_not_counted_per_address():
    limits = Limits.from_env({"TRUSTED_PROXIES": "10.0.0.0/8"})
    assert limits.address_key(("10.1.2.3", 5000)) is None
    assert limits.address_key(("192.0.2.7", 5000)) == "192.0.2.7"
    assert limits.address_key(("::ffff:192.0.2.7", 5000, 0, 0)) == "::ffff:c000:207"
    assert limits.address_key("/run/app.sock") is None


def test_refusals_and_the_probes_exemption():
    limits = Limits(max_connections=2, max_connections_per_address=1)
    assert limits.refusal(path="/secure/files/", open_connections=2, from_address=1) is None
    busy = limits.refusal(path="/secure/files/", open_connections=3, from_address=1)
    assert busy is not None
    assert busy.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nRetry-After: " in busy
    assert b'"code": "server_busy"' in busy
    crowded = limits.refusal(path="/secure/files/", open_connections=2, from_address=2)
    assert crowded is not None
    assert crowded.startswith(b"HTTP/1.1 429 ")
    assert b"\r\nRetry-After: " in crowded
    for path in EXEMPT_PATHS:
        assert limits.refusal(path=path, open_connections=99, from_address=99) is None
    head, body = busy.split(b"\r\n\r\n", 1)
    assert json.loads(body)["detail"]
    assert f"Content-Length: {len(body)}".encode() in head


def test_the_exempt_paths_are_the_apps_probes():
    from django.urls import resolve

    for path in EXEMPT_PATHS:
        assert resolve(path).url_name in {"health", "ready", "metrics"}


# --- a live server ------------------------------------------------------------------------------------------


def _start(
    tmp_path: Path, name: str, *, workers: int = 2, **overrides: str
) -> tuple[Gunicorn, dict[str, str]]:
    var_dir = tmp_path / name
    var_dir.mkdir()
    return serve(var_dir, name, password=PASSWORD, key_id=f"{name}-1", workers=workers, **overrides)


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gunicorn, dict[str, str]]]:
    server, env = _start(
        tmp_path_factory.mktemp("event"),
        "slow",
        SERVER_HEADER_TIMEOUT="1",
        SERVER_IDLE_TIMEOUT="2",
        BLOB_SEGMENT_SIZE=str(256 * 1024),
        DATABASE_POOL_MAX_SIZE=str(SQLITE_POOL_SIZE),
    )
    yield server, env
    server.stop()


def _connect(server: Gunicorn, *, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(BOUND)
    sock.bind((source, 0))
    sock.connect((server.host, server.port))
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError(f"closed before the headers: {data!r}")
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("closed mid-body")
        body += more
    return int(lines[0].split()[1]), headers, body


def _get(server: Gunicorn, path: str, *, token: str | None = None, source: str = "127.0.0.1") -> int:
    with contextlib.closing(_connect(server, source=source)) as sock:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n".encode())
        return _read_response(sock)[0]


def _token(server: Gunicorn) -> str:
    body = json.dumps({"username": "admin", "password": PASSWORD}).encode()
    with contextlib.closing(_connect(server)) as sock:
        sock.sendall(
            b"POST /api/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        status, _, payload = _read_response(sock)
    assert status == 200, payload
    return str(json.loads(payload)["access"])


def _upload(server: Gunicorn, token: str, data: bytes) -> str:
    with contextlib.closing(_connect(server)) as sock:
        sock.sendall(
            b"POST /secure/files/?filename=data.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n".encode()
            + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        )
        sock.sendall(data)
        status, _, payload = _read_response(sock)
    assert status == 201, payload
    return str(json.loads(payload)["id"])


def _db_rows(env: dict[str, str], sql: str, *params: str) -> list[tuple]:
    db = Path(env["ERPHUB_VAR_DIR"]) / "db.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def _download_ends(env: dict[str, str], blob_id: str) -> list[dict]:
    rows = _db_rows(
        env,
        "SELECT outcome, details FROM audit_auditevent WHERE action = 'blob.download.end' "
        "AND target_id = ? ORDER BY sequence",
        blob_id,
    )
    return [{"outcome": outcome, **json.loads(details)} for outcome, details in rows]


def _wait_for(condition, what: str, bound: float = BOUND):
    deadline = time.monotonic() + bound
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {bound:.0f} s: {what}")
        time.sleep(0.05)
    return result


def _closed_without_answer(sock: socket.socket) -> bool:
    """The server closed (FIN, or RST when it closed with our bytes unread) without sending anything."""
    try:
        with contextlib.suppress(BrokenPipeError):
            sock.sendall(b"h")
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_slowloris_headers_are_cut_while_everyone_else_is_served(slow):
    server, _ = slow
    # Forty clients trickle a request line, a byte at a time, as slowly as they like. Under gthread (8
    # threads) they would hold every thread for as long as they keep trickling.
    trickling = [_connect(server) for _ in range(40)]
    try:
        for sock in trickling:
            sock.sendall(b"GET /heal")
        time.sleep(0.3)
        for sock in trickling:
            sock.sendall(b"t")
        assert _get(server, "/health") == 200
        assert _get(server, "/secure/files/", token=_token(server)) == 200
        # The header deadline (1 s) is total, not per byte: each trickler is closed without an answer.
        for sock in trickling:
            assert _closed_without_answer(sock)
    finally:
        for sock in trickling:
            sock.close()


MULTIPART_HEAD = (
    b'--stall\r\nContent-Disposition: form-data; name="file"; filename="stalled.bin"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_a_stalled_upload_body_gets_408_and_stores_nothing(slow, kind):
    server, env = slow
    token = _token(server)
    content_type, first = {
        "raw": ("application/octet-stream", b""),
        "multipart": ("multipart/form-data; boundary=stall", MULTIPART_HEAD),
    }[kind]
    with contextlib.closing(_connect(server)) as sock:
        sock.sendall(
            b"POST /secure/files/?filename=stalled.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Type: {content_type}\r\n".encode()
            + b"Content-Length: 10485760\r\n\r\n"
            + first
            + os.urandom(300 * 1024)
        )
        # ... and nothing more: the idle timeout (2 s) ends the upload.
        status, _headers, body = _read_response(sock)
    assert status == 408, body
    assert json.loads(body)["code"] == "request_timeout"
    assert _db_rows(env, "SELECT id FROM blobs_blob WHERE state != 'ready'") == []
    storage = Path(env["BLOB_STORAGE_DIR"])
    ready = {row[0] for row in _db_rows(env, "SELECT storage_name FROM blobs_blob")}
    stored = {str(p.relative_to(storage)) for p in storage.rglob("*") if p.is_file()}
    assert stored <= ready, stored - ready


def test_a_client_that_reads_nothing_is_cut_and_audited_aborted(slow):
    server, env = slow
    token = _token(server)
    size = 24 * 1024 * 1024  # far more than the kernel's socket buffers hold
    blob_id = _upload(server, token, random.Random(5).randbytes(size))
    with contextlib.closing(_connect(server, rcvbuf=32 * 1024)) as sock:
        sock.sendall(
            f"GET /secure/files/{blob_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        ends = _wait_for(lambda: _download_ends(env, blob_id), "the download's end event")
    (end,) = ends
    assert end["outcome"] == "aborted"
    assert 0 < end["bytes_sent"] < size


def test_a_slow_reader_gets_every_byte(slow):
    server, _ = slow
    token = _token(server)
    data = random.Random(6).randbytes(3 * 1024 * 1024 + 12345)
    blob_id = _upload(server, token, data)
    start, stop = 100_001, len(data) - 7
    with contextlib.closing(_connect(server, rcvbuf=16 * 1024)) as sock:
        sock.sendall(
            f"GET /secure/files/{blob_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nRange: bytes={start}-{stop - 1}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        received = bytearray()
        while more := sock.recv(16 * 1024):
            received += more
            if len(received) < 1024 * 1024:
                time.sleep(0.004)  # about 4 MB/s at first, below the whole-segment pace: pieces, not segments
    head, body = bytes(received).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 206 ")
    assert hashlib.sha256(body).digest() == hashlib.sha256(data[start:stop]).digest()


def _worker_db_handles(server: Gunicorn, env: dict[str, str]) -> int:
    db = str(Path(env["ERPHUB_VAR_DIR"]) / "db.sqlite3")
    count = 0
    for pid in server.worker_pids():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == db:
                    count += 1
    return count


@contextlib.contextmanager
def _downloads_in_progress(server: Gunicorn, count: int) -> Iterator[None]:
    """``count`` downloads streaming at once, each blocked on a client that reads nothing."""
    token = _token(server)
    blob_id = _upload(server, token, random.Random(7).randbytes(8 * 1024 * 1024))
    held = []
    try:
        for _ in range(count):
            sock = _connect(server, rcvbuf=16 * 1024)
            sock.sendall(
                f"GET /secure/files/{blob_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            assert sock.recv(12) == b"HTTP/1.1 200"
            held.append(sock)
        yield
    finally:
        for sock in held:
            sock.close()


def test_downloads_in_progress_hold_no_database_connection(slow):
    server, env = slow
    downloads = 24
    with _downloads_in_progress(server, downloads):
        # Each worker holds its pool's idle connections and the one it keeps open for the WAL's sake,
        # whatever the number of clients; a download that kept its connection would add one each.
        bound = len(server.worker_pids()) * (SQLITE_POOL_SIZE + 1)
        assert bound < downloads
        assert _worker_db_handles(server, env) <= bound


def test_on_postgresql_downloads_in_progress_hold_no_connection(tmp_path, postgres_database):
    import psycopg

    # Pools of 2 per worker (erphub/tests/test_db_pool.py): had the downloads kept their connections, the
    # pools would be empty and the request below would wait out DATABASE_POOL_TIMEOUT and fail with 503.
    server, _ = _start(
        tmp_path, "pg", DATABASE_URL=postgres_database, DATABASE_POOL_MAX_SIZE="2", DATABASE_POOL_TIMEOUT="5"
    )
    name = postgres_database.rsplit("/", 1)[1]
    try:
        with _downloads_in_progress(server, 24), psycopg.connect(postgres_database) as conn:
            (backends,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [name]
            ).fetchone()
            assert backends <= 4
            assert _get(server, "/secure/files/", token=_token(server)) == 200
    finally:
        server.stop()


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    # One worker, so that its caps are the server's (caps are per worker).
    server, _ = _start(
        tmp_path_factory.mktemp("event"),
        "capped",
        workers=1,
        SERVER_MAX_CONNECTIONS="4",
        SERVER_MAX_CONNECTIONS_PER_ADDRESS="2",
    )
    yield server
    server.stop()


def _open_keepalive(server: Gunicorn, source: str) -> socket.socket:
    """A connection the worker has accepted and served once, kept open."""
    sock = _connect(server, source=source)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert _read_response(sock)[0] == 200
    return sock


def test_connection_caps_answer_429_and_503_with_retry_after_and_never_refuse_probes(capped):
    server = capped
    token = _token(server)
    kept = [_open_keepalive(server, "127.0.0.1"), _open_keepalive(server, "127.0.0.1")]
    try:
        with contextlib.closing(_connect(server)) as sock:
            sock.sendall(
                f"GET /secure/files/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            )
            status, headers, body = _read_response(sock)
        assert status == 429
        assert int(headers["retry-after"]) > 0
        assert json.loads(body)["code"] == "too_many_connections"
        assert _get(server, "/health") == 200  # the probe from the same, full address

        kept += [_open_keepalive(server, "127.0.0.2"), _open_keepalive(server, "127.0.0.2")]
        with contextlib.closing(_connect(server, source="127.0.0.3")) as sock:
            sock.sendall(
                f"GET /secure/files/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            )
            status, headers, body = _read_response(sock)
        assert status == 503
        assert int(headers["retry-after"]) > 0
        assert json.loads(body)["code"] == "server_busy"
        # Answered by the app, never refused by the cap (ready or not: a fresh worker may not have checked its
        # key provider yet).
        with contextlib.closing(_connect(server, source="127.0.0.3")) as sock:
            sock.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            status, _, body = _read_response(sock)
        assert "checks" in json.loads(body), (status, body)  # the readiness document, not the cap's 503
        assert _get(server, "/health", source="127.0.0.3") == 200
    finally:
        for sock in kept:
            sock.close()
    # Capacity comes back as connections close.
    _wait_for(lambda: _get(server, "/secure/files/", token=token, source="127.0.0.3") == 200, "capacity")


def test_an_upload_arriving_slowly_holds_no_admission_turn(tmp_path):
    # One turn for the whole worker: were it held while the body trickles in (for up to the 30 s idle
    # timeout), nothing else could run meanwhile.
    server, _ = _start(
        tmp_path, "admission", workers=1, SERVER_MAX_ACTIVE_REQUESTS="1", SERVER_IDLE_TIMEOUT="30"
    )
    try:
        token = _token(server)
        with contextlib.closing(_connect(server)) as uploading:
            uploading.sendall(
                b"POST /secure/files/?filename=slow.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n".encode()
                + b"Content-Length: 1048576\r\n\r\n"
                + os.urandom(1024)
            )
            time.sleep(0.5)  # the upload's view is reading its body now
            for _ in range(3):
                assert _get(server, "/secure/files/", token=token) == 200
        assert _get(server, "/health") == 200
    finally:
        server.stop()
