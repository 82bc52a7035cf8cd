"""Requests per second and time to first byte of small requests (issue 14), under the event worker.

    .venv/bin/python bench/bench_requests.py                       # the full run (SQLite and PostgreSQL)
    .venv/bin/python bench/bench_requests.py --seconds 0.5 --clients 1 8 --databases sqlite   # quick check

For each database (SQLite in the var dir; PostgreSQL: a fresh database on 127.0.0.1:5432, dropped at the
end) and each variant — ``after`` (this tree), ``after-no-group-commit`` (the same with
audit/recording.GroupCommit off) and ``before`` (``--base-tree``: the code before issue 14) — one
gunicorn server (``erphub.event_worker.EventWorker``, 2 workers, bench/settings_requests.py: the product's
URLs plus a plaintext range view of the same file) serves, side by side in one run:

- ``GET /health`` (Django, no database);
- ``GET /bench/plain-range`` with a 1-byte and a 64 KiB ``Range`` (plain Django reading the plaintext file);
- ``GET /secure/files/{id}/stream`` with the same ranges (JWT of a Blob user; authenticated, flag-gated,
  permission-checked, decrypted, audited start and end);
- ``GET /secure/files/{id}/`` (metadata) and ``GET /secure/files/`` (list), JWT;
- ``GET /bench/floor-range/{id}`` with a 1-byte ``Range`` (not in ``before``): the audited range's unskippable
  work in a plain Django view (bench/requestserve.py): a per-request floor for any path that keeps Django's
  handler and the product's middleware (one event per access, committed alone: no group commit).

Every variant's server runs at once and every cell alternates between them, ``--repeats`` rounds (the
median round reported), after a short warm-up of every target. Each cell: ``--seconds`` of ``N`` keep-alive
clients (threads of this process, one connection each) sending requests back to back; range offsets are
random over the file. Reported: requests/s, p50 and p95 time to first byte (request sent to status line
read), errors (any status other than the expected one, or a dropped
connection). After each server's run ``audit_verify --full`` must pass: every access audited, chain intact.
The load generator shares the machine's cores with the server: on 2 vCPUs its own CPU caps what it can
drive (reported beside the figures).
"""

from __future__ import annotations

import argparse
import base64
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
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_download import log, machine_facts, write_random
from blobs.tests.liveserver import (
    HOST,
    Gunicorn,
    manage,
    prepare_database,
    server_env,
)

USERNAME = "admin"
# The requests are a Blob user's (the role API consumers hold: permission checks included), not the
# superuser's, whose has_perm answers without a query.
READER = "reader"
CREATE_READER = (
    "from django.contrib.auth.models import Group, User; "
    "u = User.objects.create_user({name!r}, password={password!r}); "
    "u.groups.add(Group.objects.get(name='Blob users'))"
)
KIB = 1024


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    status: int
    range_length: int | None = None  # a random range of this length per request
    auth: bool = False


@dataclass
class Cell:
    ttfb: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.ttfb) / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        if not self.ttfb:
            return float("nan")
        ordered = sorted(self.ttfb)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run_cell(port: int, target: Target, *, clients: int, seconds: float, size: int, token: str) -> Cell:
    cell = Cell()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at: list[float] = []

    def client() -> None:
        rng = random.Random()
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        ttfb: list[float] = []
        errors = 0
        headers = {"Authorization": f"Bearer {token}"} if target.auth else {}
        start.wait()
        while time.perf_counter() < stop_at[0]:
            if target.range_length:
                offset = rng.randrange(0, size - target.range_length)
                headers["Range"] = f"bytes={offset}-{offset + target.range_length - 1}"
            sent = time.perf_counter()
            try:
                conn.request("GET", target.path, headers=headers)
                response = conn.getresponse()
                first = time.perf_counter()
                response.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
                continue
            if response.status != target.status:
                errors += 1
            else:
                ttfb.append(first - sent)
        conn.close()
        with lock:
            cell.ttfb.extend(ttfb)
            cell.errors += errors

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at.append(began + seconds)
    start.wait()
    for thread in threads:
        thread.join()
    cell.seconds = time.perf_counter() - began
    return cell


def create_postgres_database() -> tuple[str, str]:
    import psycopg

    name = f"erphub_bench_{secrets.token_hex(4)}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgres://postgres@127.0.0.1:5432/{name}"


def drop_postgres_database(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def obtain_token(port: int, password: str) -> str:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        body = json.dumps({"username": READER, "password": password})
        conn.request("POST", "/api/token/", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = json.loads(response.read())
    finally:
        conn.close()
    return str(data["access"])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (from /proc), in seconds."""
    return _proc_stat_sum(pids, (11, 12)) / os.sysconf("SC_CLK_TCK")


def minor_faults(pids: list[int]) -> int:
    """Minor page faults of these processes so far (from /proc); unlike CPU time, a busy machine leaves
    them alone."""
    return _proc_stat_sum(pids, (7,))


def _proc_stat_sum(pids: list[int], indexes: tuple[int, ...]) -> int:
    total = 0
    for pid in pids:
        try:
            fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(fields_[i]) for i in indexes)
    return total


@dataclass
class Served:
    """One server of the run: its variant, environment, token and targets."""

    variant: str
    env: dict[str, str]
    server: Gunicorn
    token: str
    targets: list[Target]
    pg_name: str | None


# What each variant runs: this tree with the audit group commit on (the product) or off, or ``--base-tree``
# (a checkout of the code before issue 14, e.g. ``git archive main``) for the before/after.
VARIANTS = {"after": "1", "after-no-group-commit": "0", "before": "1"}


def start_served(database: str, variant: str, work: Path, plain: Path, base_tree: Path | None) -> Served:
    group_commit = VARIANTS[variant]
    var_dir = work / f"var-{database}-{variant}"
    var_dir.mkdir()
    password = secrets.token_urlsafe(18)
    env = server_env(var_dir, username=USERNAME, password=password, key_id="bench-1")
    env.update(
        JWT_ACCESS_MINUTES="240",  # one token for the whole run
        ERPHUB_BENCH_PLAIN_FILE=str(plain),
        ERPHUB_BENCH_GROUP_COMMIT=group_commit,
        DJANGO_SETTINGS_MODULE="bench.settings_requests",
        AUDIT_LOG_STREAM="stderr",
        # audit_verify at the end reads the checkpoint signing key (a fresh one per run).
        AUDIT_SIGNING_KEY=base64.b64encode(os.urandom(32)).decode(),
    )
    pg_name = None
    if database == "postgresql":
        pg_name, env["DATABASE_URL"] = create_postgres_database()
    prepare_database(env)
    manage(env, "shell", "-c", CREATE_READER.format(name=READER, password=password))
    blob_id = manage(env, "blobs_import", str(plain), "--owner", READER).split("\t", 1)[0].strip()
    log_path = work / f"gunicorn-{database}-{variant}.log"
    if variant == "before":
        if base_tree is None:
            raise SystemExit("the 'before' variant needs --base-tree")
        server = start_in_tree(base_tree, env, log_path)
    else:
        server = Gunicorn.start(env, log_path, timeout=120, name=variant)
    server.wait_until_healthy()
    stream = f"/secure/files/{blob_id}/stream"
    targets = [
        Target("GET /health", "/health", 200),
        Target("plain Django, 1-byte range", "/bench/plain-range", 206, range_length=1),
        Target("API stream, 1-byte range", stream, 206, range_length=1, auth=True),
        # The same range's unskippable work in a plain Django view (bench/requestserve.py): not in the
        # 'before' variant's tree.
        *(
            [Target("floor in Django, 1-byte range", f"/bench/floor-range/{blob_id}", 206, 1, auth=True)]
            if variant != "before"
            else []
        ),
        Target("plain Django, 64 KiB range", "/bench/plain-range", 206, range_length=64 * KIB),
        Target("API stream, 64 KiB range", stream, 206, range_length=64 * KIB, auth=True),
        Target("API metadata", f"/secure/files/{blob_id}/", 200, auth=True),
        Target("API list", "/secure/files/", 200, auth=True),
    ]
    return Served(variant, env, server, obtain_token(server.port, password), targets, pg_name)


def start_in_tree(tree: Path, env: dict[str, str], log_path: Path) -> Gunicorn:
    """The same server as ``Gunicorn.start`` (event worker, 2 workers), run from another source tree. The
    tree gets this run's bench URLconf and settings (without the group-commit switch it may not know)."""
    bench = tree / "bench"
    shutil.copy(Path(__file__).with_name("requestserve.py"), bench / "requestserve.py")
    settings = Path(__file__).with_name("settings_requests.py").read_text()
    (bench / "settings_requests.py").write_text(
        "\n".join(line for line in settings.splitlines() if not line.startswith("AUDIT = "))
    )
    env = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    return Gunicorn.start(env, log_path, timeout=120, name="before", cwd=tree)


def bench_database(
    database: str, args: argparse.Namespace, work: Path, plain: Path
) -> list[dict[str, object]]:
    """Every server of ``database`` up at once; each cell runs on each server in turn (``--repeats``
    rounds, the median round reported), so a neighbour's load on the shared machine hits both modes alike."""
    rows: list[dict[str, object]] = []
    served: list[Served] = []
    try:
        for variant in args.variants:
            served.append(start_served(database, variant, work, plain, args.base_tree))
        # Warm-up: first requests load modules, the flags snapshot, the data key. Many connections, so that
        # every worker gets some (one connection stays with one worker, and the other's first requests fell
        # into the measured cells) and as many at once as it admits (8 view phases): the floor's instances,
        # one per concurrent request with its own database connection, are made here, not in a measured cell.
        for one in served:
            for target in one.targets:
                run_cell(
                    one.server.port,
                    target,
                    clients=32,
                    seconds=0.3,
                    size=args.size_kib * KIB,
                    token=one.token,
                )
        names = list(dict.fromkeys(target.name for one in served for target in one.targets))
        for clients in args.clients:
            for name in names:
                having = [one for one in served if any(target.name == name for target in one.targets)]
                rounds: dict[str, list[dict[str, object]]] = {one.variant: [] for one in having}
                for _ in range(args.repeats):
                    for one in having:
                        rounds[one.variant].append(measure(one, database, name, clients, args))
                for one in having:
                    # The round with the median requests/s, whole (its latencies belong to it).
                    ordered = sorted(rounds[one.variant], key=lambda row: float(row["rps"]))  # type: ignore[arg-type]
                    row = ordered[len(ordered) // 2]
                    rows.append(row)
                    log(json.dumps(row))
        for one in served:
            one.server.stop()
            verified = manage(one.env, "audit_verify", "--full", timeout=600).strip()
            log(f"{database}, {one.variant}: audit_verify --full: {verified}")
            rows.append({"database": database, "variant": one.variant, "verify": verified})
    finally:
        for one in served:
            one.server.stop()
            if one.pg_name:
                drop_postgres_database(one.pg_name)
    return rows


def measure(
    one: Served, database: str, name: str, clients: int, args: argparse.Namespace
) -> dict[str, object]:
    (target,) = [target for target in one.targets if target.name == name]
    pids = [one.server.proc.pid, *one.server.worker_pids()]
    cpu_before, client_before, faults_before = cpu_seconds(pids), time.process_time(), minor_faults(pids)
    cell = run_cell(
        one.server.port,
        target,
        clients=clients,
        seconds=args.seconds,
        size=args.size_kib * KIB,
        token=one.token,
    )
    return {
        "database": database,
        "variant": one.variant,
        "clients": clients,
        "target": target.name,
        "requests": len(cell.ttfb),
        "rps": round(cell.rps, 1),
        "p50_ms": round(cell.quantile(0.5), 2),
        "p95_ms": round(cell.quantile(0.95), 2),
        "errors": cell.errors,
        "server_cpu": round((cpu_seconds(pids) - cpu_before) / cell.seconds, 2),
        "client_cpu": round((time.process_time() - client_before) / cell.seconds, 2),
        "server_faults_per_request": round((minor_faults(pids) - faults_before) / max(1, len(cell.ttfb))),
    }


def table(rows: list[dict[str, object]]) -> str:
    lines = []
    cells = [r for r in rows if "target" in r]
    health = {
        (r["database"], r["variant"], r["clients"]): r["rps"] for r in cells if r["target"] == "GET /health"
    }
    lines.append(
        "| database | variant | clients | request | req/s | × /health | p50 TTFB ms | p95 TTFB ms "
        "| errors | server CPU | client CPU | server faults / req |"
    )
    lines.append("|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in cells:
        base = health.get((r["database"], r["variant"], r["clients"])) or 0
        ratio = f"{float(r['rps']) / float(base):.2f}" if base else "—"  # type: ignore[arg-type]
        lines.append(
            f"| {r['database']} | {r['variant']} | {r['clients']} | {r['target']} "
            f"| {r['rps']} | {ratio} | {r['p50_ms']} | {r['p95_ms']} | {r['errors']} | {r['server_cpu']} "
            f"| {r['client_cpu']} | {r.get('server_faults_per_request', '—')} |"
        )
    for r in rows:
        if "verify" in r:
            lines.append(f"\n{r['database']}, {r['variant']}: `audit_verify --full`: {r['verify']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="servers to compare"
    )
    parser.add_argument("--base-tree", type=Path, help="source tree of the 'before' variant")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds per cell (median reported)"
    )
    parser.add_argument("--size-kib", type=int, default=8 * 1024, help="the blob and the plaintext file")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="erphub-bench-requests-", dir="/tmp"))
    try:
        plain = work / "plain.bin"
        write_random(plain, args.size_kib * KIB)
        rows: list[dict[str, object]] = []
        for database in args.databases:
            rows += bench_database(database, args, work, plain)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        print(table(rows))
        print()
        for name, value in machine_facts().items():
            print(f"- {name}: {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
