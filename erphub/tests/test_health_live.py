"""A hung key service must not starve the probes (issue 15 item 18), against a real gunicorn whose KMS (Vault
Transit) is a black hole: connections are accepted and never answered. The provider's read timeout is far
longer than the clients' generous timeouts, so anything that waits on the KMS shows up as a client timeout,
not as a measured duration. The black hole counts the connections it accepted: the KMS sees at most one
background round-trip per worker, whatever the number of probes, and at most the bulkhead's calls."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from blobs.tests.liveserver import Gunicorn, serve
from erphub.tests.test_event_worker import PASSWORD, _token
from kms.tests.servers import BlackHole

CLIENT_TIMEOUT = 20.0  # generous for a probe; far shorter than the KMS hang below
KMS_HANG = "300"  # the provider's read timeout and retry deadline: a call waits this long
UPLOADS = 8
BULKHEAD = 2  # concurrent key-service calls per worker process


@pytest.fixture
def black_hole():
    hole = BlackHole()
    yield hole
    hole.close()


def _serve(tmp_path: Path, hole: BlackHole, mode: str) -> Gunicorn:
    server, _ = serve(
        tmp_path,
        f"health-{mode}",
        password=PASSWORD,
        key_id="hl-1",
        mode=mode,
        timeout=600,
        KEY_PROVIDER="vault",
        VAULT_ADDR=f"http://127.0.0.1:{hole.port}",
        VAULT_TOKEN="erphub-test",
        VAULT_TRANSIT_KEY="blobs",
        KMS_READ_TIMEOUT=KMS_HANG,
        KMS_MAX_ATTEMPTS="1",
        KMS_MAX_CONCURRENT_CALLS=str(BULKHEAD),
    )
    return server


def _get(server: Gunicorn, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", path)
        with conn.getresponse() as response:
            return response.status, json.loads(response.read())
    finally:
        conn.close()


def _hung_upload(server: Gunicorn, token: str) -> socket.socket:
    """An upload whose headers are sent: the server wraps its data key (and hangs there) before the body."""
    sock = socket.create_connection((server.host, server.port), timeout=CLIENT_TIMEOUT)
    sock.sendall(
        b"POST /secure/files/?filename=h.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n".encode()
        + b"Content-Length: 4\r\nConnection: close\r\n\r\ndata"
    )
    return sock


def _answer(sock: socket.socket) -> bytes | None:
    """The upload's whole response (head and body, which may arrive in separate segments), or None if it is
    still waiting on the KMS after the client's timeout."""
    received = b""
    try:
        while more := sock.recv(65536):
            received += more
            head, _, body = received.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    except TimeoutError:
        return received or None
    return received


@pytest.mark.parametrize("mode", ["event", "gthread"])
def test_probes_answer_while_uploads_hang_on_the_key_service(tmp_path, black_hole, mode):
    server = _serve(tmp_path, black_hole, mode)
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        # A probe storm against the hung KMS: each answers from what its worker knows ("not checked yet"),
        # and each worker starts at most one background round-trip, not one per probe.
        with ThreadPoolExecutor(4) as pool:
            storm = list(pool.map(lambda _: _get(server, "/ready"), range(8)))
        for status, body in storm:
            assert status == 503, body
            assert body["checks"]["kms"]["detail"] == "key provider not checked yet"
        assert len(black_hole._held) <= 2  # one background round-trip per worker at most
        token = _token(server)
        uploads = [_hung_upload(server, token) for _ in range(UPLOADS)]
        for sock in uploads:
            stack.callback(sock.close)
        # Each worker holds at most BULKHEAD calls on the black hole; the others are refused at once.
        with ThreadPoolExecutor(4) as pool:
            probes = list(pool.map(lambda p: _get(server, p), ["/health", "/ready"] * 4))
        for path, (status, body) in zip(["/health", "/ready"] * 4, probes, strict=True):
            if path == "/health":
                assert (status, body) == (200, {"status": "ok"})
            else:
                # Not ready, and it says why, without having waited on a round trip of its own.
                assert status == 503, body
                assert body["checks"]["kms"]["ok"] is False
                assert body["checks"]["database"]["ok"] is True
        with ThreadPoolExecutor(UPLOADS) as pool:
            answers = list(pool.map(_answer, uploads))
        refused = [head for head in answers if head is not None]
        for head in refused:
            assert head.startswith(b"HTTP/1.1 503"), head[:200]
            assert b"kms_unavailable" in head
            assert b"Retry-After" in head
        assert len(refused) >= UPLOADS - 2 * BULKHEAD  # 2 workers, BULKHEAD calls hanging in each at most
        assert len(black_hole._held) <= 2 * BULKHEAD  # nothing else reached the KMS: no probe's round trip
