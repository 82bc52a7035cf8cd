"""The event-driven gunicorn worker: gevent over the unchanged WSGI app, with limits for slow clients.

Why gevent, and not an ASGI server: docs/benchmarks.md ("Serving many slow clients") compares them. In
short, every connection here is a greenlet (a few KiB), so a client reading at 16 KiB/s pins no thread; the
WSGI path keeps what the product guarantees — uploads stream into the encryptor as they arrive (Django's
ASGI handler spools the whole body to a temporary file first), downloads stream with backpressure from the
socket (Django's ASGI handler reads a synchronous streaming response whole into memory) — and psycopg 3
(>= 3.1.14), boto3/requests and, after ``init_gevent()``, gRPC all cooperate with the hub.

On top of gunicorn's gevent worker (architecture.md §12):

- **Header timeout** (``SERVER_HEADER_TIMEOUT``, 10 s): the request line and headers must arrive within it,
  counted from the connection's accept (or the end of the previous response on a kept-alive connection). A
  slowloris connection is closed silently at the deadline. It is also the keep-alive idle time.
- **Idle timeout** (``SERVER_IDLE_TIMEOUT``, 60 s): every socket read or write must make progress within it.
  An upload body that stalls fails with 408 and stores nothing; a client that stops reading is cut (its
  download is audited ``aborted`` with the bytes sent). Downloads are written in pieces sized to the client's
  speed, floor 64 KiB (blobs.pacing), so only a client slower than about 1 KiB/s meets it.
- **Admission** (``SERVER_MAX_ACTIVE_REQUESTS``, 8): at most that many requests run the application's view
  phase at once (authentication, queries, the audit event, the first piece of a body); the others wait their
  turn on a greenlet semaphore. A request gives its turn back when the view returns (a download then streams
  outside it) or when it starts reading its body (an upload arriving slowly holds no turn). Pure-Python and
  SQLite work does not yield to the hub, so without it a burst of a thousand request starts would all be
  runnable at once and a probe would wait behind every one of them; with it a probe waits for at most this
  many.
- **Connection caps**, per worker: at most ``SERVER_MAX_CONNECTIONS`` (1,000) connections are served; past
  that a request is answered ``503`` with ``Retry-After`` at once instead of queueing. At most
  ``SERVER_MAX_CONNECTIONS_PER_ADDRESS`` (128) from one peer address, past which ``429`` with
  ``Retry-After``; peers inside ``TRUSTED_PROXIES`` are exempt (behind a proxy every client shares its
  address: the proxy enforces per-client limits). ``/health``, ``/ready`` and ``/metrics`` are never refused.

Runs in the gunicorn master (the class is loaded there) and in its workers before Django is set up: no Django
or app imports (.importlinter), the environment read here directly, like erphub.gunicorn_conf.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gevent
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

# The probes answer whatever the load: a refused liveness probe would restart a pod full of downloads.
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})
RETRY_AFTER_SECONDS = 5


def _positive(env: Mapping[str, str], name: str, default: float, *, integer: bool = False) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise RuntimeError(f"{name}={raw!r} is not a number.") from None
    if value <= 0:
        raise RuntimeError(f"{name}={raw!r} must be positive.")
    return value


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_connections: int = 1000
    max_connections_per_address: int = 128
    max_active_requests: int = 8
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        try:
            proxies = tuple(
                ipaddress.ip_network(item.strip(), strict=False)
                for item in env.get("TRUSTED_PROXIES", "").split(",")
                if item.strip()
            )
        except ValueError as exc:
            raise RuntimeError(f"TRUSTED_PROXIES: {exc}") from None
        return cls(
            header_timeout=_positive(env, "SERVER_HEADER_TIMEOUT", cls.header_timeout),
            idle_timeout=_positive(env, "SERVER_IDLE_TIMEOUT", cls.idle_timeout),
            max_connections=_positive(env, "SERVER_MAX_CONNECTIONS", cls.max_connections, integer=True),
            max_connections_per_address=_positive(
                env, "SERVER_MAX_CONNECTIONS_PER_ADDRESS", cls.max_connections_per_address, integer=True
            ),
            max_active_requests=_positive(
                env, "SERVER_MAX_ACTIVE_REQUESTS", cls.max_active_requests, integer=True
            ),
            trusted_proxies=proxies,
        )

    def address_key(self, addr: Any) -> str | None:
        """The peer address the per-address cap counts, or None (a unix socket, a trusted proxy)."""
        if not isinstance(addr, tuple) or not addr:
            return None
        try:
            ip = ipaddress.ip_address(addr[0])
        except ValueError:
            return None
        if any(ip in network for network in self.trusted_proxies):
            return None
        return str(ip)

    def refusal(self, *, path: str, open_connections: int, from_address: int) -> bytes | None:
        """The response refusing a request (or None to serve it): over the worker's cap, 503; over the
        address's cap, 429 (RFC 6585 §4); both with Retry-After (RFC 9110 §10.2.3), the API's body."""
        if path in EXEMPT_PATHS:
            return None
        if open_connections > self.max_connections:
            return _canned(503, "Service Unavailable", "server_busy", "The server is busy; retry shortly.")
        if from_address > self.max_connections_per_address:
            return _canned(
                429, "Too Many Requests", "too_many_connections", "Too many connections from your address."
            )
        return None


def _canned(status: int, reason: str, code: str, detail: str) -> bytes:
    body = f'{{"detail": "{detail}", "code": "{code}"}}'.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER_SECONDS}\r\n"
        f"Cache-Control: no-store\r\n"
        f"Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Once:
    def __init__(self, action: Any) -> None:
        self._action: Any = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


class _ReleaseOnRead:
    """The request body, giving the admission turn back at its first read: a body may take hours to arrive,
    and a client sending it slowly must not hold a turn meanwhile."""

    def __init__(self, stream: Any, release: _Once) -> None:
        self._stream = stream
        self._release = release

    def read(self, *args: Any) -> Any:
        self._release()
        return self._stream.read(*args)

    def readline(self, *args: Any) -> Any:
        self._release()
        return self._stream.readline(*args)

    def readlines(self, *args: Any) -> Any:
        self._release()
        return self._stream.readlines(*args)

    def __iter__(self) -> Any:
        self._release()
        return iter(self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class EventWorker(GeventWorker):
    """gunicorn's gevent worker with a header timeout, an idle timeout and connection caps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = Limits.from_env(os.environ)
        # gevent's pool must be larger than our cap: a full pool stops accepting, and connections would queue
        # in the kernel's backlog instead of getting their 503.
        self.worker_connections = max(self.cfg.worker_connections, self.limits.max_connections * 2)
        self.open_connections = 0
        self.per_address: Counter[str] = Counter()

    def patch(self) -> None:
        super().patch()
        # gRPC (the GCP KMS provider's transport) runs its own threads and poller: after monkey-patching,
        # it must be told to cooperate with gevent's hub, or its calls block the worker
        # (grpc.experimental.gevent).
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: Any = self.wsgi  # type: ignore[has-type]  # gunicorn is untyped
        # Created here, in the worker after monkey-patching: a gevent semaphore.
        turn = threading.BoundedSemaphore(self.limits.max_active_requests)

        def admitted(environ: dict[str, Any], start_response: Any) -> Any:
            # The probes skip the queue: their own work is small and touches nothing external.
            if environ.get("PATH_INFO") in EXEMPT_PATHS:
                return app(environ, start_response)
            turn.acquire()
            release = _Once(turn.release)
            environ["wsgi.input"] = _ReleaseOnRead(environ["wsgi.input"], release)
            try:
                return app(environ, start_response)  # the view phase; the body streams after the release
            finally:
                release()

        self.wsgi = admitted

    def timeout_ctx(self) -> gevent.Timeout:
        # AsyncWorker.handle wraps reading each request's line and headers in this: a total deadline, so a
        # client trickling a byte every few seconds (slowloris) is cut all the same. False: close silently.
        return gevent.Timeout(self.limits.header_timeout, False)

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        # gunicorn's gevent worker makes the socket blocking (no timeout); every read and write must instead
        # make progress within the idle timeout (gevent applies it to each recv and to each sendall).
        client.settimeout(self.limits.idle_timeout)
        key = self.limits.address_key(addr)
        self.open_connections += 1
        if key is not None:
            self.per_address[key] += 1
        try:
            AsyncWorker.handle(self, listener, client, addr)
        finally:
            self.open_connections -= 1
            if key is not None:
                self.per_address[key] -= 1
                if not self.per_address[key]:
                    del self.per_address[key]

    def handle_request(self, listener_name: Any, req: Any, sock: socket.socket, addr: Any) -> bool:
        key = self.limits.address_key(addr)
        refusal = self.limits.refusal(
            path=req.path,
            open_connections=self.open_connections,
            from_address=self.per_address[key] if key is not None else 0,
        )
        if refusal is not None:
            self.log.info("Refused %s %s from %s: over the connection cap", req.method, req.path, key)
            with contextlib.suppress(OSError):  # the client left already: nothing to tell it
                sock.sendall(refusal)
            raise StopIteration()  # AsyncWorker.handle closes the connection
        try:
            return bool(super().handle_request(listener_name, req, sock, addr))
        except TimeoutError:
            # The client stopped reading (or sending) for the idle timeout: routine, not a server fault (the
            # response iterator was closed, so the download is already audited as aborted).
            self.log.info("Closed a connection from %s: idle for %ss", key, self.limits.idle_timeout)
            raise StopIteration() from None
