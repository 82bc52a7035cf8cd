"""A blob whose object fails authentication part-way through a download, through a real gunicorn in each
serving mode: the bytes before the bad segment arrive, then the connection is reset (not closed cleanly, which
a client could take for the end of the body); the blob is marked, counted and audited (issue 15 item 8)."""

from __future__ import annotations

import contextlib
import json
import random
import urllib.request
from pathlib import Path

import pytest

from blobs.tests.liveserver import serve
from erphub.tests.test_event_worker import PASSWORD, _connect, _db_rows, _token, _upload, _wait_for

SEGMENT = 64 * 1024


def _read_until_closed(sock) -> tuple[bytes, BaseException | None]:
    received = b""
    try:
        while more := sock.recv(65536):
            received += more
    except OSError as exc:
        return received, exc
    return received, None


@pytest.mark.parametrize("mode", ["event", "gthread"])
def test_a_later_segment_that_fails_resets_the_connection(tmp_path, mode):
    (tmp_path / "prometheus").mkdir()
    server, env = serve(
        tmp_path,
        f"cut-{mode}",
        password=PASSWORD,
        key_id="cut-1",
        mode=mode,
        BLOB_SEGMENT_SIZE=str(SEGMENT),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    try:
        token = _token(server)
        size = 2 * 1024 * 1024
        blob_id = _upload(server, token, random.Random(8).randbytes(size))
        ((name,),) = _db_rows(
            env, "SELECT storage_name FROM blobs_blob WHERE id = ?", blob_id.replace("-", "")
        )
        path = Path(env["BLOB_STORAGE_DIR"]) / name
        with path.open("r+b") as stored:  # one flipped bit in segment 20 of 33
            stored.seek(20 * SEGMENT + 100)
            byte = stored.read(1)
            stored.seek(20 * SEGMENT + 100)
            stored.write(bytes([byte[0] ^ 1]))

        with contextlib.closing(_connect(server)) as sock:
            sock.sendall(
                f"GET /secure/files/{blob_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
            )
            received, error = _read_until_closed(sock)
        assert isinstance(error, ConnectionResetError), error
        head, body = received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert f"content-length: {size}".encode() in head.lower()
        assert len(body) < 20 * SEGMENT  # nothing from the bad segment on

        # The mark is written after the reset: wait for it.
        row = "SELECT integrity_failed_at FROM blobs_blob WHERE id = ?"
        _wait_for(
            lambda: _db_rows(env, row, blob_id.replace("-", ""))[0][0] is not None, "the integrity mark"
        )
        events = _db_rows(
            env, "SELECT outcome, details FROM audit_auditevent WHERE action = ?", "blob.integrity_failure"
        )
        assert [(outcome, json.loads(details)["where"]) for outcome, details in events] == [
            ("error", "download")
        ]
        with urllib.request.urlopen(server.url("/metrics"), timeout=30) as reply:
            metrics = reply.read().decode()
        assert 'blob_integrity_failures_total{where="download"} 1.0' in metrics
    finally:
        server.stop()
