"""Audit benchmark: appends per second, and what the audit adds to a small download.

    .venv/bin/python bench/bench_audit.py                       # SQLite, and PostgreSQL if reachable
    .venv/bin/python bench/bench_audit.py --events 4000 --downloads 400
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/bench_audit.py

Appends: ``--events`` events through ``audit_record`` (each its own transaction: lock, read the chain's
head, insert, commit) by one process, then by 8 processes at once (``--events``/8 each, released together),
on a fresh SQLite file (WAL, IMMEDIATE) and on a freshly created PostgreSQL database (dropped afterwards).
The rate is events / wall time from release to the last process's exit of the loop (Django start-up is not
counted). Afterwards ``audit_verify --full`` must pass: the chain is whole.

Download cost: two gunicorn servers (gthread, 2 workers x 4 threads) on one SQLite database: the product,
and the same with the download audit switched off (bench/settings_noaudit.py). ``--downloads`` GETs of a
1 KiB blob on a fresh connection each, interleaved between the two servers; median and p95 latency.
Prints markdown tables. Everything temporary lives under one directory in /tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the project root, for blobs.tests

from blobs.tests.liveserver import (  # noqa: E402
    Gunicorn,
    Session,
    manage,
    prepare_database,
    server_env,
)

USERNAME = "admin"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- appends ------------------------------------------------------------------------------------------------


def app_env(database_url: str, var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "ERPHUB_", "DJANGO_"))}
    env.update(
        DATABASE_URL=database_url,
        ERPHUB_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="erphub.settings",
        AUDIT_LOG_STREAM="stderr",  # each event's JSON log line, as in production; stdout is the result
    )
    return env


def run_manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def appends_per_second(env: dict[str, str], work: Path, *, writers: int, total: int) -> float:
    go = work / f"go-{writers}-{secrets.token_hex(3)}"
    each = total // writers
    logs = [(work / f"appender-{writers}-{n}.log").open("w") for n in range(writers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "audit.tests.appender", str(each), str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log_file,  # a file, not a pipe: a full pipe would stall the writer being measured
            text=True,
        )
        for log_file in logs
    ]
    time.sleep(3.0)  # let every process finish Django's start-up before the release (bench, not a test)
    started = time.perf_counter()
    go.touch()
    try:
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"appender failed; see {work}")
            json.loads(out)
        return each * writers / (time.perf_counter() - started)
    finally:
        for log_file in logs:
            log_file.close()


def bench_appends(name: str, database_url: str, work: Path, total: int) -> dict[str, float]:
    env = app_env(database_url, work / f"var-{name}")
    run_manage(env, "migrate", "--noinput", "--verbosity", "0")
    results = {}
    for writers in (1, 8):
        log(f"{name}: {total} appends by {writers} process(es)")
        results[f"{writers}"] = appends_per_second(env, work, writers=writers, total=total)
    verified = run_manage(env, "audit_verify", "--full")
    if not verified.startswith("ok: "):
        raise SystemExit(f"chain does not verify after the run: {verified}")
    log(f"{name}: {verified.strip()}")
    return results


def postgres_database(base_url: str) -> tuple[str, str]:
    import psycopg

    parts = urlsplit(base_url)
    name = f"audit_bench_{secrets.token_hex(4)}"
    admin = base_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{parts.scheme}://{parts.netloc}/{name}", name


def drop_postgres(base_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- download latency ---------------------------------------------------------------------------------------


def get_ms(server: Gunicorn, path: str, cookie: str) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        with conn.getresponse() as response:
            body = response.read()
            if response.status != 200 or len(body) != 1024:
                raise SystemExit(f"download failed: {response.status} {len(body)}")
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000


def bench_download(work: Path, downloads: int) -> dict[str, list[float]]:
    var_dir = work / "var-download"
    var_dir.mkdir()
    password = secrets.token_urlsafe(18)
    env = server_env(var_dir, username=USERNAME, password=password, key_id="bench-audit-1")
    prepare_database(env)
    small = work / "small.bin"
    small.write_bytes(os.urandom(1024))
    blob_id = manage(env, "blobs_import", str(small), "--owner", USERNAME).split("\t", 1)[0].strip()
    servers = {
        "audit on (the product)": Gunicorn.start(env, work / "on.log", timeout=120, name="on"),
        "audit off (bench only)": Gunicorn.start(
            {**env, "DJANGO_SETTINGS_MODULE": "bench.settings_noaudit"},
            work / "off.log",
            timeout=120,
            name="off",
        ),
    }
    try:
        for server in servers.values():
            server.wait_until_healthy()
        session = Session(next(iter(servers.values())))
        session.login(USERNAME, password)
        cookie = f"sessionid={session.cookies['sessionid']}"
        path = f"/secure/files/{blob_id}/stream"
        timings: dict[str, list[float]] = {name: [] for name in servers}
        for server in servers.values():  # warm-up: imports, key unwrap, connections
            for _ in range(20):
                get_ms(server, path, cookie)
        log(f"{downloads} downloads per server, interleaved")
        for index in range(downloads):
            order = list(servers.items()) if index % 2 == 0 else list(reversed(servers.items()))
            for name, server in order:
                timings[name].append(get_ms(server, path, cookie))
        return timings
    finally:
        for server in servers.values():
            server.stop()


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000, help="appends per measurement (default 2000)")
    parser.add_argument("--downloads", type=int, default=300, help="downloads per server (default 300)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL URL to create the bench database next to ('' to skip)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="erphub-bench-audit-", dir="/tmp"))
    pg_name = None
    try:
        rates = {
            "SQLite (WAL, IMMEDIATE)": bench_appends(
                "sqlite", f"sqlite:///{work / 'bench.sqlite3'}", work, args.events
            )
        }
        if args.postgres.startswith("postgres"):
            try:
                url, pg_name = postgres_database(args.postgres)
            except Exception as exc:
                log(f"PostgreSQL skipped: {exc}")
            else:
                rates["PostgreSQL (advisory lock)"] = bench_appends("postgres", url, work, args.events)
        timings = bench_download(work, args.downloads)
    finally:
        if pg_name:
            drop_postgres(args.postgres, pg_name)
        shutil.rmtree(work, ignore_errors=True)

    stamp = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    print(f"\nRun {stamp}, Python {platform.python_version()}, nproc {os.cpu_count()}\n")
    print("| database | 1 writer (appends/s) | 8 writer processes (appends/s, total) |")
    print("|---|--:|--:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate['1']:,.0f} | {rate['8']:,.0f} |")
    print("\n| small download (1 KiB, new connection each) | median | p95 | mean |")
    print("|---|--:|--:|--:|")
    for name, values in timings.items():
        print(
            f"| {name} | {statistics.median(values):.2f} ms | {p95(values):.2f} ms "
            f"| {statistics.mean(values):.2f} ms |"
        )
    on, off = (statistics.median(v) for v in timings.values())
    print(f"| **added by the audit (median)** | **{on - off:+.2f} ms** | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
