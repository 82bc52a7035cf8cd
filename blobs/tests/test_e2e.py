"""End to end: a real gunicorn (gthread, ``--no-sendfile``) serving the blob endpoints over loopback.

The server runs in its own environment — a fresh var dir, its own SQLite file, a generated master key and
64 KiB segments, so a few MiB are dozens of segments — and never touches the test database (CI runs the
suite a second time with ``DATABASE_URL`` pointing at PostgreSQL; that variable is not passed on).
Clients are the standard library's ``http.client`` and raw sockets, plus ``curl`` where it is installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import random
import re
import secrets
import shutil
import socket
import sqlite3
import struct
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audit.chain import verify_chain
from blobs.crypto import StreamParams
from blobs.tests.liveserver import Gunicorn, Reply, ServerError, prepare_database, server_env
from blobs.tests.liveserver import Session as LiveSession

pytestmark = pytest.mark.e2e

SEGMENT_SIZE = 65536
PARAMS = StreamParams(segment_size=SEGMENT_SIZE)
SIZE = 3 * 1024 * 1024 + 123  # ~49 segments of 64 KiB, the last one short
READY_TIMEOUT = 30.0
HTTP_TIMEOUT = 30.0


# --- the server ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Server(Gunicorn):
    storage_dir: Path
    username: str
    password: str
    #: Values that must never reach a log: the master keys and the Django secret key it was started with.
    never_logged: tuple[str, ...] = ()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    var_dir = tmp_path_factory.mktemp("e2e-var")
    username, password = "e2e-admin", secrets.token_urlsafe(18)
    (var_dir / "prometheus").mkdir()
    env = server_env(
        var_dir,
        username=username,
        password=password,
        key_id="e2e-1",
        BLOB_SEGMENT_SIZE=str(SEGMENT_SIZE),
        PROMETHEUS_MULTIPROC_DIR=str(var_dir / "prometheus"),  # as `make run`: /metrics sums the workers
    )
    prepare_database(env)
    srv = Server.start(
        env,
        var_dir / "gunicorn.log",
        timeout=120,
        access_log=True,
        name="e2e",
        storage_dir=Path(env["BLOB_STORAGE_DIR"]),
        username=username,
        password=password,
        never_logged=(env["BLOB_MASTER_KEYS"].split(":", 1)[1], env["DJANGO_SECRET_KEY"]),
    )
    try:
        try:
            srv.wait_until_healthy(READY_TIMEOUT)
        except ServerError as exc:
            pytest.fail(str(exc))
        yield srv
    finally:
        srv.stop()


# --- a small cookie-keeping client --------------------------------------------------------------------------


class Session(LiveSession):
    def upload_multipart(self, data: bytes, filename: str) -> Reply:
        boundary = f"e2e-{uuid.uuid4().hex}"
        body = b"".join(
            [
                f"--{boundary}\r\n".encode(),
                f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
                b"Content-Type: application/octet-stream\r\n\r\n",
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        return self.request(
            "POST",
            "/secure/files/",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **self.csrf_headers()},
        )


def stream_path(blob_id: str) -> str:
    return f"/secure/files/{blob_id}/stream"


def deterministic(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def plaintext_start(segment: int) -> int:
    """Plaintext offset where ``segment`` begins (architecture §3: segment 0 shares room with the header)."""
    return 0 if segment == 0 else PARAMS.first_segment_plaintext + (segment - 1) * PARAMS.segment_plaintext


@pytest.fixture(scope="module")
def session(server: Server) -> Session:
    client = Session(server, timeout=HTTP_TIMEOUT)
    client.login(server.username, server.password)
    return client


@pytest.fixture(scope="module")
def data() -> bytes:
    return deterministic(SIZE, seed=20240601)


@pytest.fixture(scope="module")
def blob(session: Session, data: bytes) -> dict:
    reply = session.upload_multipart(data, "report.bin")
    assert reply.status == 201, reply.body[:500]
    return reply.json()


# --- uploads ------------------------------------------------------------------------------------------------


def test_multipart_upload_spans_many_segments(session, blob, data):
    assert blob["size"] == len(data)
    assert blob["sha256"] == hashlib.sha256(data).hexdigest()
    assert blob["filename"] == "report.bin"
    assert PARAMS.segment_count(len(data)) > 40
    meta = session.request("GET", f"/secure/files/{blob['id']}/")
    assert meta.status == 200
    assert meta.json()["size"] == len(data)


def test_chunked_raw_upload_is_read_to_eof(session, server, data):
    piece = 100_003  # odd-sized chunks: their borders never line up with segments

    def chunks() -> Iterator[bytes]:
        for offset in range(0, len(data), piece):
            yield data[offset : offset + piece]

    conn = session.connection()
    try:
        conn.request(
            "POST",
            "/secure/files/?filename=chunked.bin",
            body=chunks(),
            encode_chunked=True,
            headers=session.headers(
                {
                    "Content-Type": "application/octet-stream",
                    "Transfer-Encoding": "chunked",
                    **session.csrf_headers(),
                }
            ),
        )
        with conn.getresponse() as response:
            status, payload = response.status, response.read()
    finally:
        conn.close()
    assert status == 201, payload[:500]
    created = json.loads(payload)
    assert created["size"] == len(data), "a chunked body must be read to EOF, not stored as empty"
    assert created["sha256"] == hashlib.sha256(data).hexdigest()
    assert created["filename"] == "chunked.bin"
    download = session.request("GET", stream_path(created["id"]))
    assert download.status == 200
    assert download.body == data


def test_concurrent_uploads_all_land(session):
    # Both workers, several threads each, writing rows into one SQLite file (WAL, IMMEDIATE: architecture §8).
    payloads = [deterministic(512 * 1024 + n, seed=n) for n in range(8)]
    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        replies = list(pool.map(lambda data: session.upload_multipart(data, "parallel.bin"), payloads))
    assert [reply.status for reply in replies] == [201] * len(payloads), [r.body[:200] for r in replies]
    for data, reply in zip(payloads, replies, strict=True):
        assert reply.json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert session.request("GET", stream_path(reply.json()["id"])).body == data


# --- downloads ----------------------------------------------------------------------------------------------


def test_whole_download(session, blob, data):
    reply = session.request("GET", stream_path(blob["id"]))
    assert reply.status == 200
    assert reply.headers["Content-Length"] == str(len(data))
    assert reply.headers["Accept-Ranges"] == "bytes"
    assert reply.headers["ETag"].startswith('"')
    assert "Content-Range" not in reply.headers
    assert reply.body == data


def test_resume_from_offset_with_if_range(session, blob, data):
    first = session.request("GET", stream_path(blob["id"]))
    etag = first.headers["ETag"]
    offset = 1_234_567  # inside a segment, not at a border
    prefix = first.body[:offset]  # what an interrupted download kept
    url = stream_path(blob["id"])
    reply = session.request("GET", url, headers={"Range": f"bytes={offset}-", "If-Range": etag})
    assert reply.status == 206
    assert reply.headers["Content-Range"] == f"bytes {offset}-{len(data) - 1}/{len(data)}"
    assert reply.headers["Content-Length"] == str(len(data) - offset)
    assert reply.headers["ETag"] == etag
    assert prefix + reply.body == data
    # A stale validator: the range is ignored and the whole representation comes back (RFC 9110 §13.1.5).
    stale = session.request("GET", url, headers={"Range": f"bytes={offset}-", "If-Range": '"x"'})
    assert stale.status == 200
    assert stale.body == data


def test_parallel_ranges_reassemble(session, blob, data):
    parts = 8
    step = len(data) // parts + 1
    spans = [(start, min(start + step, len(data))) for start in range(0, len(data), step)]
    assert len(spans) == parts

    def fetch(span: tuple[int, int]) -> Reply:
        start, stop = span
        return session.request("GET", stream_path(blob["id"]), headers={"Range": f"bytes={start}-{stop - 1}"})

    with ThreadPoolExecutor(max_workers=parts) as pool:
        replies = list(pool.map(fetch, spans))
    for (start, stop), reply in zip(spans, replies, strict=True):
        assert reply.status == 206
        assert reply.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(data)}"
        assert len(reply.body) == stop - start
    assert b"".join(reply.body for reply in replies) == data


def _audit_rows(server: Server) -> list[dict]:
    """The server's audit log, read-only straight from its SQLite file, in the hashed form."""
    db = server.storage_dir.parent / "db.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(row) for row in conn.execute("SELECT * FROM audit_auditevent ORDER BY sequence")]
    for row in rows:
        row["timestamp"] = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC)
        row["details"] = json.loads(row["details"])
    return rows


def test_concurrent_range_requests_are_all_audited_in_one_valid_chain(server, session, blob, data):
    # Both workers x 4 threads each write a start and an end event per request into one SQLite file:
    # WAL, busy timeout and BEGIN IMMEDIATE queue them (architecture.md §8); none fails "database is locked".
    requests = 48
    size = len(data)

    def fetch(n: int) -> tuple[int, Reply]:
        start = (n * 65_537) % (size - 1000)
        headers = {"Range": f"bytes={start}-{start + 999}", "X-Request-ID": f"e2e-audit-{n}"}
        return start, session.request("GET", stream_path(blob["id"]), headers=headers)

    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(fetch, range(requests)))
    for start, reply in replies:
        assert reply.status == 206
        assert reply.body == data[start : start + 1000]
        assert reply.headers["X-Request-ID"].startswith("e2e-audit-")
    # The end event is written when the server's body iterator finishes, which may be just after the client
    # has read the last byte: poll for it.
    deadline = time.monotonic() + 30
    while True:
        rows = _audit_rows(server)
        ours = [r for r in rows if r["request_id"].startswith("e2e-audit-")]
        ends = [r for r in ours if r["action"] == "blob.download.end"]
        if len(ends) >= requests or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for n in range(requests):
        mine = {(r["action"], r["outcome"]) for r in ours if r["request_id"] == f"e2e-audit-{n}"}
        assert mine == {("blob.download.start", "success"), ("blob.download.end", "success")}, n
    assert all(r["details"]["bytes_sent"] == 1000 for r in ends)
    report = verify_chain(rows)
    assert report.ok, report
    log = server.log_path.read_text(errors="replace")
    assert "database is locked" not in log
    assert "AUDIT EVENT NOT WRITTEN" not in log


def _multipart_parts(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    assert match, content_type
    delimiter = b"--" + match.group(1).encode()
    # RFC 2046 §5.1.1: a delimiter is CRLF "--" boundary; the first one's CRLF is optional.
    preamble, *chunks = (body if body.startswith(b"\r\n") else b"\r\n" + body).split(b"\r\n" + delimiter)
    assert preamble == b"", "nothing may precede the first delimiter"
    assert chunks[-1] in (b"--", b"--\r\n"), "the body must close with the final delimiter"
    parts = []
    for chunk in chunks[:-1]:
        head, _, payload = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload))
    return parts


def test_multi_range_is_multipart_byteranges(session, blob, data):
    size = len(data)
    wanted = [(0, 99), (65_500, 65_600), (2_000_000, 2_100_000), (size - 50, size - 1)]
    spec = "bytes=0-99,65500-65600,2000000-2100000,-50"
    reply = session.request("GET", stream_path(blob["id"]), headers={"Range": spec})
    assert reply.status == 206
    content_type = reply.headers["Content-Type"]
    assert content_type.startswith("multipart/byteranges")
    assert reply.headers["Content-Length"] == str(len(reply.body))
    parts = _multipart_parts(content_type, reply.body)
    assert len(parts) == len(wanted)
    for (first, last), (headers, payload) in zip(wanted, parts, strict=True):
        assert headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert headers["content-type"] == "application/octet-stream"
        assert payload == data[first : last + 1]


def test_head_has_length_and_no_body(session, blob, data):
    conn = session.connection()
    try:
        for extra in ({}, {"Range": "bytes=0-9"}):
            conn.request("HEAD", stream_path(blob["id"]), headers=session.headers(extra))
            with conn.getresponse() as response:
                assert response.status == 200  # Range applies to GET only (RFC 9110 §14.2)
                assert response.headers["Content-Length"] == str(len(data))
                assert response.headers["Accept-Ranges"] == "bytes"
                assert response.read() == b""
        # Same keep-alive connection: had HEAD sent body bytes, this response would not parse.
        conn.request("GET", stream_path(blob["id"]), headers=session.headers({"Range": "bytes=0-15"}))
        with conn.getresponse() as response:
            assert response.status == 206
            assert response.read() == data[:16]
    finally:
        conn.close()


def _raw_get(server: Server, auth: str, path: str) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=HTTP_TIMEOUT)
    request = f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n{auth}\r\n"
    sock.sendall(request.encode())
    return sock


def _read_then_reset(sock: socket.socket, at_least: int) -> None:
    """Read ``at_least`` bytes of the response, then close with RST rather than FIN: the harshest way a
    client can go away mid-body."""
    try:
        received = 0
        while received < at_least:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection early"
            received += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


@pytest.fixture(scope="module")
def access_token(server: Server) -> str:
    """A JWT for the same admin, from ``POST /api/token/`` on the live server."""
    reply = LiveSession(server, timeout=HTTP_TIMEOUT).request(
        "POST",
        "/api/token/",
        body=json.dumps({"username": server.username, "password": server.password}),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 200, reply.body[:300]
    return reply.json()["access"]


@pytest.fixture(params=["session", "jwt"])
def auth(request, session: Session) -> str:
    """Header lines authenticating a raw request: the browser session (with its CSRF token) or a JWT."""
    if request.param == "jwt":
        return f"Authorization: Bearer {request.getfixturevalue('access_token')}\r\n"
    return f"Cookie: {session.headers()['Cookie']}\r\nX-CSRFToken: {session.cookies['csrftoken']}\r\n"


def test_a_client_that_goes_away_is_audited_as_aborted(server, session):
    # 16 MiB: more than the server's socket buffer can absorb (tcp_wmem max 4 MiB), so the body cannot have
    # been handed to the kernel whole before the client resets the connection.
    big = deterministic(16 * 1024 * 1024, seed=99)
    reply = session.upload_multipart(big, "big.bin")
    assert reply.status == 201, reply.body[:300]
    cookie = f"Cookie: {session.headers()['Cookie']}\r\nX-Request-ID: e2e-abort-1\r\n"
    _read_then_reset(_raw_get(server, cookie, stream_path(reply.json()["id"])), 256 * 1024)
    deadline = time.monotonic() + 30
    while True:
        ends = [
            r
            for r in _audit_rows(server)
            if r["request_id"] == "e2e-abort-1" and r["action"] == "blob.download.end"
        ]
        if ends or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (end,) = ends
    assert end["outcome"] == "aborted"
    assert 256 * 1024 <= end["details"]["bytes_sent"] < len(big)
    # The metrics say the same, summed over the workers: counted aborted, nothing left in progress.
    metrics = _scrape(server)
    assert metrics[("file_downloads_total", "aborted")] >= 1
    assert metrics[("file_download_in_progress", "")] == 0
    assert metrics[("file_download_bytes_total", "")] >= end["details"]["bytes_sent"]


def _scrape(server) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.url("/metrics"), timeout=30) as reply:
        text = reply.read().decode()
    return {
        (s.name, s.labels.get("status", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_client_disconnect_mid_download_leaves_server_healthy(server, session, blob, data, auth):
    workers = server.worker_pids()
    for _ in range(3):
        _read_then_reset(_raw_get(server, auth, stream_path(blob["id"])), 256 * 1024)
    assert server.proc.poll() is None
    assert session.request("GET", "/health").status == 200
    assert session.request("GET", stream_path(blob["id"])).body == data
    assert server.worker_pids() == workers, f"a worker died and was replaced:\n{server.log_tail()}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_resume(server, session, blob, data, tmp_path):
    target = tmp_path / "partial.bin"
    target.write_bytes(data[:777_777])
    url = f"http://{server.host}:{server.port}{stream_path(blob['id'])}"
    done = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "60",
            "-C",
            "-",
            "-o",
            str(target),
            "-b",
            f"sessionid={session.cookies['sessionid']}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == data


# --- integrity failures -------------------------------------------------------------------------------------


@pytest.fixture
def tampered(server, session, data) -> tuple[str, int]:
    """A fresh blob with one ciphertext byte flipped mid-object; returns (id, tampered segment index)."""
    from blobs.services import object_name

    reply = session.upload_multipart(data, "tampered.bin")
    assert reply.status == 201
    blob_id = reply.json()["id"]
    path = server.storage_dir / object_name(uuid.UUID(blob_id))
    size = path.stat().st_size
    assert size == PARAMS.ciphertext_size(len(data))
    offset = size // 2
    with path.open("r+b") as handle:
        handle.seek(offset)
        (byte,) = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte ^ 0x01]))
    # Header and C_0 fill the first segment_size bytes; C_i (i >= 1) starts at i * segment_size.
    segment = offset // SEGMENT_SIZE
    assert segment > 1
    return blob_id, segment


def _read_until_cut(response: http.client.HTTPResponse) -> tuple[bytes, BaseException | None]:
    received = b""
    try:
        while chunk := response.read(65536):
            received += chunk
    except (OSError, http.client.HTTPException) as exc:
        return received, exc
    return received, None


def test_tampered_segment_aborts_the_connection_mid_stream(session, data, tampered):
    blob_id, segment = tampered
    bad_from = plaintext_start(segment)
    conn = session.connection()
    try:
        conn.request("GET", stream_path(blob_id), headers=session.headers())
        with conn.getresponse() as response:
            # Segment 0 authenticates, so the response starts normally and commits to the full length.
            assert response.status == 200
            assert response.headers["Content-Length"] == str(len(data))
            received, error = _read_until_cut(response)
    finally:
        conn.close()
    # Cut with a reset, not a clean close (issue 15 item 8): no client can take it for the end of the body.
    assert isinstance(error, ConnectionResetError), error
    assert PARAMS.first_segment_plaintext <= len(received) < len(data)
    # Never a byte of plaintext from the tampered segment onward, and nothing padded or altered before it.
    assert len(received) <= bad_from, (len(received), bad_from)
    assert received == data[: len(received)]
    assert session.request("GET", "/health").status == 200


def test_range_starting_in_tampered_segment_is_an_error_before_any_body(session, data, tampered):
    blob_id, segment = tampered
    start = plaintext_start(segment) + 10
    reply = session.request("GET", stream_path(blob_id), headers={"Range": f"bytes={start}-{start + 999}"})
    assert 500 <= reply.status < 600
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["code"] == "integrity_error"
    assert "Content-Range" not in reply.headers
    # The untouched segments before it still serve.
    early = session.request("GET", stream_path(blob_id), headers={"Range": "bytes=0-999"})
    assert early.status == 206
    assert early.body == data[:1000]


# --- uploads cut short --------------------------------------------------------------------------------------


def _raw_post(server: Server, auth: str, head: str, body: bytes) -> bytes:
    """POST a body that ends early: the client half-closes mid-body. Returns whatever comes back."""
    sock = socket.create_connection((server.host, server.port), timeout=HTTP_TIMEOUT)
    try:
        request = (
            f"POST /secure/files/?filename=truncated.bin HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            f"{auth}{head}\r\n"
        )
        sock.sendall(request.encode() + body)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received)
    finally:
        sock.close()


def _stored_objects(server: Server) -> set[Path]:
    return {path for path in server.storage_dir.rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    "framing",
    ["content-length", "chunked", "multipart"],
)
def test_truncated_upload_is_not_stored(server, session, data, framing, auth):
    before = _stored_objects(server)
    sent = data[:300_000]
    octets = "Content-Type: application/octet-stream\r\n"
    if framing == "content-length":
        answer = _raw_post(server, auth, f"{octets}Content-Length: {len(data)}\r\n", sent)
    elif framing == "chunked":  # no last chunk (0 CRLF CRLF): the body never ended
        answer = _raw_post(
            server, auth, f"{octets}Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n" % (len(sent), sent)
        )
    else:
        preamble = (
            b'--cut\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        declared = len(preamble) + len(data) + len(b"\r\n--cut--\r\n")
        answer = _raw_post(
            server,
            auth,
            f"Content-Type: multipart/form-data; boundary=cut\r\nContent-Length: {declared}\r\n",
            preamble + sent,
        )
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert status != 201, f"a body cut short became a blob: {payload[:300]!r}"
    assert _stored_objects(server) == before
    assert session.request("GET", "/health").status == 200
    # The client's fault, answered like every other error here: a 4xx with the JSON error body.
    assert 400 <= status < 500, (status, payload[:300])
    assert "code" in json.loads(payload)


def test_a_full_run_logs_one_json_line_per_request_and_no_secret(server, session):
    # Sign in for tokens, upload a marked file, stream it, refresh, log out: then read everything the
    # server wrote (gunicorn's log, every worker's stdout and stderr: access lines, audit events, errors).
    marker = f"PLAINTEXT-{secrets.token_hex(16)}".encode()
    live = LiveSession(server, timeout=HTTP_TIMEOUT)
    reply = live.request(
        "POST",
        "/api/token/",
        body=json.dumps({"username": server.username, "password": server.password}),
        headers={"Content-Type": "application/json", "X-Request-ID": "e2e-logs-login"},
    )
    assert reply.status == 200
    tokens = reply.json()
    bearer = {"Authorization": f"Bearer {tokens['access']}"}
    reply = session.upload_multipart(marker * 100, "marked.txt")
    assert reply.status == 201, reply.body[:300]
    blob_id = reply.json()["id"]
    reply = live.request("GET", stream_path(blob_id), headers={**bearer, "X-Request-ID": "e2e-logs-dl"})
    assert reply.status == 200
    assert reply.body == marker * 100
    json_body = {"Content-Type": "application/json"}
    reply = live.request(
        "POST", "/api/token/refresh/", body=json.dumps({"refresh": tokens["refresh"]}), headers=json_body
    )
    assert reply.status == 200, reply.body[:300]
    rotated = reply.json()
    reply = live.request(
        "POST", "/api/token/blacklist/", body=json.dumps({"refresh": rotated["refresh"]}), headers=json_body
    )
    assert reply.status == 200, reply.body[:300]

    deadline = time.monotonic() + 30
    while True:
        log = server.log_path.read_text(errors="replace")
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        downloads = [e for e in lines if e.get("event") == "request" and e.get("request_id") == "e2e-logs-dl"]
        # The download's end event is written after the response, by the worker's next audit transaction or
        # its deferred writer (architecture.md §8): its line may follow the request's.
        ended = any(
            e.get("action") == "blob.download.end" and e.get("request_id") == "e2e-logs-dl" for e in lines
        )
        if (downloads and ended) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (download,) = downloads
    assert (download["status"], download["outcome"], download["bytes"]) == (200, "success", len(marker) * 100)
    assert download["blob_id"] == blob_id
    assert download["user_id"]
    # Audit events are JSON lines in the same stream, under the same request id.
    assert ended
    every_token = (tokens["access"], tokens["refresh"], rotated["access"], rotated["refresh"])
    for secret in (
        server.password,
        *every_token,
        *(part for token in every_token for part in token.split(".")[1:]),  # payloads and signatures
        marker.decode(),
        *server.never_logged,
    ):
        assert secret not in log


@pytest.mark.parametrize(
    ("disposition", "status", "stored"),
    [
        # Raw UTF-8 octets in the header, as curl sends them: gunicorn hands them to Django as ISO-8859-1
        # (PEP 3333), which the raw path used to store as "cafÃ© â\x9c\x93.txt".
        ('attachment; filename="café ✓.txt"'.encode(), 201, "café ✓.txt"),
        (b'attachment; filename="caf\xe9.txt"', 400, None),  # not UTF-8: refused, not guessed at
    ],
    ids=["utf8", "latin1"],
)
def test_raw_upload_filename_octets_through_gunicorn(server, session, disposition, status, stored):
    before = _stored_objects(server)
    body = b"named by its header"
    head = (
        f"POST /secure/files/ HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nConnection: close\r\n"
        f"Cookie: {session.headers()['Cookie']}\r\nX-CSRFToken: {session.cookies['csrftoken']}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
    ).encode()
    sock = socket.create_connection((server.host, server.port), timeout=HTTP_TIMEOUT)
    try:
        sock.sendall(head + b"Content-Disposition: " + disposition + b"\r\n\r\n" + body)
        answer = bytearray()
        while chunk := sock.recv(65536):
            answer += chunk
    finally:
        sock.close()
    head_out, _, payload = bytes(answer).partition(b"\r\n\r\n")
    assert int(head_out.split(b" ", 2)[1]) == status, payload[:300]
    if stored is None:
        assert json.loads(payload)["code"] == "invalid_filename"
        assert _stored_objects(server) == before
    else:
        assert json.loads(payload)["filename"] == stored
