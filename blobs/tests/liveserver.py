"""A real gunicorn (gthread, 2 workers x 4 threads) on a loopback port, and a cookie-keeping client for it.

Shared by the end-to-end tests (blobs/tests/test_e2e.py) and the download benchmark
(bench/bench_download.py). Standard library only: no pytest, no Django in this process. The server runs in
its own environment (a var dir, its own SQLite file, a generated master key, a superuser from the
environment) that nothing from the caller's environment leaks into, in its own session, so that stopping it
stops exactly its master and workers.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
WORKERS = 2
THREADS = 4
# Worker class arguments per serving mode; "event" is erphub.gunicorn_conf's default worker class.
MODES = {
    "event": ("--worker-class", "erphub.event_worker.EventWorker"),
    "gthread": ("--worker-class", "gthread", "--threads", str(THREADS)),
}

# Variables erphub/settings.py (or gunicorn) reads: none leaks from the caller's environment into the server.
_SERVER_ENV_PREFIXES = (
    "DATABASE_",
    "ERPHUB_",
    "BLOB_",
    "DJANGO_",
    "KEY_PROVIDER",
    "KMS_",
    "AWS_",
    "AZURE_",
    "GOOGLE_",
    "VAULT_",
    "REDIS_",
    "PROMETHEUS_",
    "FEATURE_",
    "TRUSTED_PROXIES",
    "METRICS_",
    "GUNICORN_",
    "WEB_CONCURRENCY",
    "SERVER_",
)
_SERVER_ENV_NAMES = {"HOST", "PORT"}


class ServerError(RuntimeError):
    """The server did not come up, or a step preparing it failed; the message carries its output."""


# --- the server ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_env(
    var_dir: Path, *, username: str, password: str, key_id: str, **overrides: str
) -> dict[str, str]:
    """The caller's environment minus everything the app reads, plus a fresh production-like configuration:
    the SQLite database and blob storage (``var_dir / "blobs"``) under ``var_dir``, a generated master key
    ``key_id`` and the superuser ``createsuperuser --noinput`` creates. ``overrides`` are set last."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SERVER_ENV_PREFIXES) and name not in _SERVER_ENV_NAMES
    }
    env.update(
        DJANGO_SETTINGS_MODULE="erphub.settings",
        DJANGO_DEBUG="false",  # production code paths: generic errors, no debug pages
        DJANGO_SECURE_SSL_REDIRECT="false",  # plain HTTP on loopback: no TLS proxy in front
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        ERPHUB_VAR_DIR=str(var_dir),
        DATABASE_URL=f"sqlite:///{var_dir / 'db.sqlite3'}",
        BLOB_STORAGE_DIR=str(var_dir / "blobs"),
        BLOB_MASTER_KEYS=f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}",
        KEY_PROVIDER="local",
        DJANGO_SUPERUSER_USERNAME=username,
        DJANGO_SUPERUSER_PASSWORD=password,
        DJANGO_SUPERUSER_EMAIL="admin@example.invalid",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str, timeout: float | None = None) -> str:
    """Runs ``manage.py *args`` in the server's environment; returns its stdout, raises if it fails."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise ServerError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare_database(env: dict[str, str]) -> None:
    """Migrates the server's database and creates its superuser (from ``DJANGO_SUPERUSER_*``)."""
    manage(env, "migrate", "--noinput", "--verbosity", "0", timeout=120)
    manage(env, "createsuperuser", "--noinput", timeout=120)


def gunicorn_command() -> list[str]:
    script = Path(sys.executable).with_name("gunicorn")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gunicorn"]


@dataclass(kw_only=True)
class Gunicorn:
    """A gunicorn master in its own session, on ``host:port``, logging to ``log_path``."""

    name: str
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls,
        env: dict[str, str],
        log_path: Path,
        *,
        timeout: int,
        sendfile: bool = False,
        access_log: bool = False,
        worker_connections: int | None = None,
        mode: str = "event",
        workers: int = WORKERS,
        app: str = "erphub.wsgi:application",
        worker_args: tuple[str, ...] | None = None,
        cwd: Path = ROOT,
        **fields: Any,
    ) -> Self:
        """Starts ``erphub.wsgi`` (settings from ``env``) on a free loopback port; does not wait for it.
        ``mode``: ``event`` (the default worker, erphub/event_worker.py) or ``gthread`` (a thread per
        connection). ``app`` and ``worker_args`` (instead of the mode's) serve something else the same way
        (the benchmarks' stock ASGI app); ``cwd``: another source tree. ``fields`` are the subclass's own."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {sorted(MODES)}")
        port = free_port()
        command = [
            *gunicorn_command(),
            app,
            # The same gunicorn hooks as `make run` (erphub/gunicorn_conf.py).
            "-c",
            "python:erphub.gunicorn_conf",
            *(MODES[mode] if worker_args is None else worker_args),
            "--workers",
            str(workers),
            "--bind",
            f"{HOST}:{port}",
            "--timeout",
            str(timeout),
            "--graceful-timeout",
            "5",
            *(["--access-logfile", "-"] if access_log else []),
            "--error-logfile",
            "-",
            # gunicorn 27 otherwise binds ~/.gunicorn/gunicorn.ctl, shared by every server on the machine.
            "--no-control-socket",
            *([] if sendfile else ["--no-sendfile"]),
            # A gthread worker keeps accepting connections beyond its threads (queued, up to 1,000), so one
            # worker can take every new download while the other idles: capped, a full worker stops accepting.
            *(["--worker-connections", str(worker_connections)] if worker_connections else []),
        ]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(host=HOST, port=port, proc=proc, log_path=log_path, **fields)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "<no log>"

    def worker_pids(self) -> set[int]:
        """The master's children (its workers), from /proc."""
        children: set[int] = set()
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            children.update(int(pid) for pid in task.read_text().split())
        return children

    def wait_until_healthy(self, timeout: float = 30.0, poll_interval: float = 0.1) -> None:
        """Returns once ``GET /health`` is 200; raises ServerError, with the log's tail, if the master exits
        or ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"gunicorn {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
            try:
                conn.request("GET", "/health")
                with conn.getresponse() as response:
                    response.read()
                    if response.status == 200:
                        return
                    last_error = f"status {response.status}"
            except OSError as exc:
                last_error = repr(exc)
            finally:
                conn.close()
            time.sleep(poll_interval)
        raise ServerError(
            f"gunicorn {self.name} not healthy after {timeout:.0f} s ({last_error}):\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # gunicorn's graceful shutdown: the master stops its workers
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The server has its own session: its process group is exactly this master and its workers.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)


def serve(
    var_dir: Path,
    name: str,
    *,
    password: str,
    key_id: str,
    username: str = "admin",
    mode: str = "event",
    workers: int = WORKERS,
    timeout: int = 60,
    **overrides: str,
) -> tuple[Gunicorn, dict[str, str]]:
    """A migrated server on ``var_dir`` (``server_env`` plus ``overrides``), healthy, with its environment;
    the caller stops it. If it does not come up it is stopped and ServerError (with the log's tail) raised."""
    env = server_env(var_dir, username=username, password=password, key_id=key_id, **overrides)
    prepare_database(env)
    server = Gunicorn.start(
        env, var_dir / "gunicorn.log", timeout=timeout, name=name, mode=mode, workers=workers
    )
    try:
        server.wait_until_healthy(60)
    except BaseException:
        server.stop()
        raise
    return server, env


# --- a small cookie-keeping client --------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Session:
    """A logged-in browser, minus the browser: session and CSRF cookies over ``http.client``."""

    def __init__(self, server: Gunicorn, timeout: float = 30.0) -> None:
        self.server = server
        self.timeout = timeout
        self.cookies: dict[str, str] = {}

    def connection(self, timeout: float | None = None, blocksize: int = 8192) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            self.server.host,
            self.server.port,
            timeout=self.timeout if timeout is None else timeout,
            blocksize=blocksize,
        )

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        return headers

    def keep_cookies(self, response: http.client.HTTPResponse) -> None:
        for header in response.headers.get_all("Set-Cookie") or ():
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                self.cookies[name] = morsel.value

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
        *,
        blocksize: int = 8192,
        **kwargs: Any,
    ) -> Reply:
        """One request on a fresh connection; ``blocksize`` is how much of a file body goes per send."""
        conn = self.connection(blocksize=blocksize)
        try:
            conn.request(method, path, body=body, headers=self.headers(headers), **kwargs)
            with conn.getresponse() as response:
                self.keep_cookies(response)
                return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def csrf_headers(self) -> dict[str, str]:
        return {"X-CSRFToken": self.cookies["csrftoken"]}

    def login(self, username: str, password: str) -> None:
        """Logs in through the admin's login form, as a browser does: CSRF token first, then the POST."""
        page = self.request("GET", "/admin/login/")
        match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
        if page.status != 200 or not match:
            raise ServerError(f"login page: {page.status}, no CSRF token in the form? {page.body[:500]!r}")
        form = urlencode(
            {
                "csrfmiddlewaretoken": match.group(1).decode(),
                "username": username,
                "password": password,
                "next": "/admin/",
            }
        )
        reply = self.request(
            "POST",
            "/admin/login/?next=/admin/",
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if reply.status != 302 or "sessionid" not in self.cookies:
            raise ServerError(f"login failed: {reply.status} {reply.body[:500]!r}")


# --- every worker thread busy -------------------------------------------------------------------------------


class Holders:
    """Downloads whose client reads nothing after the response headers: each holds a worker thread blocked
    in ``send`` (the client's receive window is tiny and never drains) until it is closed. ``path`` must be a
    blob much larger than the loopback socket buffers (tcp_wmem's maximum, 4 MiB by default)."""

    def __init__(self, server: Gunicorn, path: str, cookie: str) -> None:
        self.server, self.path, self.cookie = server, path, cookie
        self.sockets: list[socket.socket] = []
        self.received: dict[socket.socket, bytes] = {}
        self.streaming: list[socket.socket] = []

    def open_one(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
        sock.connect((self.server.host, self.server.port))
        request = f"GET {self.path} HTTP/1.1\r\nHost: {self.server.host}\r\nCookie: {self.cookie}\r\n\r\n"
        sock.sendall(request.encode())
        sock.setblocking(False)
        self.sockets.append(sock)
        self.received[sock] = b""

    def hold_every_thread(self, threads: int = WORKERS * THREADS, timeout: float = 60.0) -> None:
        """Returns once ``threads`` downloads have their response headers: that many threads are streaming.

        gunicorn hands connections to workers unevenly, so one worker may queue a download while the other
        has a thread free: another download is opened each second without progress, until both are full.
        """
        for _ in range(threads):
            self.open_one()
        deadline = time.monotonic() + timeout
        last_progress = time.monotonic()
        while len(self.streaming) < threads:
            if time.monotonic() > deadline:
                raise ServerError(f"only {len(self.streaming)} of {threads} downloads started")
            for sock in self.sockets:
                if sock in self.streaming:
                    continue
                try:
                    chunk = sock.recv(1024)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise ServerError("the server closed a download")
                self.received[sock] += chunk
                if b"\r\n\r\n" in self.received[sock]:
                    if not self.received[sock].startswith(b"HTTP/1.1 200"):
                        raise ServerError(f"a download failed: {self.received[sock][:200]!r}")
                    self.streaming.append(sock)  # headers in: a thread serves it; read nothing more
                    last_progress = time.monotonic()
            if time.monotonic() - last_progress > 1.0 and len(self.sockets) < 3 * threads:
                self.open_one()
                last_progress = time.monotonic()
            time.sleep(0.02)

    def close(self) -> None:
        while self.sockets:
            sock = self.sockets.pop()
            # RST: the server's blocked send fails at once (the download counts as aborted).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        self.streaming.clear()
