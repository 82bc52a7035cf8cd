"""An upload in flight while the database drops every connection (issue 15 item 16): PostgreSQL's backends
are terminated mid-body. The upload holds no connection while its body arrives (core.db.release_connections),
so finishing it, or cleaning up after a client that went away, runs on a fresh connection. PostgreSQL suite
only."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import pytest

from blobs.tests.liveserver import Gunicorn, serve
from erphub.tests.test_event_worker import PASSWORD, _connect, _read_response, _token

SIZE = 16 * 1024 * 1024


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


def _pending(database_url: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT id FROM blobs_blob WHERE state = 'pending'").fetchall()


@pytest.fixture
def server(tmp_path, postgres_database):
    srv, env = serve(tmp_path, "reconnect", password=PASSWORD, key_id="rc-1", DATABASE_URL=postgres_database)
    yield srv, env, postgres_database
    srv.stop()


def _start_upload(server: Gunicorn, token: str) -> socket.socket:
    sock = _connect(server)
    sock.sendall(
        b"POST /secure/files/?filename=big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n".encode()
        + f"Content-Length: {SIZE}\r\nConnection: close\r\n\r\n".encode()
    )
    sock.sendall(os.urandom(SIZE // 2))
    time.sleep(0.5)  # the server has created the pending row and is reading the body
    return sock


def test_an_upload_survives_the_database_dropping_its_connections(server):
    srv, _, database_url = server
    token = _token(srv)
    with contextlib.closing(_start_upload(srv, token)) as sock:
        _terminate_backends(database_url)
        sock.sendall(os.urandom(SIZE - SIZE // 2))
        status, _, body = _read_response(sock)
    assert status == 201, body
    assert _pending(database_url) == []


def test_an_abandoned_upload_cleans_up_after_the_database_dropped_its_connections(server):
    srv, env, database_url = server
    token = _token(srv)
    sock = _start_upload(srv, token)
    _terminate_backends(database_url)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # reset: the client went away mid-body
    deadline = time.monotonic() + 15
    while _pending(database_url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _pending(database_url) == []
    assert [p for p in Path(env["BLOB_STORAGE_DIR"]).rglob("*") if p.is_file()] == []
