"""What an audited 1-byte range costs, piece by piece, in process (issue 14): where its floor is.

    .venv/bin/python bench/bench_floor.py                          # SQLite and PostgreSQL
    .venv/bin/python bench/bench_floor.py --databases sqlite --iterations 200
    .venv/bin/python bench/bench_floor.py --databases postgresql --profile "blob lookup"   # cProfile
    .venv/bin/python bench/bench_floor.py --databases sqlite --sample "1024 KiB segments (whole" \
        --iterations 2000                                          # py-spy samples (pip install py-spy)

bench_requests.py measures whole requests through gunicorn; this one takes a request apart. For each database
(SQLite in a fresh var dir; PostgreSQL: a fresh database on 127.0.0.1:5432, dropped at the end) a child
process sets Django up with the product's settings (bench/settings_requests.py: the product's URLs plus the
plaintext range view), creates a Blob user and blobs of several segment sizes, and then times, interleaved
round by round (``--iterations`` rounds, the median and 90th percentile per operation):

- whole requests through Django's WSGI handler (every middleware, the view, the body read to its end):
  ``GET /health``, the plaintext 1-byte range (plain Django reading the file: the floor the issue compares
  against), and the audited 1-byte range of the API for each segment size;
- the pieces an audited range adds: verifying the JWT and loading its user, the blob lookup with its
  permission, one durable audit append (its own transaction and commit, as a download's start), opening a
  blob and decrypting the one segment a 1-byte range needs, and raw AES-GCM over one segment (the physical
  limit of that part on this machine).

No server and no client: the figures are wall time (``perf_counter``) of one request on one thread of an
otherwise idle process (commits and greenlet switches included), without gunicorn's parsing and socket
writes (the same for every request), which is why they are smaller than bench_requests.py's time to first
byte. The child is patched by gevent as a server worker is, and the end
event of a download is queued as there (``audit.deferred``) and written by the writer greenlet meanwhile.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEGMENT_SIZES = [1 << 20, 256 << 10, 64 << 10]  # the default (Tink's AES256_GCM_HKDF_1MB) and smaller ones
BLOB_SIZE = 8 << 20


def parent(args: argparse.Namespace) -> int:
    from bench.bench_download import machine_facts, write_random
    from bench.bench_requests import create_postgres_database, drop_postgres_database
    from blobs.tests.liveserver import prepare_database, server_env

    results: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="erphub-bench-floor-", dir="/tmp"))
    try:
        plain = work / "plain.bin"
        write_random(plain, BLOB_SIZE)
        for database in args.databases:
            var_dir = work / f"var-{database}"
            var_dir.mkdir()
            env = server_env(var_dir, username="admin", password=secrets.token_urlsafe(18), key_id="floor-1")
            env.update(DJANGO_SETTINGS_MODULE="bench.settings_requests", ERPHUB_BENCH_PLAIN_FILE=str(plain))
            pg_name = None
            try:
                if database == "postgresql":
                    pg_name, env["DATABASE_URL"] = create_postgres_database()
                prepare_database(env)
                profile = ["--profile", args.profile] if args.profile else []
                profile += ["--callees", args.callees] if args.callees else []
                profile += ["--sample", args.sample] if args.sample else []
                out = subprocess.run(
                    [sys.executable, __file__, "--child", "--iterations", str(args.iterations), *profile],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=1800,
                    check=False,
                )
                if out.returncode or args.profile or args.sample:
                    print(out.stderr[-20000:], file=sys.stderr)
                    if out.returncode:
                        return 1
                    continue
                results[database] = json.loads(out.stdout.strip().splitlines()[-1])
            finally:
                if pg_name:
                    drop_postgres_database(pg_name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if results:
        print(table(results))
    print()
    for name, value in machine_facts().items():
        print(f"- {name}: {value}")
    return 0


def table(results: dict[str, Any]) -> str:
    names = list(next(iter(results.values()))["operations"])
    lines = ["| operation | " + " | ".join(f"{db} p50 µs | p90 µs" for db in results) + " |"]
    lines.append("|---|" + "--:|--:|" * len(results))
    for name in names:
        cells = []
        for db in results:
            row = results[db]["operations"][name]
            cells.append(f"{row['p50_us']:,.0f} | {row['p90_us']:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for db, result in results.items():
        lines.append(f"\n{db}: {result['note']}")
    return "\n".join(lines)


# --- the child: Django in this process ----------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    # Patched as a server worker is (erphub.event_worker): the audit group commit's yield is then a greenlet
    # switch, not a thread switch that waits out the GIL's interval, and the deferred writer is a greenlet.
    from gevent import monkey

    monkey.patch_all()
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings
    from rest_framework_simplejwt.tokens import AccessToken

    from audit.deferred import deferred_writer_start, deferred_writer_stop
    from audit.services import audit_record
    from blobs.selectors import blob_get_for_user
    from blobs.services import blob_create, blob_open
    from core.actors import Actor
    from erphub.authentication import JWTAuthentication

    reader = User.objects.create_user("reader", password=secrets.token_urlsafe(18))
    reader.groups.add(Group.objects.get(name="Blob users"))
    data = Path(settings.BENCH_PLAIN_FILE).read_bytes()
    blob_ids = {}
    for size in SEGMENT_SIZES:
        with override_settings(BLOBS={**settings.BLOBS, "SEGMENT_SIZE": size}):
            blob = blob_create(owner=reader, stream=io.BytesIO(data), filename=f"seg-{size}.bin")
        blob_ids[size] = blob.pk
    token = str(AccessToken.for_user(reader))
    handler = WSGIHandler()
    deferred_writer_start()
    offsets = iter(range(10**9))

    def request(path: str, *, auth: bool, ranged: bool) -> Callable[[], None]:
        def run() -> None:
            environ = {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": path,
                "QUERY_STRING": "",
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "80",
                "REMOTE_ADDR": "127.0.0.1",
                "HTTP_HOST": "127.0.0.1",
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(),
                "wsgi.errors": sys.stderr,
                "SERVER_PROTOCOL": "HTTP/1.1",
            }
            if auth:
                environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
            if ranged:
                offset = (next(offsets) * 7919) % BLOB_SIZE  # spread over the file, like random offsets
                environ["HTTP_RANGE"] = f"bytes={offset}-{offset}"
            statuses: list[str] = []
            body = handler(environ, lambda status, headers, exc_info=None: statuses.append(status))
            try:
                for _ in body:
                    pass
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            if not statuses or statuses[0][:3] not in {"200", "206"}:
                raise SystemExit(f"{path}: {statuses}")

        return run

    class Bearer:  # what JWTAuthentication reads of a request
        META = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    authentication = JWTAuthentication()

    def authenticate() -> None:
        found = authentication.authenticate(Bearer())  # type: ignore[arg-type]
        assert found is not None

    def lookup() -> None:
        blob_get_for_user(user=reader, blob_id=blob_ids[1 << 20], with_owner=False)

    actor = Actor.for_user(reader)

    def append() -> None:
        audit_record(action="bench.floor", actor=actor, target_type="blob", target_id="floor")

    def decrypt(size: int) -> Callable[[], None]:
        blob = blob_get_for_user(user=reader, blob_id=blob_ids[size], with_owner=False)

        def run() -> None:
            offset = (next(offsets) * 7919) % BLOB_SIZE
            assert len(b"".join(blob_open(blob=blob, cached=True).iter_paced(offset, offset + 1))) == 1

        return run

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def raw_gcm(size: int) -> Callable[[], None]:
        aead = AESGCM(os.urandom(32))
        nonce = os.urandom(12)
        ct = aead.encrypt(nonce, os.urandom(size - 16), None)
        out = bytearray(size - 16)
        return lambda: aead.decrypt_into(nonce, ct, None, out)

    operations: dict[str, Callable[[], None]] = {
        "GET /health (whole request)": request("/health", auth=False, ranged=False),
        "plain Django 1-byte range (whole request)": request("/bench/plain-range", auth=False, ranged=True),
    }
    for size in SEGMENT_SIZES:
        path = f"/secure/files/{blob_ids[size]}/stream"
        operations[f"API 1-byte range, {size >> 10} KiB segments (whole request)"] = request(
            path, auth=True, ranged=True
        )
    operations["piece: JWT verified, its user loaded"] = authenticate
    operations["piece: blob lookup with its permission"] = lookup
    operations["piece: one durable audit append"] = append
    for size in SEGMENT_SIZES:
        operations[f"piece: open + decrypt one {size >> 10} KiB segment"] = decrypt(size)
        operations[f"limit: raw AES-GCM of {size >> 10} KiB"] = raw_gcm(size)

    for run in operations.values():  # warm-up: imports, caches, the data key
        for _ in range(5):
            run()
    wanted = args.sample or args.profile
    if wanted and not any(wanted in name for name in operations):
        raise SystemExit(f"no operation's name contains {wanted!r}: {list(operations)}")
    if args.sample:  # where one operation's time goes, sampled (py-spy): no tracing overhead
        (name,) = [name for name in operations if args.sample in name][:1]
        print(name, file=sys.stderr)
        print(sample_stacks(lambda: [operations[name]() for _ in range(args.iterations)]), file=sys.stderr)
        deferred_writer_stop()
        return 0
    if args.profile:  # where one operation's time goes (cProfile, cumulative), instead of the figures
        import cProfile
        import pstats

        (name,) = [name for name in operations if args.profile in name][:1]
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [operations[name]() for _ in range(args.iterations)])
        deferred_writer_stop()
        stats = pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative")
        stats.print_stats(45)
        if args.callees:
            stats.print_callees(args.callees)
        return 0
    samples: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(args.iterations):
        for name, run in operations.items():
            began = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - began)
    deferred_writer_stop()
    result = {
        "operations": {
            name: {
                "p50_us": statistics.median(values) * 1e6,
                "p90_us": statistics.quantiles(values, n=10)[-1] * 1e6,
            }
            for name, values in samples.items()
        },
        "note": f"{args.iterations} interleaved rounds; load average {os.getloadavg()[0]:.2f} at the end",
    }
    print(json.dumps(result))
    return 0


def sample_stacks(work: Callable[[], object], *, top: int = int(os.environ.get("SAMPLE_TOP", "40"))) -> str:
    """Run ``work`` under ``py-spy record`` (on this process, 1,000 samples a second, idle stacks included)
    and return, per function, the share of samples in it (inclusive) and on top of the stack (self), the top
    ``top`` of each. Only the samples of ``work``'s own stack count: on CPU, or blocked in a call it makes (an
    SQLite commit). Under gevent a greenlet waiting on a socket is not on any stack (the hub is), so a wait
    for PostgreSQL is not seen: the shares are of the rest. py-spy is a development tool: ``pip install
    py-spy``."""
    handle, name = tempfile.mkstemp(suffix=".txt")
    os.close(handle)
    out = Path(name)
    try:
        return _sampled(work, out, top)
    finally:
        out.unlink(missing_ok=True)


def _sampled(work: Callable[[], object], out: Path, top: int) -> str:
    import collections

    command = ["py-spy", "record", "--pid", str(os.getpid()), "--rate", "1000", "--idle", "--format", "raw"]
    spy = subprocess.Popen(
        [*command, "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches
    try:
        work()
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it has
        spy.wait(timeout=60)
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "sample_stacks" not in stack:  # py-spy's attach second, and the hub's stacks
            continue
        # "function (path/file.py:line)" -> "function file.py:line"
        frames = [f"{f.split(' (')[0]} {f.rsplit('/', 1)[-1].rstrip(')')}" for f in stack.split(";")]
        samples = int(count)
        total += samples
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    lines = [f"{total} samples in the operation (1 ms each)", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["self:"] + [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--callees", metavar="REGEX", help="with --profile: what these functions call")
    parser.add_argument(
        "--profile", metavar="TEXT", help="profile the first operation whose name contains TEXT (cProfile)"
    )
    parser.add_argument(
        "--sample", metavar="TEXT", help="sample the first operation whose name contains TEXT (py-spy)"
    )
    args = parser.parse_args()
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
