"""Blobs in S3 behind a real gunicorn (the event worker, as served): the settings' own ``blobs_s3`` alias from
BLOB_STORAGE_BACKEND=s3 and BLOB_S3_BUCKET, boto3 reaching moto's server through AWS_ENDPOINT_URL_S3 and the
FaultProxy. An upload and a download over real HTTP, then the store failing mid-download: the body stops short
of its Content-Length and the download is recorded as an error in the server's own database."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from blobs.tests.factories import pattern
from blobs.tests.liveserver import serve
from blobs.tests.s3 import S3Bucket, s3_environment
from erphub.tests.test_event_worker import PASSWORD, _connect, _db_rows, _read_response, _token, _upload

MiB = 1024 * 1024


@pytest.fixture
def live(tmp_path, moto_s3, monkeypatch):
    server, proxy = moto_s3
    environment = {name: value for name, value in s3_environment(proxy.url).items() if value is not None}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)  # the test's own client (credentials) as well as the server's
    bucket = S3Bucket(server, proxy).create()
    srv, env = serve(
        tmp_path,
        "s3live",
        password=PASSWORD,
        key_id="s3-1",
        BLOB_STORAGE_BACKEND="s3",
        BLOB_S3_BUCKET=bucket.bucket,
        **environment,
    )
    yield srv, env, bucket
    proxy.limit_next(0, 0)
    srv.stop()
    bucket.close()


def _get(srv, token: str, blob_id: str) -> socket.socket:
    sock = _connect(srv)
    sock.sendall(
        f"GET /secure/files/{blob_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
    )
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[dict[str, str], bytes]:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while more := sock.recv(1 << 20):
            data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    headers[":status"] = lines[0].split()[1]
    return headers, body


def test_upload_and_download_through_gunicorn_and_a_download_cut_by_the_store(live):
    srv, env, bucket = live
    token = _token(srv)
    data = pattern(8 * MiB)
    blob_id = _upload(srv, token, data)
    [(alias, name)] = _db_rows(
        env, "SELECT storage_alias, storage_name FROM blobs_blob WHERE id = ?", blob_id.replace("-", "")
    )
    assert alias == "blobs_s3"
    assert bucket.keys() == [f"blobs/{name}"]  # BLOB_S3_PREFIX defaults to "blobs"

    with contextlib.closing(_get(srv, token, blob_id)) as sock:
        status, headers, body = _read_response(sock)
    assert (status, body == data) == (200, True)

    bucket.proxy.limit_next(50, 3 * MiB)  # every connection to the store now ends after 3 MiB of answers
    with contextlib.closing(_get(srv, token, blob_id)) as sock:
        headers, body = _read_until_closed(sock)
    assert headers[":status"] == "200"
    assert 0 < len(body) < int(headers["content-length"])  # cut short: no client takes it for the end
    assert body == data[: len(body)]

    deadline = time.monotonic() + 15
    sql = (
        "SELECT outcome FROM audit_auditevent WHERE action = 'blob.download.end' AND target_id = ?"
        " ORDER BY sequence"
    )
    while len(_db_rows(env, sql, blob_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # the end event is written after the response, by the worker
    assert [row[0] for row in _db_rows(env, sql, blob_id)] == ["success", "error"]
