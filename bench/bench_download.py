"""Download benchmark: encrypted blob stream vs Django FileResponse, under a real gunicorn (not a test).

    .venv/bin/python bench/bench_download.py                      # the full run: 1 GiB, RSS with 2 GiB
    .venv/bin/python bench/bench_download.py --size-mib 64 --rss-size-mib 128 --runs 3 --ttfb-reps 20

Starts three gunicorn servers (gthread, 2 workers x 4 threads) on loopback ports, each with the same fresh
var dir and SQLite database under /tmp:

- ``ours``: the product (erphub.settings), ``--no-sendfile`` as ``make run`` serves it;
- ``(a)``: bench/settings_bench.py, Django FileResponse of the same plaintext with gunicorn's sendfile;
- ``(b)``: the same settings, FileResponse with ``block_size = 1 MiB`` under ``--no-sendfile``; the same
  server also runs the anchors' unauthenticated AES-CTR peer, django-encrypted-files 0.0.10, with 1 MiB reads
  over its own copy of the plaintext (``/bench/ctr-1mib``).

Before the timed runs each encrypted approach is downloaded once and its SHA-256 compared with the
plaintext's, so a fast wrong answer (ciphertext sent as is) cannot pass.

It imports a ``--size-mib`` blob with ``manage.py blobs_import``, then measures with curl
(``-w '%{speed_download} %{time_starttransfer}'``), ``--runs`` runs interleaved, median MB/s (10**6 bytes
per second); the time to first byte of 1-byte ranges at offset 0 and at the last byte of the blob; and the
server's RSS (master + workers, VmRSS from /proc) before and after uploading a ``--rss-size-mib`` file
through ``POST /secure/files/`` (raw body streamed from disk) and downloading it. Prints markdown tables.
Every temporary file lives under one directory in /tmp, removed at the end.

    .venv/bin/python bench/bench_download.py --ab-settings bench.settings_noaudit --runs 12

    .venv/bin/python bench/bench_download.py --ab-base-tree /path/to/main --runs 9 [--postgres]

``--ab-base-tree TREE`` compares this tree (``A``) with another checkout of the product (``B``, e.g. main
before a change) the same way, both under erphub.settings on one database (SQLite, or a fresh PostgreSQL
database on 127.0.0.1:5432 with ``--postgres``, dropped at the end).

``--ab-settings MODULE`` runs only a side-by-side comparison of the product with itself: server ``A`` under
erphub.settings, server ``B`` under ``MODULE`` (a bench-only variant), both ``--no-sendfile``; ``--runs``
rounds of one full download from each, the order alternating (A B, B A, ...), median MB/s, the median of the
per-round ratios and the servers' CPU per GiB, beside AES-GCM's single-thread rate on this machine measured
in the same run (the most one serving thread could ever send, were everything else free). The run of
2026-12-02 in docs/benchmarks.md used it at commit 27c8429 with ``bench.settings_zerofill``.

SIGTERM stops the servers and removes the temporary directory, as the normal end does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root, for blobs.tests

from blobs.tests.liveserver import Gunicorn, manage, prepare_database, server_env
from blobs.tests.liveserver import Session as LiveSession

MIB = 1 << 20
USERNAME = "admin"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- servers ------------------------------------------------------------------------------------------------


class Server(Gunicorn):
    def pids(self) -> list[int]:
        return [self.proc.pid, *self.worker_pids()]

    def rss_bytes(self) -> int:
        """Sum of VmRSS over the master and its workers."""
        total = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
            if match:
                total += int(match.group(1)) * 1024
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU of the master and its workers so far."""
        ticks = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


def start_server(
    name: str, env: dict[str, str], work: Path, *, settings: str, sendfile: bool, cwd: Path | None = None
) -> Server:
    return Server.start(
        {**env, "DJANGO_SETTINGS_MODULE": settings},
        work / f"gunicorn-{name}.log",
        timeout=300,
        sendfile=sendfile,
        name=name,
        **({"cwd": cwd} if cwd is not None else {}),
    )


# --- HTTP helpers -------------------------------------------------------------------------------------------


class Session(LiveSession):
    def upload_raw(
        self, path: Path, *, url: str = "/secure/files/", headers: dict[str, str] | None = None
    ) -> dict:
        """POST the file as a raw body with Content-Length, streamed from disk 1 MiB at a time.
        ``headers`` authenticate it (default: this session's CSRF token beside its cookie)."""
        with path.open("rb") as handle:
            reply = self.request(
                "POST",
                f"{url}?filename={path.name}",
                body=handle,
                blocksize=MIB,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(path.stat().st_size),
                    **(headers if headers is not None else {"X-CSRFToken": self.cookies["csrftoken"]}),
                },
            )
        if reply.status != 201:
            raise RuntimeError(f"upload to {url} failed: {reply.status} {reply.body[:300]!r}")
        return reply.json()


@dataclass(frozen=True)
class CurlResult:
    speed: float  # bytes per second
    ttfb: float  # seconds
    size: int
    status: int


def curl(
    url: str, *, cookie: str | None = None, byte_range: str | None = None, headers: tuple[str, ...] = ()
) -> CurlResult:
    command = [
        "curl",
        "--silent",
        "--show-error",
        "--noproxy",
        "*",
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download} %{time_starttransfer} %{size_download} %{http_code}",
    ]
    if cookie:
        command += ["-b", cookie]
    if byte_range:
        command += ["-r", byte_range]
    for header in headers:
        command += ["-H", header]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    speed, ttfb, size, status = done.stdout.split()
    return CurlResult(float(speed), float(ttfb), int(size), int(status))


# --- measurements -------------------------------------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait


def cpu_busy(interval: float = 0.5) -> float:
    """Share of the machine's CPU time spent busy over ``interval`` (all processes, all CPUs)."""
    total0, idle0 = _cpu_times()
    time.sleep(interval)
    total1, idle1 = _cpu_times()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


class Quiet:
    """Waits before each measurement until the machine is idle: other people's test suites on the same
    2 vCPUs halve every number otherwise. Counts the measurements that started on a busy machine."""

    def __init__(
        self, limit: float = 0.10, max_wait: float = 180.0, others_limit: float = 0.25, retries: int = 3
    ) -> None:
        self.limit, self.max_wait = limit, max_wait
        self.others_limit, self.retries = others_limit, retries
        self.noisy = 0
        self.discarded = 0
        self.waited = 0.0

    @contextmanager
    def watch(self, server: Server) -> Iterator[list[float]]:
        """Yields a one-item list that receives, after the block, the CPU (in cores) that processes other
        than ``server`` and our child processes (curl) used meanwhile — softirq time of loopback included."""
        result = [0.0]
        tick = os.sysconf("SC_CLK_TCK")
        total0, idle0 = _cpu_times()
        server0 = server.cpu_seconds()
        child0 = os.times()
        wall0 = time.monotonic()
        yield result
        wall = time.monotonic() - wall0
        total1, idle1 = _cpu_times()
        child1 = os.times()
        busy = ((total1 - total0) - (idle1 - idle0)) / tick
        ours = (
            (server.cpu_seconds() - server0)
            + (child1.children_user - child0.children_user)
            + (child1.children_system - child0.children_system)
        )
        result[0] = max(0.0, busy - ours) / max(wall, 1e-6)

    def wait(self) -> None:
        deadline = time.monotonic() + self.max_wait
        started = time.monotonic()
        while (busy := cpu_busy()) > self.limit:
            if time.monotonic() > deadline:
                self.noisy += 1
                log(f"machine still {busy:.0%} busy after {self.max_wait:.0f} s; measuring anyway")
                break
            time.sleep(2)
        self.waited += time.monotonic() - started


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            n = min(remaining, 8 * MIB)
            handle.write(os.urandom(n))
            remaining -= n


def write_ctr_copy(plain: Path, path: Path, key: bytes) -> None:
    """django-encrypted-files' format: a random 16-byte nonce, then AES-CTR of the plaintext."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    nonce = os.urandom(16)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    with plain.open("rb") as source, path.open("wb") as sink:
        sink.write(nonce)
        while block := source.read(8 * MIB):
            sink.write(encryptor.update(block))
        sink.write(encryptor.finalize())


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_download(url: str, cookie: str | None) -> str:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        conn.request("GET", parts.path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status}")
        digest = hashlib.sha256()
        while block := response.read(MIB):
            digest.update(block)
        return digest.hexdigest()
    finally:
        conn.close()


@dataclass
class Approach:
    label: str
    url: str
    cookie: str | None
    server: Server
    headers: tuple[str, ...] = ()
    speeds: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    cpu_per_gib: list[float] = field(default_factory=list)  # the server's CPU seconds per GiB sent

    @property
    def mbps(self) -> float:
        return statistics.median(self.speeds) / 1e6


def throughput(approaches: list[Approach], *, size: int, runs: int, quiet: Quiet) -> None:
    for approach in approaches:  # warm-up: page cache, imports, DEK cache
        result = curl(approach.url, cookie=approach.cookie, headers=approach.headers)
        if result.status != 200 or result.size != size:
            raise RuntimeError(f"{approach.label}: warm-up got {result.status}, {result.size} bytes")
    for run in range(runs):
        shift = run % len(approaches)  # rotate who goes first
        order = approaches[shift:] + approaches[:shift]
        for approach in order:
            for attempt in range(1, quiet.retries + 2):
                quiet.wait()
                cpu = approach.server.cpu_seconds()
                with quiet.watch(approach.server) as others:
                    result = curl(approach.url, cookie=approach.cookie, headers=approach.headers)
                cpu_per_gib = (approach.server.cpu_seconds() - cpu) / (size / (1 << 30))
                if result.status != 200 or result.size != size:
                    raise RuntimeError(f"{approach.label}: got {result.status}, {result.size} bytes")
                log(
                    f"run {run + 1}/{runs} {approach.label}: {result.speed / 1e6:,.0f} MB/s, server CPU "
                    f"{cpu_per_gib:.2f} s/GiB (other processes: {others[0]:.2f} cores)"
                )
                if others[0] <= quiet.others_limit or attempt > quiet.retries:
                    break
                quiet.discarded += 1
                log("  discarded: something else ran during the measurement; again")
            approach.speeds.append(result.speed)
            approach.ttfbs.append(result.ttfb)
            approach.cpu_per_gib.append(cpu_per_gib)


def concurrent_throughput(
    approaches: list[Approach], *, size: int, clients: int, runs: int, quiet: Quiet
) -> dict[str, list[float]]:
    """Aggregate MB/s of ``clients`` simultaneous whole downloads per approach (what a busy server delivers,
    where one download's figure is what one client sees), ``runs`` interleaved runs."""
    speeds: dict[str, list[float]] = {approach.label: [] for approach in approaches}
    for run in range(runs):
        shift = run % len(approaches)
        for approach in approaches[shift:] + approaches[:shift]:
            quiet.wait()
            command = ["curl", "--silent", "--show-error", "--noproxy", "*", "-o", "/dev/null"]
            command += ["-w", "%{size_download} %{http_code}"]
            if approach.cookie:
                command += ["-b", approach.cookie]
            started = time.perf_counter()
            procs = [
                subprocess.Popen([*command, approach.url], stdout=subprocess.PIPE, text=True)
                for _ in range(clients)
            ]
            outputs = [proc.communicate()[0].split() for proc in procs]
            seconds = time.perf_counter() - started
            if any(out != [str(size), "200"] for out in outputs):
                raise RuntimeError(f"{approach.label}: concurrent downloads got {outputs}")
            speed = clients * size / seconds
            speeds[approach.label].append(speed)
            log(f"concurrent run {run + 1}/{runs} {approach.label}: {speed / 1e6:,.0f} MB/s")
    return speeds


def ttfb_ranges(url: str, cookie: str, *, size: int, reps: int, quiet: Quiet) -> tuple[float, float]:
    near_end = f"{size - 1}-{size - 1}"
    starts: list[float] = []
    ends: list[float] = []
    for rep in range(reps):
        if rep % 20 == 0:
            quiet.wait()
        for spec, bucket in (("0-0", starts), (near_end, ends)):
            result = curl(url, cookie=cookie, byte_range=spec)
            if result.status != 206 or result.size != 1:
                raise RuntimeError(f"range {spec}: got {result.status}, {result.size} bytes")
            bucket.append(result.ttfb)
    return statistics.median(starts), statistics.median(ends)


@contextmanager
def rss_sampler(server: Server, interval: float = 0.05) -> Iterator[list[int]]:
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(server.rss_bytes())
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def cpu_capacity() -> str:
    """AES-256-GCM decryption of 1 MiB buffers in 1 and in 2 threads (it releases the GIL): a quick check
    that both vCPUs were really there. On a shared host the second one sometimes is not, which halves
    every throughput number; a run is only comparable to the anchors when 2 threads give ~2x."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    ciphertext = aead.encrypt(nonce, os.urandom(MIB), None)
    rounds = 200

    def work(out: list[float]) -> None:
        started = time.perf_counter()
        for _ in range(rounds):
            aead.decrypt(nonce, ciphertext, None)
        out.append(rounds * MIB / (time.perf_counter() - started) / 1e9)

    one: list[float] = []
    work(one)
    two: list[float] = []
    threads = [threading.Thread(target=work, args=(two,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return f"{one[0]:.1f} GB/s in 1 thread, {sum(two):.1f} GB/s in 2"


def aes_gcm_limit(rounds: int = 15, per_round: int = 100) -> dict[str, float]:
    """Single-thread AES-256-GCM decryption of 1 MiB segments, GB/s (median of ``rounds`` interleaved
    rounds): into one reused buffer (the cipher alone: the physical limit of one serving thread) and into a
    new ``bytes`` per segment (``AESGCM.decrypt``, as ``blobs.crypto`` hands whole segments to gunicorn)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    ciphertext = aead.encrypt(nonce, os.urandom(MIB - 16), None)
    reused = bytearray(MIB - 16)

    def into_reused() -> None:
        aead.decrypt_into(nonce, ciphertext, None, reused)

    def into_new() -> None:
        aead.decrypt(nonce, ciphertext, None)

    variants = {"decrypt_into, reused buffer": into_reused, "decrypt, new bytes": into_new}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            started = time.perf_counter()
            for _ in range(per_round):
                fn()
            rates[name].append(per_round * (MIB - 16) / (time.perf_counter() - started) / 1e9)
    return {name: statistics.median(values) for name, values in rates.items()}


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import cryptography
    import django
    import gunicorn

    curl_version = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=True).stdout
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "gunicorn": gunicorn.__version__,
        "cryptography": cryptography.__version__,
        "curl": curl_version.split()[1],
        "load average at the end": Path("/proc/loadavg").read_text().split()[0],
    }


# --- main ---------------------------------------------------------------------------------------------------


def bench_env(args: argparse.Namespace, work: Path) -> tuple[dict[str, str], str, Path]:
    """``(server environment, admin password, plaintext file)``: a fresh var dir under ``work`` and
    ``--size-mib`` of random plaintext."""
    var_dir = work / "var"
    var_dir.mkdir()
    plain = work / f"plain-{args.size_mib}mib.bin"
    password = secrets.token_urlsafe(18)
    env = server_env(var_dir, username=USERNAME, password=password, key_id="bench-1")
    if args.segment_size:
        env["BLOB_SEGMENT_SIZE"] = str(args.segment_size)
    log(f"work dir {work}; writing {args.size_mib} MiB of random plaintext")
    write_random(plain, args.size_mib * MIB)
    return env, password, plain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="blob size for throughput and TTFB (MiB)")
    parser.add_argument("--rss-size-mib", type=int, default=2048, help="uploaded, then downloaded, for RSS")
    parser.add_argument("--runs", type=int, default=9, help="interleaved throughput runs per approach")
    parser.add_argument("--ttfb-reps", type=int, default=200, help="1-byte range requests per offset")
    parser.add_argument("--clients", type=int, default=4, help="simultaneous downloads for the aggregate")
    parser.add_argument("--concurrent-runs", type=int, default=3, help="interleaved runs of the aggregate")
    parser.add_argument("--segment-size", type=int, default=None, help="BLOB_SEGMENT_SIZE (default: app's)")
    parser.add_argument(
        "--ab-settings",
        metavar="MODULE",
        help="only compare the product (A) with itself under this bench-only settings module (B)",
    )
    parser.add_argument(
        "--ab-base-tree",
        type=Path,
        metavar="TREE",
        help="only compare this tree (A) with another checkout of the product (B), same settings",
    )
    parser.add_argument(
        "--postgres", action="store_true", help="with --ab-base-tree: a fresh PostgreSQL database"
    )
    parser.add_argument(
        "--quiet-max-wait", type=float, default=180.0, help="seconds to wait for an idle machine per run"
    )
    args = parser.parse_args()
    # The servers run in their own sessions: on SIGTERM, unwind through the `finally`s that stop them.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if shutil.which("curl") is None:
        print("curl is required", file=sys.stderr)
        return 2
    if args.ab_settings or args.ab_base_tree:
        return side_by_side(args)

    size, rss_size = args.size_mib * MIB, args.rss_size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="erphub-bench-", dir="/tmp"))
    servers: list[Server] = []
    try:
        env, password, plain = bench_env(args, work)
        env["ERPHUB_BENCH_PLAIN_FILE"] = str(plain)
        ctr_key = secrets.token_bytes(32)
        ctr_copy = work / "ctr-copy.bin"
        write_ctr_copy(plain, ctr_copy, ctr_key)
        env["ERPHUB_BENCH_CTR_FILE"] = str(ctr_copy)
        env["ERPHUB_BENCH_CTR_KEY"] = ctr_key.hex()
        prepare_database(env)
        log("blobs_import")
        started = time.perf_counter()
        blob_id = manage(env, "blobs_import", str(plain), "--owner", USERNAME).split("\t", 1)[0].strip()
        import_seconds = time.perf_counter() - started

        ours = start_server("ours", env, work, settings="erphub.settings", sendfile=False)
        servers.append(ours)
        plain_sendfile = start_server("a", env, work, settings="bench.settings_bench", sendfile=True)
        servers.append(plain_sendfile)
        plain_1mib = start_server("b", env, work, settings="bench.settings_bench", sendfile=False)
        servers.append(plain_1mib)
        for server in servers:
            server.wait_until_healthy()
        rss_fresh = ours.rss_bytes()
        session = Session(ours, timeout=600)
        session.login(USERNAME, password)
        cookie = f"sessionid={session.cookies['sessionid']}"
        stream_url = ours.url(f"/secure/files/{blob_id}/stream")

        approaches = [
            Approach(
                "(a) FileResponse, gunicorn sendfile (plaintext)",
                plain_sendfile.url("/bench/plain"),
                None,
                plain_sendfile,
            ),
            Approach(
                "(b) FileResponse block_size 1 MiB, --no-sendfile (plaintext)",
                plain_1mib.url("/bench/plain-1mib"),
                None,
                plain_1mib,
            ),
            Approach("ours: encrypted stream, --no-sendfile", stream_url, cookie, ours),
            Approach(
                "django-encrypted-files 0.0.10 (AES-CTR, unauthenticated), 1 MiB reads, --no-sendfile",
                plain_1mib.url("/bench/ctr-1mib"),
                None,
                plain_1mib,
            ),
        ]
        log("checking that every encrypted approach sends the plaintext (SHA-256)")
        expected = sha256_of_file(plain)
        for approach in approaches[2:]:
            if sha256_of_download(approach.url, approach.cookie) != expected:
                raise RuntimeError(f"{approach.label}: the body is not the plaintext")
        quiet = Quiet()
        capacity_before = cpu_capacity()
        log(f"throughput: {args.runs} interleaved runs of {args.size_mib} MiB")
        throughput(approaches, size=size, runs=args.runs, quiet=quiet)

        log(f"aggregate: {args.clients} simultaneous downloads, {args.concurrent_runs} runs")
        aggregate = concurrent_throughput(
            [approaches[1], approaches[2]],
            size=size,
            clients=args.clients,
            runs=args.concurrent_runs,
            quiet=quiet,
        )

        log(f"TTFB: {args.ttfb_reps} x 1-byte ranges at offset 0 and at {size - 1}")
        ttfb_start, ttfb_end = ttfb_ranges(stream_url, cookie, size=size, reps=args.ttfb_reps, quiet=quiet)

        log(f"RSS: upload then download {args.rss_size_mib} MiB")
        big = work / f"rss-{args.rss_size_mib}mib.bin"
        write_random(big, rss_size)
        quiet.wait()
        rss_before = ours.rss_bytes()
        with rss_sampler(ours) as samples:
            started = time.perf_counter()
            created = session.upload_raw(big)
            upload_seconds = time.perf_counter() - started
            if created["size"] != rss_size:
                raise RuntimeError(f"uploaded {created['size']} bytes, sent {rss_size}")
            rss_after_upload = ours.rss_bytes()
            big_download = curl(ours.url(f"/secure/files/{created['id']}/stream"), cookie=cookie)
            if big_download.status != 200 or big_download.size != rss_size:
                raise RuntimeError(f"2 GiB download: {big_download.status}, {big_download.size} bytes")
        rss_after = ours.rss_bytes()
        rss_peak = max([*samples, rss_after])

        facts = machine_facts()
        facts["AES-GCM capacity before / after"] = f"{capacity_before} / {cpu_capacity()}"
        report(
            args,
            facts,
            approaches,
            import_seconds=import_seconds,
            ttfb=(ttfb_start, ttfb_end),
            aggregate=aggregate,
            rss=(rss_fresh, rss_before, rss_after_upload, rss_after, rss_peak),
            upload_mbps=rss_size / upload_seconds / 1e6,
            big_download_mbps=big_download.speed / 1e6,
            size=size,
            quiet=quiet,
        )
        return 0
    finally:
        for server in servers:
            server.stop(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def side_by_side(args: argparse.Namespace) -> int:
    """``--ab-settings``: the same blob, the same code, two settings modules; ``--ab-base-tree``: the same
    blob and settings, two source trees. Interleaved full downloads."""
    from bench.bench_requests import create_postgres_database, drop_postgres_database

    size = args.size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="erphub-bench-ab-", dir="/tmp"))
    servers: list[Server] = []
    pg_name = None
    try:
        env, password, plain = bench_env(args, work)
        if args.ab_base_tree and args.postgres:
            pg_name, env["DATABASE_URL"] = create_postgres_database()
        prepare_database(env)
        blob_id = manage(env, "blobs_import", str(plain), "--owner", USERNAME).split("\t", 1)[0].strip()
        if args.ab_base_tree:
            named = {"A": "this tree", "B": str(args.ab_base_tree)}
            trees = {"A": None, "B": args.ab_base_tree}
            for name in named:
                servers.append(
                    start_server(name, env, work, settings="erphub.settings", sendfile=False, cwd=trees[name])
                )
        else:
            named = {"A": "erphub.settings", "B": args.ab_settings}
            for name, settings in named.items():
                servers.append(start_server(name, env, work, settings=settings, sendfile=False))
        for server in servers:
            server.wait_until_healthy()
        session = Session(servers[0], timeout=600)
        session.login(USERNAME, password)
        cookie = f"sessionid={session.cookies['sessionid']}"
        path = f"/secure/files/{blob_id}/stream"
        variants = [Approach(f"{s.name}: {named[s.name]}", s.url(path), cookie, s) for s in servers]
        expected = sha256_of_file(plain)
        for variant in variants:
            if sha256_of_download(variant.url, cookie) != expected:
                raise RuntimeError(f"{variant.label}: the body is not the plaintext")
        quiet = Quiet(max_wait=args.quiet_max_wait)
        limit_before = aes_gcm_limit()
        capacity_before = cpu_capacity()
        log(f"{args.runs} rounds of one {args.size_mib} MiB download from each, order alternating")
        throughput(variants, size=size, runs=args.runs, quiet=quiet)
        limit_after = aes_gcm_limit()
        facts = machine_facts()
        facts["AES-GCM 1/2-thread capacity before / after"] = f"{capacity_before} / {cpu_capacity()}"
        a, b = variants
        print(f"## Side by side: {args.size_mib} MiB full downloads, {args.runs} rounds, A/B alternating\n")
        print("Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
        print(
            f"Runs discarded and repeated (other processes > {quiet.others_limit} cores): {quiet.discarded}; "
            f"started on a busy machine: {quiet.noisy}; waited {quiet.waited:.0f} s for quiet.\n"
        )
        print("| variant | MB/s median | min–max | server CPU s/GiB, median | per round (MB/s) |")
        print("|---|--:|--:|--:|---|")
        for variant in variants:
            speeds = [s / 1e6 for s in variant.speeds]
            lo, hi = min(speeds), max(speeds)
            print(
                f"| {variant.label} | {statistics.median(speeds):,.0f} | {lo:,.0f}–{hi:,.0f} "
                f"| {statistics.median(variant.cpu_per_gib):.3f} | {', '.join(f'{x:,.0f}' for x in speeds)} |"
            )
        ratios = [x / y for x, y in zip(a.speeds, b.speeds, strict=True)]
        print(f"\nA / B, ratio of medians: {statistics.median(a.speeds) / statistics.median(b.speeds):.3f}")
        print(
            f"A / B, median of per-round ratios: {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
        print(
            f"A / B, server CPU per GiB: "
            f"{statistics.median(a.cpu_per_gib) / statistics.median(b.cpu_per_gib):.3f}\n"
        )
        print("| AES-256-GCM, 1 MiB segments, one thread (in this process) | before, GB/s | after, GB/s |")
        print("|---|--:|--:|")
        for name in limit_before:
            print(f"| {name} | {limit_before[name]:.2f} | {limit_after[name]:.2f} |")
        return 0
    finally:
        for server in servers:
            server.stop(timeout=30)
        if pg_name is not None:
            drop_postgres_database(pg_name)
        shutil.rmtree(work, ignore_errors=True)


def report(
    args: argparse.Namespace,
    facts: dict[str, str],
    approaches: list[Approach],
    *,
    import_seconds: float,
    ttfb: tuple[float, float],
    aggregate: dict[str, list[float]],
    rss: tuple[int, ...],
    upload_mbps: float,
    big_download_mbps: float,
    size: int,
    quiet: Quiet,
) -> None:
    a, b, ours, ctr = approaches
    print(f"## Download benchmark: {args.size_mib} MiB, {args.runs} interleaved runs, median\n")
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    print(
        f"Throughput runs discarded and repeated because other processes used > {quiet.others_limit} cores "
        f"meanwhile: {quiet.discarded}; measurements started on a busy machine (> {quiet.limit:.0%} CPU): "
        f"{quiet.noisy}; waited {quiet.waited:.0f} s for quiet in all.\n"
    )
    print("| approach | MB/s (median) | min–max | ratio to (a) | ratio to (b) | TTFB median |")
    print("|---|--:|--:|--:|--:|--:|")
    for approach in approaches:
        lo, hi = min(approach.speeds) / 1e6, max(approach.speeds) / 1e6
        print(
            f"| {approach.label} | {approach.mbps:,.0f} | {lo:,.0f}–{hi:,.0f} "
            f"| {approach.mbps / a.mbps:.2f} | {approach.mbps / b.mbps:.2f} "
            f"| {statistics.median(approach.ttfbs) * 1e3:.1f} ms |"
        )
    start, end = ttfb
    mib = 1 / MIB
    fresh, before, after_upload, after, peak = rss
    paired = statistics.median(o / p for o, p in zip(ours.speeds, b.speeds, strict=True))
    print("\n| measure | value | target | met |\n|---|--:|--:|---|")
    print(
        f"| encrypted / (b), median of per-run ratios | {paired:.2f} | ≥ 0.80 "
        f"| {'yes' if paired >= 0.8 else 'NO'} |"
    )
    print(
        f"| encrypted / (b) | {ours.mbps / b.mbps:.2f} | ≥ 0.80 "
        f"| {'yes' if ours.mbps >= 0.8 * b.mbps else 'NO'} |"
    )
    ctr_paired = statistics.median(o / c for o, c in zip(ours.speeds, ctr.speeds, strict=True))
    print(
        f"| encrypted / django-encrypted-files (AES-CTR), median of per-run ratios | {ctr_paired:.2f} | > 1 "
        f"| {'yes' if ctr_paired > 1 else 'NO'} |"
    )
    ours_all, b_all = aggregate[ours.label], aggregate[b.label]
    print(
        f"| {args.clients} simultaneous downloads, aggregate MB/s: encrypted / (b) "
        f"| {statistics.median(ours_all) / 1e6:,.0f} / {statistics.median(b_all) / 1e6:,.0f} "
        f"= {statistics.median(ours_all) / statistics.median(b_all):.2f} | | |"
    )
    print(f"| TTFB 1-byte range at 0 | {start * 1e3:.2f} ms | | |")
    print(f"| TTFB 1-byte range at {size - 1} | {end * 1e3:.2f} ms | | |")
    print(f"| TTFB ratio end / start | {end / start:.2f} | ≤ 1.2 | {'yes' if end / start <= 1.2 else 'NO'} |")
    print(f"| RSS fresh server (master + 2 workers) | {fresh * mib:,.1f} MiB | | |")
    print(f"| RSS before {args.rss_size_mib} MiB upload+download | {before * mib:,.1f} MiB | | |")
    print(f"| RSS after upload | {after_upload * mib:,.1f} MiB | | |")
    print(f"| RSS after download | {after * mib:,.1f} MiB | | |")
    print(
        f"| RSS growth (after − before) | {(after - before) * mib:,.1f} MiB | < 64 MiB "
        f"| {'yes' if after - before < 64 * MIB else 'NO'} |"
    )
    print(
        f"| RSS peak growth (sampled every 50 ms) | {(peak - before) * mib:,.1f} MiB | < 64 MiB "
        f"| {'yes' if peak - before < 64 * MIB else 'NO'} |"
    )
    print(
        f"| upload {args.rss_size_mib} MiB raw body (http.client, 1 MiB writes) "
        f"| {upload_mbps:,.0f} MB/s | | |"
    )
    print(f"| download {args.rss_size_mib} MiB (curl) | {big_download_mbps:,.0f} MB/s | | |")
    print(f"| blobs_import {args.size_mib} MiB | {size / import_seconds / 1e6:,.0f} MB/s | | |")


if __name__ == "__main__":
    sys.exit(main())
