"""The dedicated metrics listener: ``GET /metrics`` on its own port, served from the gunicorn master.

Why: under gthread every request needs a free worker thread. When every thread is busy streaming a slow
download, a scrape of ``/metrics`` on the app port queues behind them, and Prometheus sees gaps exactly when
the service is under stress. The master never serves requests, so a small threaded HTTP server in it (started
by ``erphub.gunicorn_conf.when_ready`` when ``METRICS_PORT`` is set) answers whatever the workers are doing.
It serves the multiprocess exposition (:func:`erphub.scrape.exposition`, the files every worker writes) with
the same bearer-token check as the app's ``/metrics``, and nothing else.

Why not elsewhere: django-prometheus's ``PROMETHEUS_METRICS_EXPORT_PORT_RANGE`` starts one unauthenticated
server per worker (one target per worker, each showing only itself); prometheus_client's
``start_http_server`` has no bearer-token check; a separate exporter process could outlive the master. A
daemon thread in the master stops with it.

The master forks workers while this thread runs. A forked worker would inherit the listening socket and any
scrape connection in flight (file descriptors survive ``fork``, threads do not), keeping the port or a scrape
open after the master is gone. :meth:`MetricsListener._after_fork_in_child` closes those copies in every
child; a lock held across ``accept`` and ``close`` (and by ``fork``) makes the set of copies exact.

Imports nothing from Django: the master never sets Django up (``.importlinter``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .scrape import (
    CONTENT_TYPE,
    UNAUTHORIZED_CODE,
    UNAUTHORIZED_DETAIL,
    WWW_AUTHENTICATE,
    bearer_token_matches,
    exposition,
)

# gunicorn's own error log: what goes wrong in the master's listener shows up beside the master's messages.
logger = logging.getLogger("gunicorn.error")

PATH = "/metrics"
# Seconds a client may stay silent (request line, headers, or reading the body) before its connection is
# dropped: a stuck scraper never holds a thread for long.
CLIENT_TIMEOUT = 10.0


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsListener
    timeout = CLIENT_TIMEOUT
    server_version = "erp-hub-metrics"

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def do_GET(self) -> None:
        if urlsplit(self.path).path != PATH:
            self._send_json(404, detail="Not found.", code="not_found")
            return
        token = self.server.token
        if token and not bearer_token_matches(self.headers.get("Authorization", ""), token):
            self._send_json(
                401,
                detail=UNAUTHORIZED_DETAIL,
                code=UNAUTHORIZED_CODE,
                headers={"WWW-Authenticate": WWW_AUTHENTICATE},
            )
            return
        self._send(200, exposition(self.server.multiproc_dir), CONTENT_TYPE)

    def _method_not_allowed(self) -> None:
        # Like the app's /metrics (require_GET): HEAD is refused too.
        self._send_json(
            405, detail="Method not allowed.", code="method_not_allowed", headers={"Allow": "GET"}
        )

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _method_not_allowed

    def _send_json(
        self, status: int, *, detail: str, code: str, headers: dict[str, str] | None = None
    ) -> None:
        # The same body as the app's errors (core.errors.error_response).
        body = json.dumps({"detail": detail, "code": code}).encode()
        self._send(status, body, "application/json", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # No line per scrape (one every 15-30 s per Prometheus); errors go to handle_error.
        pass


class MetricsListener(ThreadingHTTPServer):
    """A threaded HTTP server for ``GET /metrics``: one daemon thread per connection, its loop in another."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, host: str, port: int, *, token: str | None, multiproc_dir: str) -> None:
        self.token = token
        self.multiproc_dir = multiproc_dir
        self._fork_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), MetricsHandler)
        # accept() after select() says "readable" can still block (the client reset meanwhile), and it runs
        # under the fork lock: non-blocking, it fails instead, and a fork never waits on it.
        self.socket.setblocking(False)
        os.register_at_fork(
            before=self._fork_lock.acquire,
            after_in_parent=self._fork_lock.release,
            after_in_child=self._after_fork_in_child,
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        with self._fork_lock:
            connection, address = self.socket.accept()
            self._connections.add(connection)
        connection.setblocking(True)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._fork_lock:
            self._connections.discard(request)
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("metrics listener: error answering %s", client_address)

    def _after_fork_in_child(self) -> None:
        # Close this process's copies only: shutdown() would end the master's connections too.
        for connection in self._connections:
            connection.close()
        self._connections.clear()
        self.socket.close()
        self._fork_lock.release()

    def start(self) -> None:
        """Serves in a daemon thread: it ends when the process does, never keeping it alive."""
        threading.Thread(target=self.serve_forever, name="metrics-listener", daemon=True).start()


def start_listener(host: str, port: int, *, token: str | None, multiproc_dir: str) -> MetricsListener:
    """Binds ``host:port`` (port 0: any free port) and serves ``GET /metrics`` from a daemon thread.

    Raises ``OSError`` when the address cannot be bound: a misconfigured port fails at start-up.
    """
    listener = MetricsListener(host, port, token=token, multiproc_dir=multiproc_dir)
    listener.start()
    return listener
