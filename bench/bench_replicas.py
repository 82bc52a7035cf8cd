"""Two replicas under load (issue 16): 64 clients fetching random ranges of a 64 MiB blob through two
gunicorns on one PostgreSQL database, one Redis and one blob store — S3 (moto's server) and, side by side in
the same run, a shared filesystem directory.

    .venv/bin/python bench/bench_replicas.py                               # 64 clients, 15 s per cell
    .venv/bin/python bench/bench_replicas.py --seconds 3 --size-mib 16     # quick check

Per store, a pair of replicas as docs/scaling-out.md deploys them: two gunicorns (``erphub.event_worker.
EventWorker``, ``--workers`` each, 2 by default) on different loopback ports, sharing a fresh PostgreSQL
database on 127.0.0.1:5432 (dropped at the end), one redis-server this script starts (a Redis database
number per pair), the Django secret, the master key, and the blob store: a bucket on moto's S3 server (a
subprocess, ``kms.tests.servers.MotoServer``, reached over loopback HTTP through boto3's
AWS_ENDPOINT_URL_S3) or one BLOB_STORAGE_DIR. One ``--size-mib`` blob of random bytes per store
(``blobs_import``).

Each cell: ``--clients`` keep-alive clients (threads of this process, one connection each, half on each
replica) send ``GET /secure/files/{id}/stream`` with a random ``Range`` of one ``--range-kib`` size (JWT),
back to back, for ``--seconds``. Cells alternate between the stores, the order flipping per range size.
Reported: aggregate MB/s (10^6 bytes of body received per second, all clients), p50/p95 time to first byte
(request sent to status line read), errors (any status but 206, a short body, a dropped connection: must
be 0), the servers' RSS (VmRSS summed over both masters and their workers, after warm-up and at the end),
and for S3 the GET requests moto logged per client request. moto is not S3: a Python server on the same
2 CPUs that copies the whole object out of its store for every GET, ranged or not (moto.s3.models
FakeKey.value), so its figures are a floor for the app's S3 path, not S3's latency or bandwidth.

Prints markdown on stdout (the run's physical limits first), progress on stderr.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_download import Server, log, machine_facts, write_random
from bench.bench_requests import create_postgres_database, drop_postgres_database, obtain_token
from blobs.tests.liveserver import HOST, manage, prepare_database, server_env

USERNAME = "admin"
KIB = 1024
MIB = 1024 * KIB


@dataclass
class Pair:
    """Two replicas of one deploy: the same database, cache, secrets and blob store."""

    store: str
    a: Server
    b: Server
    env: dict[str, str]
    token: str
    blob_id: str
    pg_name: str

    @property
    def servers(self) -> tuple[Server, Server]:
        return self.a, self.b

    def rss_bytes(self) -> int:
        return self.a.rss_bytes() + self.b.rss_bytes()

    def cpu_seconds(self) -> float:
        return self.a.cpu_seconds() + self.b.cpu_seconds()


@dataclass
class Cell:
    ttfb: list[float] = field(default_factory=list)
    received: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # what went wrong: a status, or an exception
    seconds: float = 0.0

    def quantile(self, q: float) -> float:
        if not self.ttfb:
            return float("nan")
        ordered = sorted(self.ttfb)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run_cell(pair: Pair, *, clients: int, seconds: float, length: int, size: int) -> Cell:
    """``clients`` keep-alive clients, alternately on replica A and B, each fetching random ranges of
    ``length`` bytes back to back until ``seconds`` have passed."""
    cell = Cell()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at: list[float] = []
    path = f"/secure/files/{pair.blob_id}/stream"

    def client(index: int) -> None:
        port = pair.servers[index % 2].port
        rng = random.Random()
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        ttfb: list[float] = []
        received = 0
        errors: Counter[str] = Counter()
        headers = {"Authorization": f"Bearer {pair.token}"}
        start.wait()
        while time.perf_counter() < stop_at[0]:
            offset = rng.randrange(0, size - length)
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
            sent = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                first = time.perf_counter()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors[type(exc).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
                continue
            if response.status != 206:
                code = json.loads(body).get("code", "") if body.startswith(b"{") else ""
                errors[f"{response.status} {code}".strip()] += 1
            elif len(body) != length:
                errors["short body"] += 1
            else:
                ttfb.append(first - sent)
                received += len(body)
        conn.close()
        with lock:
            cell.ttfb.extend(ttfb)
            cell.received += received
            cell.errors.update(errors)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at.append(began + seconds)
    start.wait()
    for thread in threads:
        thread.join()
    cell.seconds = time.perf_counter() - began
    return cell


def start_pair(
    store: str, storage: dict[str, str], redis_url: str, work: Path, plain: Path, args: argparse.Namespace
) -> Pair:
    password = secrets.token_urlsafe(18)
    pg_name, database_url = create_postgres_database()
    root = work / store
    shared = {
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": str(args.conn_max_age),
        "DATABASE_POOL_MAX_SIZE": str(args.pool_max_size),
        "REDIS_URL": redis_url,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "BLOB_MASTER_KEYS": f"rep-1:{base64.b64encode(os.urandom(32)).decode()}",
        "AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
        "AUDIT_CHECKPOINT_DIR": str(root / "shared-checkpoints"),
        "JWT_ACCESS_MINUTES": "240",  # one token for the whole run
        "DJANGO_LOG_LEVEL": "WARNING",
        **storage,
    }
    servers: list[Server] = []
    try:
        envs = []
        for name in ("a", "b"):
            var_dir = root / name
            (var_dir / "prometheus").mkdir(parents=True)
            env = server_env(
                var_dir,
                username=USERNAME,
                password=password,
                key_id="unused",
                PROMETHEUS_MULTIPROC_DIR=str(var_dir / "prometheus"),
                **shared,
            )
            if name == "a":
                prepare_database(env)
            envs.append(env)
        blob_id = manage(envs[0], "blobs_import", str(plain), "--owner", USERNAME).split("\t", 1)[0].strip()
        for name, env in zip("ab", envs, strict=True):
            log_path = root / name / "gunicorn.log"
            servers.append(
                Server.start(env, log_path, timeout=120, name=f"{store}-{name}", workers=args.workers)
            )
        for server in servers:
            server.wait_until_healthy(60)
    except BaseException:
        for server in servers:
            server.stop()
        drop_postgres_database(pg_name)
        raise
    token = obtain_token(servers[0].port, password)
    return Pair(store, servers[0], servers[1], envs[0], token, blob_id, pg_name)


def aes_gcm_mb_per_s(seconds: float = 0.3) -> float:
    """One core's AES-256-GCM decryption of 64 KiB segments (the cipher under every download), MB/s."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    sealed = aead.encrypt(nonce, os.urandom(64 * KIB), None)
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        aead.decrypt(nonce, sealed, None)
        done += 64 * KIB
    return done / (time.perf_counter() - began) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0, help="per cell")
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--range-kib", type=int, nargs="+", default=[64, 1024], help="one cell per size")
    parser.add_argument("--workers", type=int, default=2, help="event workers per replica")
    parser.add_argument(
        "--conn-max-age", type=int, default=0, help="DATABASE_CONN_MAX_AGE of the replicas (the default: 0)"
    )
    parser.add_argument(
        "--pool-max-size",
        type=int,
        default=8,
        help="DATABASE_POOL_MAX_SIZE of the replicas (default 8; 0 = no pool, needed for --conn-max-age > 0)",
    )
    parser.add_argument("--stores", nargs="+", default=["s3", "filesystem"], choices=["s3", "filesystem"])
    args = parser.parse_args()

    from blobs.tests.s3 import REGION, apply_environment, s3_environment
    from core.tests.redis_server import RedisServer
    from kms.tests.servers import MotoServer

    work = Path(tempfile.mkdtemp(prefix="erphub-bench-replicas-", dir="/tmp"))
    stack = contextlib.ExitStack()
    pairs: list[Pair] = []
    try:
        size = args.size_mib * MIB
        plain = work / "plain.bin"
        write_random(plain, size)
        redis = RedisServer(work)
        redis.start()
        stack.callback(redis.stop)
        storages: dict[str, dict[str, str]] = {}
        moto = bucket = None
        if "s3" in args.stores:
            moto = MotoServer(work)
            stack.callback(moto.stop)
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            environment = {k: v for k, v in s3_environment(moto.url).items() if v is not None}
            apply_environment(s3_environment(moto.url))
            import boto3

            admin = boto3.client("s3", region_name=REGION, endpoint_url=moto.url)
            admin.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
            storages["s3"] = {
                "BLOB_STORAGE_BACKEND": "s3",
                "BLOB_S3_BUCKET": bucket,
                # moto answers 64 clients' GETs one whole-object copy at a time: past the default 20 s under
                # this load, which would measure moto's queue as errors.
                "BLOB_S3_READ_TIMEOUT": "120",
                **environment,
            }
        if "filesystem" in args.stores:
            storages["filesystem"] = {"BLOB_STORAGE_DIR": str(work / "shared-blobs")}
        for number, store in enumerate(args.stores):
            log(f"starting the {store} pair ({args.workers} event workers per replica)")
            pairs.append(
                start_pair(store, storages[store], f"redis://{HOST}:{redis.port}/{number}", work, plain, args)
            )
        object_path = None
        if moto is not None and bucket is not None:
            keys = [o["Key"] for o in admin.list_objects_v2(Bucket=bucket).get("Contents", [])]
            blob_keys = [key for key in keys if ".ready" not in key]
            assert len(blob_keys) == 1, keys
            object_path = f"/{bucket}/{blob_keys[0]}"
            admin.close()
        for pair in pairs:  # warm-up: modules, flags snapshot, data key, connections on every worker
            for length in args.range_kib:
                run_cell(pair, clients=8, seconds=1.0, length=length * KIB, size=size)
        rss_before = {pair.store: pair.rss_bytes() for pair in pairs}
        rows = []
        for turn, length in enumerate(args.range_kib):
            for pair in pairs if turn % 2 == 0 else list(reversed(pairs)):
                gets_before = 0
                if pair.store == "s3" and moto is not None and object_path:
                    moto.settled()
                    gets_before = moto.requests("GET", object_path)
                cpu_before, client_before = pair.cpu_seconds(), time.process_time()
                cell = run_cell(
                    pair, clients=args.clients, seconds=args.seconds, length=length * KIB, size=size
                )
                row: dict[str, object] = {
                    "store": pair.store,
                    "range_kib": length,
                    "requests": len(cell.ttfb),
                    "mb_s": round(cell.received / cell.seconds / 1e6, 1),
                    "p50_ms": round(cell.quantile(0.5), 1),
                    "p95_ms": round(cell.quantile(0.95), 1),
                    "errors": sum(cell.errors.values()),
                    "error_kinds": dict(cell.errors),
                    "server_cpu": round((pair.cpu_seconds() - cpu_before) / cell.seconds, 2),
                    "client_cpu": round((time.process_time() - client_before) / cell.seconds, 2),
                    "s3_gets_per_request": None,
                }
                if pair.store == "s3" and moto is not None and object_path:
                    moto.settled()
                    gets = moto.requests("GET", object_path) - gets_before
                    row["s3_gets_per_request"] = round(
                        gets / max(1, len(cell.ttfb) + sum(cell.errors.values())), 2
                    )
                rows.append(row)
                log(json.dumps(row))
        rss_after = {pair.store: pair.rss_bytes() for pair in pairs}
        print(table(rows, rss_before, rss_after, args))
        print()
        facts = machine_facts()
        facts["AES-256-GCM, one core, 64 KiB segments"] = f"{aes_gcm_mb_per_s():.0f} MB/s"
        for name, value in facts.items():
            print(f"- {name}: {value}")
        return 1 if any(row["errors"] for row in rows) else 0
    finally:
        for pair in pairs:
            for server in pair.servers:
                server.stop()
            with contextlib.suppress(Exception):  # best effort: report the run's own error, not this
                drop_postgres_database(pair.pg_name)
        stack.close()
        shutil.rmtree(work, ignore_errors=True)


def table(
    rows: list[dict[str, object]], before: dict[str, int], after: dict[str, int], args: argparse.Namespace
) -> str:
    lines = [
        f"{args.clients} keep-alive clients (half per replica), {args.seconds:g} s per cell, "
        f"{args.size_mib} MiB blob; two replicas x {args.workers} event workers per store.",
        "",
        "| store | range | requests | MB/s | p50 TTFB ms | p95 TTFB ms | errors | server CPU | client CPU "
        "| S3 GETs / request |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        gets = "—" if r["s3_gets_per_request"] is None else r["s3_gets_per_request"]
        errors = f"{r['errors']} {json.dumps(r['error_kinds'])}" if r["errors"] else "0"
        lines.append(
            f"| {r['store']} | {r['range_kib']} KiB | {r['requests']} | {r['mb_s']} | {r['p50_ms']} "
            f"| {r['p95_ms']} | {errors} | {r['server_cpu']} | {r['client_cpu']} | {gets} |"
        )
    by = {(r["store"], r["range_kib"]): r for r in rows}
    for length in args.range_kib:
        s3, fs = by.get(("s3", length)), by.get(("filesystem", length))
        if s3 and fs and float(fs["mb_s"]):  # type: ignore[arg-type]
            ratio = float(s3["mb_s"]) / float(fs["mb_s"])  # type: ignore[arg-type]
            lines.append(f"\n{length} KiB ranges: S3 (moto) / filesystem throughput = {ratio:.2f}")
    lines.append("")
    for store in before:
        lines.append(
            f"- server RSS, {store} pair (2 masters + their workers): "
            f"{before[store] / MIB:.0f} MiB after warm-up, {after[store] / MIB:.0f} MiB at the end"
        )
    lines.append(
        "- moto is not S3: one Python process on these CPUs that copies the whole object for every GET, "
        "ranged or not; its throughput and TTFB bound the S3 figures, not the app."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
