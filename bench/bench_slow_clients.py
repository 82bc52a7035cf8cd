"""Slow-clients benchmark (issue 13's targets): event vs gthread vs stock Django ASGI under uvicorn, one run.

    .venv/bin/python bench/bench_slow_clients.py            # the full run (~15-20 min)
    .venv/bin/python bench/bench_slow_clients.py --quick    # smoke run, < 2 min, small counts and sizes

Serving modes, each a real gunicorn with 2 workers on a loopback port, the same fresh var dir and SQLite
database under /tmp (removed at the end):

- ``event``: ``erphub.event_worker.EventWorker`` (gevent), the product's default; the benchmark client is one
  address, so ``SERVER_MAX_CONNECTIONS_PER_ADDRESS`` is raised for it (printed in the output);
- ``gthread``: 2 workers x 4 threads, the mode before issue 13;
- ``uvicorn``: ``bench/asgi_stock.py`` (stock ``get_asgi_application()``) under
  ``uvicorn_worker.UvicornWorker`` (requirements-bench.txt).

Scenarios, each mode through the same harness (a figure a mode cannot reach is recorded as its failure):

- A: N concurrent downloads reading at 16 KiB/s, each a Range of a blob at a distinct offset, client
  ``SO_RCVBUF`` 64 KiB, every byte compared with the plaintext (a seeded PRNG made it, so the client knows
  it), ramped up; errors, server RSS (master + workers, /proc) before and peak, /health latency every 100 ms
  on fresh connections, server fds before/after, and the time it took.
- C (inside A): one fast full download of the big blob (curl) once all slow ones run, vs on the idle server.
- B: trickling connections, half sending a request header a byte every 2 s, half an upload body 4 bytes a
  second; meanwhile /health latency and a normal 1 MiB range download every second.
- Bad input: slowloris headers, upload bodies that stop half-way, downloads whose client reads nothing, and
  connections opened and dropped, all at once; server fds, RSS, open fds of the SQLite files before/after,
  /health meanwhile, and ``pending`` blobs left (the SQLite file queried directly).
- D: idle server, event vs gthread interleaved: one fast full download, and 4 simultaneous ones.

The client is this one process (asyncio, no thread per connection), a forked process for the /health and
1 MiB download probes, and curl for the fast downloads, on the same machine as the server: the output says
so. Prints a Markdown section for docs/benchmarks.md on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import multiprocessing
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root, for blobs.tests and bench

from bench.bench_download import (
    Approach,
    Quiet,
    Server,
    Session,
    aes_gcm_limit,
    concurrent_throughput,
    curl,
    log,
    machine_facts,
    throughput,
)
from blobs.tests.liveserver import (
    HOST,
    THREADS,
    WORKERS,
    prepare_database,
    server_env,
)

KIB, MIB = 1 << 10, 1 << 20
USERNAME = "admin"
MODES = ("event", "gthread", "uvicorn")
# One client address opens every connection here; the product's default (128 per worker) is for real peers.
PER_ADDRESS_CAP = 100_000
UPLOAD_THROTTLE = "100000/min"  # the trickling uploads would otherwise meet the per-user upload throttle
HEALTH_TIMEOUT = 5.0  # a probe slower than this counts as failed (a kubelet's default timeout is 1 s)


@dataclass(frozen=True)
class Sizes:
    slow_clients: int
    slow_range: int
    slow_rate: int
    ramp: float
    small_blob: int
    big_blob: int
    tricklers: int
    trickle_seconds: float
    slowloris: int
    stalled_bodies: int
    non_readers: int
    dropped: int
    hold_seconds: float
    rounds: int
    concurrent: int
    settle: float  # seconds left to the server's own cleanup before an 'after' reading


FULL = Sizes(
    slow_clients=1000,
    slow_range=MIB,
    slow_rate=16 * KIB,
    ramp=5.0,
    small_blob=64 * MIB,
    big_blob=1024 * MIB,
    tricklers=200,
    trickle_seconds=30.0,
    slowloris=50,
    stalled_bodies=20,
    non_readers=20,
    dropped=10_000,
    hold_seconds=70.0,  # longer than the event worker's 60 s idle timeout: its own cut is exercised
    rounds=3,
    concurrent=4,
    settle=3.0,
)
QUICK = Sizes(
    slow_clients=100,
    slow_range=64 * KIB,
    slow_rate=16 * KIB,
    ramp=1.0,
    small_blob=16 * MIB,
    big_blob=32 * MIB,
    tricklers=40,
    trickle_seconds=4.0,
    slowloris=10,
    stalled_bodies=5,
    non_readers=5,
    dropped=1000,
    hold_seconds=3.0,
    rounds=3,
    concurrent=4,
    settle=1.0,
)


# --- the servers --------------------------------------------------------------------------------------------


class ModeServer(Server):
    """A gunicorn of one mode, with the /proc readings the scenarios take."""

    mode: str = ""

    @classmethod
    def start_mode(cls, mode: str, env: dict[str, str], work: Path) -> ModeServer:
        log_path = work / f"gunicorn-{mode}.log"
        if mode in ("event", "gthread"):
            server = cls.start(env, log_path, timeout=300, mode=mode, name=mode)
        else:
            server = cls._start_asgi(env, log_path, name=mode)
        server.mode = mode
        return server

    @classmethod
    def _start_asgi(cls, env: dict[str, str], log_path: Path, *, name: str) -> ModeServer:
        # The same server as the other modes, with the stock ASGI app under uvicorn's gunicorn worker.
        return cls.start(
            env,
            log_path,
            timeout=300,
            name=name,
            app="bench.asgi_stock:application",
            worker_args=("--worker-class", "uvicorn_worker.UvicornWorker"),
        )

    def fds(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError, PermissionError):
                total += len(os.listdir(f"/proc/{pid}/fd"))
        return total

    def db_fds(self, db: Path) -> int:
        """Open descriptors of the SQLite database and its -wal/-shm files: SQLite's 'connections'."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError, PermissionError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(db)):
                            total += 1
        return total

    def log_problems(self) -> Counter[str]:
        text = self.log_path.read_text(errors="replace")
        return Counter(
            {
                "tracebacks": text.count("Traceback"),
                "worker timeouts/kills": len(
                    re.findall(r"WORKER TIMEOUT|was sent SIGKILL|Worker failed", text)
                ),
                "refused (503/429)": text.count("Refused "),
                "idle cuts": text.count("idle for"),
            }
        )


# --- probes (not in the asyncio loop: a busy loop must not inflate what they measure) ----------------------


class Probes:
    """/health every ``interval`` on a fresh connection and (optionally) a normal 1 MiB range download every
    second, from a forked process of their own (this one's asyncio loop must not delay them: the GIL), and the
    server's RSS every 0.25 s from a thread here, until the block ends."""

    def __init__(
        self,
        server: ModeServer,
        *,
        download: tuple[str, str, int, bytes] | None = None,
        interval: float = 0.1,
    ) -> None:
        self.server, self.download, self.interval = server, download, interval
        self.health: list[tuple[float, float | None]] = []  # (monotonic time, seconds or None: failed)
        self.rss: list[int] = []
        self.downloads: list[float | None] = []
        context = multiprocessing.get_context("fork")
        self.stop = context.Event()
        self._results, self._send = context.Pipe(duplex=False)
        self._process = context.Process(target=self._child, daemon=True)
        self._rss_thread = threading.Thread(target=self._rss, daemon=True)

    def __enter__(self) -> Probes:
        self._process.start()  # forked before any thread or event loop runs here
        self._send.close()
        self._rss_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.health, self.downloads = self._results.recv()
        self._results.close()
        self._process.join()
        self._rss_thread.join()

    def _child(self) -> None:
        threads = [threading.Thread(target=self._health)]
        if self.download:
            threads.append(threading.Thread(target=self._download))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._send.send((self.health, self.downloads))
        self._send.close()

    def _get(self, path: str, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers)
            with conn.getresponse() as response:
                return response.status, response.read()
        finally:
            conn.close()

    def _health(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                status, _ = self._get("/health", {}, HEALTH_TIMEOUT)
                latency: float | None = time.perf_counter() - started if status == 200 else None
            except (OSError, http.client.HTTPException):
                latency = None
            self.health.append((time.monotonic(), latency))
            self.stop.wait(max(0.0, self.interval - (time.perf_counter() - started)))

    def _rss(self) -> None:
        while not self.stop.is_set():
            self.rss.append(self.server.rss_bytes())
            self.stop.wait(0.25)

    def _download(self) -> None:
        assert self.download
        path, cookie, offset, expected = self.download
        headers = {"Cookie": cookie, "Range": f"bytes={offset}-{offset + len(expected) - 1}"}
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                status, body = self._get(path, headers, 10.0)
                ok = status == 206 and body == expected
            except (OSError, http.client.HTTPException):
                ok = False
            self.downloads.append(time.perf_counter() - started if ok else None)
            self.stop.wait(max(0.0, 1.0 - (time.perf_counter() - started)))


def latency_summary(samples: list[float | None]) -> str:
    if not samples:
        return "no samples"
    ok = sorted(x for x in samples if x is not None)
    failed = len(samples) - len(ok)
    if not ok:
        return f"all {failed} failed"
    p50, p99 = ok[len(ok) // 2] * 1e3, ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1e3
    # A failed probe is slower than any answered one: p99 over all samples counts failures as infinitely slow.
    p99_all = "∞" if failed > len(samples) * 0.01 else f"{p99:.0f}"
    return f"{p50:.1f} / {p99_all} ms ({len(samples)}, {failed} failed)"


def p99_ms(samples: list[float | None]) -> float:
    ordered = sorted(float("inf") if x is None else x for x in samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3 if ordered else float("inf")


# --- asyncio clients ----------------------------------------------------------------------------------------


async def connect(port: int, *, rcvbuf: int | None = None, limit: int = 16 * KIB) -> tuple[Any, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window stays small
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=limit)


def abort(writer: Any) -> None:
    """Closes with RST (SO_LINGER 0): the server's blocked send or recv fails at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class SlowResult:
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    bytes_checked: int = 0
    finished_at: list[float] = field(default_factory=list)
    headers_after: list[float] = field(default_factory=list)  # seconds from connect to the response headers
    settled: int = 0  # downloads that have their response headers, or failed before them
    last_settled: float = 0.0  # loop time of the last of those


async def slow_download(
    port: int,
    path: str,
    cookie: str,
    *,
    start: int,
    length: int,
    expected: memoryview,
    rate: int,
    delay: float,
    deadline: float,
    result: SlowResult,
) -> None:
    await asyncio.sleep(delay)
    tick = 0.5
    writer = None
    loop = asyncio.get_running_loop()
    settled = False
    try:
        async with asyncio.timeout_at(deadline):
            asked = loop.time()
            reader, writer = await connect(port, rcvbuf=64 * KIB)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nCookie: {cookie}\r\nConnection: close\r\n"
                f"Range: bytes={start}-{start + length - 1}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            result.headers_after.append(loop.time() - asked)
            result.settled += 1
            result.last_settled = loop.time()
            settled = True
            status = head.split(b" ", 2)[1].decode()
            if status != "206":
                result.errors[f"status {status}"] += 1
                return
            if f"content-range: bytes {start}-{start + length - 1}/".encode() not in head.lower():
                result.errors["wrong Content-Range"] += 1
                return
            got, began = 0, loop.time()
            while got < length:
                allowed = min(length, int(rate * (loop.time() - began)) + int(rate * tick))
                if allowed <= got:
                    await asyncio.sleep(tick)
                    continue
                data = await reader.read(allowed - got)
                if not data:
                    result.errors["closed early"] += 1
                    return
                if expected[start + got : start + got + len(data)] != data:
                    result.errors["wrong bytes"] += 1
                    return
                got += len(data)
            result.bytes_checked += got
            result.ok += 1
            result.finished_at.append(loop.time())
    except TimeoutError:
        result.errors["unfinished at the deadline"] += 1
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        result.errors[type(exc).__name__] += 1
    finally:
        if not settled:
            result.settled += 1
            result.last_settled = loop.time()
        if writer is not None:
            abort(writer)


async def curl_async(url: str, cookie: str) -> tuple[float, int, int, float]:
    """(MB/s, bytes, status, seconds) of one full download by curl, a process of its own."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *("curl", "--silent", "--noproxy", "*", "-o", "/dev/null", "-b", cookie, "--max-time", "300"),
        *("-w", "%{speed_download} %{size_download} %{http_code}", url),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    speed, size, status = out.split()
    return float(speed) / 1e6, int(size), int(status), time.perf_counter() - started


@dataclass
class Trickle:
    opened: Counter[str] = field(default_factory=Counter)
    cut: Counter[str] = field(default_factory=Counter)  # the server closed or answered before we finished
    answers: Counter[str] = field(default_factory=Counter)


async def trickle_header(port: int, path: str, stop_at: float, stats: Trickle, *, every: float = 2.0) -> None:
    """Slowloris: a request header a byte every ``every`` seconds, never finished; reconnects when cut."""
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: {'a' * 4000}\r\n".encode()
    while loop.time() < stop_at:
        writer = None
        try:
            reader, writer = await connect(port)
            stats.opened["header"] += 1
            for byte in request:
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    data = await asyncio.wait_for(
                        reader.read(1024), max(0.01, min(every, stop_at - loop.time()))
                    )
                    stats.cut["header"] += 1
                    if data:
                        stats.answers[data.split(b"\r\n", 1)[0].decode(errors="replace")[:40]] += 1
                    break
                if loop.time() >= stop_at:
                    return
        except OSError:
            stats.cut["header"] += 1
        finally:
            if writer is not None:
                abort(writer)


async def trickle_body(
    port: int, cookie: str, csrf: str, stop_at: float, stats: Trickle, *, per_second: int = 4, size: int = MIB
) -> None:
    """An upload whose body arrives ``per_second`` bytes a second; reconnects when the server answers or
    cuts it."""
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        writer = None
        try:
            reader, writer = await connect(port)
            stats.opened["body"] += 1
            writer.write(
                f"POST /secure/files/?filename=trickle.bin HTTP/1.1\r\nHost: {HOST}\r\nCookie: {cookie}\r\n"
                f"X-CSRFToken: {csrf}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {size}\r\n\r\n".encode()
            )
            sent = 0
            while sent < size and loop.time() < stop_at:
                writer.write(b"x" * per_second)
                await writer.drain()
                sent += per_second
                with contextlib.suppress(TimeoutError):
                    data = await asyncio.wait_for(
                        reader.read(1024), max(0.01, min(1.0, stop_at - loop.time()))
                    )
                    stats.cut["body"] += 1
                    if data:
                        stats.answers[data.split(b"\r\n", 1)[0].decode(errors="replace")[:40]] += 1
                    break
        except OSError:
            stats.cut["body"] += 1
        finally:
            if writer is not None:
                abort(writer)


async def stalled_body(port: int, cookie: str, csrf: str, stop_at: float, stats: Trickle) -> None:
    """An upload that sends half its body at once, then nothing: a body that never finishes."""
    size = 2 * MIB
    writer = None
    try:
        reader, writer = await connect(port)
        stats.opened["stalled body"] += 1
        writer.write(
            f"POST /secure/files/?filename=stalled.bin HTTP/1.1\r\nHost: {HOST}\r\nCookie: {cookie}\r\n"
            f"X-CSRFToken: {csrf}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
            + os.urandom(size // 2)
        )
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            data = await asyncio.wait_for(
                reader.read(1024), max(0.01, stop_at - asyncio.get_running_loop().time())
            )
            stats.cut["stalled body"] += 1
            if data:
                stats.answers[data.split(b"\r\n", 1)[0].decode(errors="replace")[:40]] += 1
    except OSError:
        stats.cut["stalled body"] += 1
    finally:
        if writer is not None:
            abort(writer)


async def non_reader(port: int, path: str, cookie: str, stop_at: float, stats: Trickle) -> None:
    """A download whose client reads nothing at all: the server's writes meet a full 4 KiB window."""
    writer = None
    try:
        _, writer = await connect(port, rcvbuf=4 * KIB)
        # Pause at once: asyncio would otherwise read (and so drain) the socket on our behalf.
        writer.transport.pause_reading()
        stats.opened["non-reader"] += 1
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nCookie: {cookie}\r\n\r\n".encode())
        await asyncio.sleep(max(0.0, stop_at - asyncio.get_running_loop().time()))
    except OSError:
        stats.cut["non-reader"] += 1
    finally:
        if writer is not None:
            abort(writer)


async def open_and_drop(port: int, count: int, stats: Trickle, *, batch: int = 200) -> None:
    """``count`` connections opened and dropped at once: every other one sends half a request line first,
    every third one is reset instead of closed."""

    async def one(i: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
            stats.opened["dropped"] += 1
            if i % 2:
                sock.send(b"GET /secure/fi")
            if i % 3 == 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            stats.cut["dropped (connect failed)"] += 1
        finally:
            sock.close()

    for first in range(0, count, batch):
        await asyncio.gather(*(one(i) for i in range(first, min(count, first + batch))))


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- scenarios ----------------------------------------------------------------------------------------------


@dataclass
class Context:
    sizes: Sizes
    work: Path
    db: Path
    cookie: str
    csrf: str
    small_path: str
    big_path: str
    small_plain: bytes


def pending_blobs(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return conn.execute("SELECT count(*) FROM blobs_blob WHERE state = 'pending'").fetchone()[0]


def settle(ctx: Context) -> None:
    time.sleep(ctx.sizes.settle)  # the server's own cleanup after the clients left (closing sockets, aborts)


def scenario_a(server: ModeServer, ctx: Context) -> dict[str, Any]:
    """A (N slow downloads, all bytes checked) with C (one fast big download) inside it."""
    s = ctx.sizes
    big_url = server.url(ctx.big_path)
    fds_before, rss_before = server.fds(), server.rss_bytes()
    result = SlowResult()
    expected = memoryview(ctx.small_plain)
    span = len(ctx.small_plain) - s.slow_range
    ideal = s.ramp + s.slow_range / s.slow_rate
    budget = ideal * 1.5 + 10

    async def run() -> tuple[float, Any, tuple[float, float], float | None, float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + budget
        tasks = [
            asyncio.create_task(
                slow_download(
                    server.port,
                    ctx.small_path,
                    ctx.cookie,
                    start=i * span // max(1, s.slow_clients - 1),
                    length=s.slow_range,
                    expected=expected,
                    rate=s.slow_rate,
                    delay=s.ramp * i / s.slow_clients,
                    deadline=deadline,
                    result=result,
                )
            )
            for i in range(s.slow_clients)
        ]
        # C: one fast download of the big blob once every slow one is streaming (the steady state the
        # target is about: starting 1,000 requests is itself seconds of server time), but at the latest
        # when 60 % of a slow download's time has passed after the ramp, so that it still runs among them.
        await asyncio.sleep(s.ramp)
        latest = began + s.ramp + 0.6 * s.slow_range / s.slow_rate
        while result.settled < s.slow_clients and loop.time() < latest:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        c_started = loop.time() - began
        c_in_steady_state = len(result.headers_after) == s.slow_clients
        fast_window = (time.monotonic(), 0.0)
        try:
            fast: tuple[float, int, int, float] | None = await asyncio.wait_for(
                curl_async(big_url, ctx.cookie), max(1.0, deadline - loop.time())
            )
        except TimeoutError:
            fast = None
        fast_window = (fast_window[0], time.monotonic())
        await asyncio.gather(*tasks)
        last = max(result.finished_at, default=loop.time())
        return last - began, fast, fast_window, (c_started, c_in_steady_state), began

    with Probes(server) as probes:
        started = time.monotonic()
        took, fast, fast_window, c_start, began = asyncio.run(run())
        if not result.finished_at:
            took = time.monotonic() - started
    settle(ctx)
    # C's reference, measured after A (on the now idle server) so that A's RSS "before" is not a stock-ASGI
    # worker still holding a whole buffered response. Best of two: the first also warms a fresh worker.
    idle = max(asyncio.run(curl_async(big_url, ctx.cookie)) for _ in range(2))
    log(f"{server.mode}: idle fast download {idle[0]:,.0f} MB/s (status {idle[2]}, {idle[1]} bytes)")
    health = [latency for _, latency in probes.health]
    # Steady state: from the last slow download's response headers to the first one's end, C not running.
    streaming = len(result.headers_after) == s.slow_clients  # every one had its response headers
    all_started = result.last_settled - began if streaming else None
    steady_from = result.last_settled if all_started is not None else float("inf")
    steady_to = min(result.finished_at, default=float("inf"))
    steady = [
        lat
        for when, lat in probes.health
        if steady_from <= when <= steady_to and not fast_window[0] <= when <= fast_window[1]
    ]
    return {
        "result": result,
        "took": took,
        "ideal": ideal,
        "budget": budget,
        "rss_before": rss_before,
        "rss_peak": max([rss_before, *probes.rss]),
        "fds": (fds_before, server.fds()),
        "health": health,
        "health_steady": steady,
        "all_started": all_started,
        "c_start": c_start,
        "idle_fast": idle,
        "fast": fast,
    }


def scenario_b(server: ModeServer, ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    stats = Trickle()
    pending_before = pending_blobs(ctx.db)
    probe_offset = len(ctx.small_plain) // 3
    probe = (ctx.small_path, ctx.cookie, probe_offset, ctx.small_plain[probe_offset : probe_offset + MIB])

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + s.trickle_seconds + 2.0
        tasks = []
        for i in range(s.tricklers):
            await asyncio.sleep(2.0 / s.tricklers)  # ramp over 2 s
            if i % 2:
                tasks.append(
                    asyncio.create_task(trickle_body(server.port, ctx.cookie, ctx.csrf, stop_at, stats))
                )
            else:
                tasks.append(asyncio.create_task(trickle_header(server.port, ctx.small_path, stop_at, stats)))
        await asyncio.gather(*tasks)

    with Probes(server, download=probe) as probes:
        asyncio.run(run())
    settle(ctx)
    return {
        "stats": stats,
        "health": [latency for _, latency in probes.health],
        "downloads": probes.downloads,
        "pending": pending_blobs(ctx.db) - pending_before,
    }


def scenario_bad(server: ModeServer, ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    stats = Trickle()
    before = (server.fds(), server.rss_bytes(), server.db_fds(ctx.db), pending_blobs(ctx.db))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + s.hold_seconds
        tasks = [
            *(
                asyncio.create_task(trickle_header(server.port, ctx.small_path, stop_at, stats, every=2.0))
                for _ in range(s.slowloris)
            ),
            *(
                asyncio.create_task(stalled_body(server.port, ctx.cookie, ctx.csrf, stop_at, stats))
                for _ in range(s.stalled_bodies)
            ),
            *(
                asyncio.create_task(non_reader(server.port, ctx.small_path, ctx.cookie, stop_at, stats))
                for _ in range(s.non_readers)
            ),
        ]
        await asyncio.sleep(0.5)
        await open_and_drop(server.port, s.dropped, stats)
        await asyncio.gather(*tasks)

    with Probes(server) as probes:
        asyncio.run(run())
    settle(ctx)
    after = (server.fds(), server.rss_bytes(), server.db_fds(ctx.db), pending_blobs(ctx.db))
    return {"stats": stats, "health": [lat for _, lat in probes.health], "before": before, "after": after}


def scenario_d(servers: dict[str, ModeServer], ctx: Context, quiet: Quiet) -> dict[str, Any]:
    s = ctx.sizes
    approaches = [
        Approach(mode, server.url(ctx.big_path), ctx.cookie, server) for mode, server in servers.items()
    ]
    throughput(approaches, size=s.big_blob, runs=s.rounds, quiet=quiet)
    aggregate = concurrent_throughput(
        approaches, size=s.big_blob, clients=s.concurrent, runs=s.rounds, quiet=quiet
    )
    return {"single": {a.label: a.speeds for a in approaches}, "aggregate": aggregate}


# --- physical limits ----------------------------------------------------------------------------------------


def loopback_copy(size: int) -> float:
    """MB/s of a plain TCP socket copy over loopback (1 MiB sends, recv_into one buffer): the wire's limit."""
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]
    chunk = os.urandom(MIB)

    def send() -> None:
        with socket.create_connection((HOST, port)) as out:
            for _ in range(size // MIB):
                out.sendall(chunk)

    sender = threading.Thread(target=send)
    started = time.perf_counter()
    sender.start()
    conn, _ = listener.accept()
    buffer = bytearray(MIB)
    received = 0
    with conn, listener:
        while n := conn.recv_into(buffer):
            received += n
    sender.join()
    return received / (time.perf_counter() - started) / 1e6


# --- report -------------------------------------------------------------------------------------------------


def yes(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def mib(n: float) -> str:
    return f"{n / MIB:,.0f} MiB" if n >= MIB or n == 0 else f"{n / KIB:,.0f} KiB"


def report(
    args: argparse.Namespace,
    facts: dict[str, str],
    limits: dict[str, Any],
    results: dict[str, dict[str, Any]],
    failures: dict[str, str],
    d: dict[str, Any] | None,
    quiet: Quiet,
) -> None:
    s = args.sizes
    print(
        "## Many slow clients: event vs gthread vs stock ASGI (uvicorn)"
        f"{' — QUICK smoke run' if args.quick else ''}\n"
    )
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    print(
        f"\nPhysical limits: {os.cpu_count()} cores; AES-256-GCM one thread (this process, 1 MiB segments): "
        + ", ".join(f"{name} {rate:.2f} GB/s" for name, rate in limits["aes"].items())
        + f"; loopback plain socket copy {limits['loopback']:,.0f} MB/s.\n"
    )
    print(
        "The clients run on the same machine as the server (the same cores): one asyncio process for the "
        "many connections, a forked process for the /health and 1 MiB probes, curl for fast downloads. "
        "Servers: gunicorn, 2 workers each — "
        f"`event` = erphub.event_worker.EventWorker (SERVER_MAX_CONNECTIONS_PER_ADDRESS={PER_ADDRESS_CAP}, "
        "raised because every benchmark connection comes from 127.0.0.1; other SERVER_* at their defaults), "
        f"`gthread` = {WORKERS} workers x {THREADS} threads (before issue 13), `uvicorn` = stock Django "
        "`get_asgi_application()` (bench/asgi_stock.py) under uvicorn_worker.UvicornWorker. "
        f"UPLOAD_THROTTLE_RATE={UPLOAD_THROTTLE} for all (the trickling uploads would meet the per-user "
        "throttle). "
        f"/health probes: a fresh connection every 100 ms, {HEALTH_TIMEOUT:.0f} s timeout; p50 / p99 over "
        "answered probes, ∞ when more than 1 % failed.\n"
    )
    for mode, reason in failures.items():
        print(f"- **{mode}**: {reason}")
    if failures:
        print()

    print(
        f"### A. {s.slow_clients:,} concurrent downloads at {s.slow_rate // KIB} KiB/s "
        f"({mib(s.slow_range)} ranges of a {mib(s.small_blob)} blob, SO_RCVBUF 64 KiB, ramp {s.ramp:.0f} s)\n"
    )
    print(
        "| mode | completed, every byte checked | errors | took (ideal) | RSS before → peak (growth) "
        "| /health p50 / p99 | fds before → after | targets met (0 errors, growth < 512 MiB, p99 < 250 ms) |"
    )
    print("|---|--:|---|--:|--:|--:|--:|---|")
    for mode, r in results.items():
        a = r.get("A")
        if not a:
            continue
        res: SlowResult = a["result"]
        growth = a["rss_peak"] - a["rss_before"]
        errors = ", ".join(f"{k}: {v}" for k, v in res.errors.most_common()) or "0"
        met = (not res.errors) and growth < 512 * MIB and p99_ms(a["health"]) < 250
        print(
            f"| {mode} | {res.ok:,} / {s.slow_clients:,} ({mib(res.bytes_checked)}) | {errors} "
            f"| {a['took']:.0f} s ({a['ideal']:.0f} s; cut at {a['budget']:.0f} s) "
            f"| {mib(a['rss_before'])} → {mib(a['rss_peak'])} ({mib(growth)}) "
            f"| {latency_summary(a['health'])} | {a['fds'][0]} → {a['fds'][1]} | {yes(met)} |"
        )
    print(
        "\nA's start-up and steady state (every download streaming, C not running):\n\n"
        "| mode | every download streaming after | response headers after, median / max "
        "| /health p50 / p99, steady state |"
    )
    print("|---|--:|--:|--:|")
    for mode, r in results.items():
        a = r.get("A")
        if not a:
            continue
        heads = sorted(a["result"].headers_after)
        heads_text = f"{heads[len(heads) // 2]:.2f} / {heads[-1]:.2f} s" if heads else "none"
        started = f"{a['all_started']:.1f} s" if a["all_started"] is not None else "never (cut)"
        print(f"| {mode} | {started} | {heads_text} | {latency_summary(a['health_steady'])} |")

    print(f"\n### C. One fast {mib(s.big_blob)} download (curl) during A vs on the idle server\n")
    print(
        "| mode | idle MB/s (best of 2, after A) | during A MB/s | started (after A began) | ratio | ≥ 0.5 |"
    )
    print("|---|--:|--:|---|--:|---|")
    for mode, r in results.items():
        a = r.get("A")
        if not a:
            continue
        idle, fast = a["idle_fast"], a["fast"]
        when = f"{a['c_start'][0]:.0f} s, " + (
            "all slow ones streaming" if a["c_start"][1] else "**some slow ones not yet answered**"
        )
        idle_ok = idle[2] == 200 and idle[1] == s.big_blob
        if fast is None or fast[2] != 200 or fast[1] != s.big_blob:
            what = "timed out" if fast is None else f"status {fast[2]}, {fast[1]:,} bytes"
            print(f"| {mode} | {idle[0]:,.0f} | failed ({what}) | {when} | – | **NO** |")
            continue
        ratio = fast[0] / idle[0] if idle_ok and idle[0] else 0.0
        print(f"| {mode} | {idle[0]:,.0f} | {fast[0]:,.0f} | {when} | {ratio:.2f} | {yes(ratio >= 0.5)} |")

    print(
        f"\n### B. {s.tricklers} trickling connections for {s.trickle_seconds:.0f} s (half a header byte "
        "every 2 s, "
        "half an upload body 4 B/s; reconnect when cut)\n"
    )
    print(
        "| mode | opened (header / body) | cut or answered by the server | answers | /health p50 / p99 "
        "| 1 MiB download every 1 s: median / max | pending blobs left | /health p99 < 250 ms |"
    )
    print("|---|--:|--:|---|--:|--:|--:|---|")
    for mode, r in results.items():
        b = r.get("B")
        if not b:
            continue
        st: Trickle = b["stats"]
        dl = [x for x in b["downloads"] if x is not None]
        failed = len(b["downloads"]) - len(dl)
        dl_text = f"{statistics.median(dl) * 1e3:,.0f} / {max(dl) * 1e3:,.0f} ms" if dl else "none"
        answers = ", ".join(f"{k}: {v}" for k, v in st.answers.most_common(3)) or "–"
        print(
            f"| {mode} | {st.opened['header']} / {st.opened['body']} | {st.cut['header']} / {st.cut['body']} "
            f"| {answers} | {latency_summary(b['health'])} "
            f"| {dl_text} ({len(b['downloads'])}, {failed} failed) "
            f"| {b['pending']} | {yes(p99_ms(b['health']) < 250)} |"
        )

    print(
        f"\n### Bad input, all at once for {s.hold_seconds:.0f} s: {s.slowloris} slowloris, "
        f"{s.stalled_bodies} "
        f"upload bodies stopped half-way, {s.non_readers} downloads of the {mib(s.small_blob)} blob reading "
        f"nothing (SO_RCVBUF 4 KiB), "
        f"{s.dropped:,} connections opened and dropped; measured {s.settle:.0f} s after the clients left\n"
    )
    print(
        "| mode | fds before → after | RSS before → after | SQLite fds before → after | /health p50 / p99 "
        "| cut by the server (slowloris / stalled) | pending blobs before → after |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for mode, r in results.items():
        bad = r.get("bad")
        if not bad:
            continue
        (f0, r0, d0, p0), (f1, r1, d1, p1) = bad["before"], bad["after"]
        st = bad["stats"]
        print(
            f"| {mode} | {f0} → {f1} | {mib(r0)} → {mib(r1)} | {d0} → {d1} "
            f"| {latency_summary(bad['health'])} "
            f"| {st.cut['header']} / {st.cut['stalled body']} | {p0} → {p1} |"
        )

    print(
        "\nServer logs (whole run per mode): "
        + "; ".join(
            f"{mode}: " + ", ".join(f"{k} {v}" for k, v in r["log"].items())
            for mode, r in results.items()
            if "log" in r
        )
    )

    if d:
        print(
            f"\n### D. Idle server, event vs gthread, {mib(s.big_blob)} downloads (curl), {s.rounds} rounds "
            "alternating, median\n"
        )
        print(
            f"Runs discarded (other processes > {quiet.others_limit} cores): {quiet.discarded}; "
            "started on a busy "
            f"machine: {quiet.noisy}; waited {quiet.waited:.0f} s for quiet.\n"
        )
        print(
            "| measure | event MB/s | gthread MB/s | event / gthread | ≥ 0.95 | per round (event; gthread) |"
        )
        print("|---|--:|--:|--:|---|---|")
        for label, data in (
            ("one download", d["single"]),
            (f"{s.concurrent} simultaneous, aggregate", d["aggregate"]),
        ):
            ev, gt = data["event"], data["gthread"]
            ratio = statistics.median(ev) / statistics.median(gt)
            print(
                f"| {label} | {statistics.median(ev) / 1e6:,.0f} | {statistics.median(gt) / 1e6:,.0f} "
                f"| {ratio:.2f} | {yes(ratio >= 0.95)} "
                f"| {', '.join(f'{x / 1e6:,.0f}' for x in ev)}; {', '.join(f'{x / 1e6:,.0f}' for x in gt)} |"
            )


# --- main ---------------------------------------------------------------------------------------------------


def seeded_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def raise_fd_limit(needed: int) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    return f"{soft} → {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} (hard {hard})"


def upload(session: Session, work: Path, name: str, data_or_size: bytes | int, seed: int) -> str:
    path = work / name
    with path.open("wb") as out:
        if isinstance(data_or_size, bytes):
            out.write(data_or_size)
        else:
            rng = random.Random(seed)
            for _ in range(data_or_size // (8 * MIB)):
                out.write(rng.randbytes(8 * MIB))
    created = session.upload_raw(path)
    path.unlink()
    return str(created["id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts and sizes: a smoke run < 2 min")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {MODES}")
    args = parser.parse_args()
    args.sizes = QUICK if args.quick else FULL
    s: Sizes = args.sizes
    modes = [m for m in args.modes.split(",") if m]
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    fd_limit = raise_fd_limit(s.slow_clients * 2 + s.tricklers * 2 + 2000)
    if shutil.which("curl") is None:
        print("curl is required", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="erphub-bench-slow-", dir="/tmp"))
    var_dir = work / "var"
    var_dir.mkdir()
    password = secrets.token_urlsafe(18)
    env = server_env(
        var_dir,
        username=USERNAME,
        password=password,
        key_id="bench-1",
        SERVER_MAX_CONNECTIONS_PER_ADDRESS=str(PER_ADDRESS_CAP),
        UPLOAD_THROTTLE_RATE=UPLOAD_THROTTLE,
    )
    db = var_dir / "db.sqlite3"
    servers: list[ModeServer] = []
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    d = None
    # The machine is shared: wait a little for quiet before each D measurement, not for ever.
    quiet = Quiet(max_wait=0, retries=0) if args.quick else Quiet(max_wait=20, retries=1)
    try:
        log(f"work dir {work}; fd limit {fd_limit}; physical limits")
        limits = {
            "aes": aes_gcm_limit(rounds=3 if args.quick else 15, per_round=30 if args.quick else 100),
            "loopback": loopback_copy(128 * MIB if args.quick else 2048 * MIB),
        }
        prepare_database(env)
        small_plain = seeded_bytes(13, s.small_blob)
        first = ModeServer.start_mode("event", env, work)
        servers.append(first)
        first.wait_until_healthy()
        session = Session(first, timeout=600)
        session.login(USERNAME, password)
        log("uploading the blobs through the API")
        small_id = upload(session, work, "small.bin", small_plain, 13)
        big_id = upload(session, work, "big.bin", s.big_blob, 14)
        ctx = Context(
            sizes=s,
            work=work,
            db=db,
            cookie=f"sessionid={session.cookies['sessionid']}; csrftoken={session.cookies['csrftoken']}",
            csrf=session.cookies["csrftoken"],
            small_path=f"/secure/files/{small_id}/stream",
            big_path=f"/secure/files/{big_id}/stream",
            small_plain=small_plain,
        )
        first.stop(timeout=30)
        servers.remove(first)

        for mode in modes:
            log(f"=== {mode} ===")
            server = ModeServer.start_mode(mode, env, work)
            servers.append(server)
            results[mode] = {}
            try:
                server.wait_until_healthy(timeout=60)
                check = curl(server.url(ctx.small_path), cookie=ctx.cookie, byte_range="0-1023")
                if check.status != 206 or check.size != 1024:
                    raise RuntimeError(f"a range of the blob: {check.status}, {check.size} bytes")
                log(f"{mode}: A + C")
                results[mode]["A"] = scenario_a(server, ctx)
                a = results[mode]["A"]
                log(
                    f"{mode}: A ok {a['result'].ok}, errors {dict(a['result'].errors)}, "
                    f"took {a['took']:.0f} s"
                )
                log(f"{mode}: B")
                results[mode]["B"] = scenario_b(server, ctx)
                log(f"{mode}: bad input")
                results[mode]["bad"] = scenario_bad(server, ctx)
            except Exception as exc:
                failures[mode] = f"{type(exc).__name__}: {exc}"[:500]
                log(f"{mode} failed: {failures[mode]}")
            finally:
                server.stop(timeout=30)
                servers.remove(server)
                results[mode]["log"] = server.log_problems()

        if {"event", "gthread"} <= set(modes):
            log("=== D: event vs gthread, idle, interleaved ===")
            pair = {mode: ModeServer.start_mode(mode, env, work) for mode in ("event", "gthread")}
            servers.extend(pair.values())
            for server in pair.values():
                server.wait_until_healthy()
            d = scenario_d(pair, ctx, quiet)
        facts = machine_facts()
        facts["fd limit (soft)"] = fd_limit
        import uvicorn

        facts["uvicorn"] = uvicorn.__version__
        facts["pending blobs at the end"] = str(pending_blobs(db))
        report(args, facts, limits, results, failures, d, quiet)
        return 0
    finally:
        for server in servers:
            server.stop(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
