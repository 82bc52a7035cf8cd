"""The hardware under a durable audit append (issue 14): what one commit and one round trip cost here.

    .venv/bin/python bench/bench_commit.py

bench_floor.py times an audited request and its pieces in process; this one times what those pieces stand on,
without Python's part in the product, so that a figure can be read against the machine's own limit:

- ``fdatasync`` of a 4 KiB append to a file in the var dir's file system and in /tmp (what a synchronous
  commit waits for; SQLite in WAL with ``synchronous=NORMAL`` does not wait for it at commit);
- one autocommitted ``INSERT`` on PostgreSQL (127.0.0.1:5432, a fresh database, dropped at the end) with
  ``synchronous_commit`` on (the product's: the commit waits for the WAL flush) and off;
- one ``SELECT 1`` round trip through psycopg, plain and under gevent's monkey-patching (how a server worker
  waits for PostgreSQL);
- the blob-and-permission lookup of a request (the product's SQL shape: three joins in an ``EXISTS``) planned
  every time and prepared (what core/backends/postgresql's prepared statements save).

Each figure is the median of ``--iterations`` runs in microseconds, wall time. Each case runs in a fresh child
process (gevent's patching cannot be undone).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LOOKUP = """
SELECT b.id, b.size FROM probe_blob b
WHERE b.state = 'ready' AND b.id = %s AND (b.owner_id = %s OR EXISTS (
    SELECT 1 FROM probe_permission p INNER JOIN probe_content_type ct ON ct.id = p.content_type_id
    WHERE ct.app_label = 'blobs' AND p.codename = 'view_any_blob' AND (
        p.id IN (SELECT g.permission_id FROM probe_user_permission g WHERE g.user_id = %s)
        OR p.id IN (SELECT g.permission_id FROM probe_group_permission g
                    INNER JOIN probe_user_group ug ON ug.group_id = g.group_id WHERE ug.user_id = %s))))
"""
SCHEMA = """
CREATE TABLE probe_commit (id bigserial PRIMARY KEY, v text);
CREATE TABLE probe_content_type (id serial PRIMARY KEY, app_label text, model text,
    UNIQUE (app_label, model));
CREATE TABLE probe_permission (id serial PRIMARY KEY, content_type_id int REFERENCES probe_content_type,
    codename text);
CREATE TABLE probe_user_permission (id serial PRIMARY KEY, user_id int, permission_id int);
CREATE INDEX ON probe_user_permission (user_id);
CREATE TABLE probe_user_group (id serial PRIMARY KEY, user_id int, group_id int);
CREATE INDEX ON probe_user_group (user_id);
CREATE TABLE probe_group_permission (id serial PRIMARY KEY, group_id int, permission_id int);
CREATE TABLE probe_blob (id uuid PRIMARY KEY, state varchar(16), owner_id int, size bigint);
CREATE INDEX ON probe_blob (state);
INSERT INTO probe_content_type (app_label, model) VALUES ('blobs', 'blob');
INSERT INTO probe_permission (content_type_id, codename) VALUES (1, 'view_any_blob');
INSERT INTO probe_blob SELECT gen_random_uuid(), 'ready', 1, 100 FROM generate_series(1, 1000);
ANALYZE;
"""


def median_us(run, iterations: int) -> float:
    samples = []
    for _ in range(iterations):
        began = time.perf_counter()
        run()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples[iterations // 10 :]) * 1e6  # the first tenth warms up


def child(case: str, url: str, iterations: int) -> dict[str, float]:
    if case == "gevent":
        from gevent import monkey

        monkey.patch_all()
    import psycopg

    results: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        if case == "fsync":
            for where in (os.environ.get("ERPHUB_VAR_DIR") or "var", "/tmp"):
                Path(where).mkdir(parents=True, exist_ok=True)
                handle, name = tempfile.mkstemp(dir=where)
                try:
                    block = b"x" * 4096

                    def append(handle: int = handle, block: bytes = block) -> None:
                        os.write(handle, block)
                        os.fdatasync(handle)

                    results[f"fdatasync of a 4 KiB append ({where})"] = median_us(append, iterations)
                finally:
                    os.close(handle)
                    os.unlink(name)
            for setting in ("on", "off"):
                conn.execute(f"SET synchronous_commit = {setting}")
                results[f"PostgreSQL autocommit INSERT, synchronous_commit={setting}"] = median_us(
                    lambda: conn.execute("INSERT INTO probe_commit (v) VALUES ('x')"), iterations
                )
            blob_id = conn.execute("SELECT id FROM probe_blob LIMIT 1").fetchone()[0]  # type: ignore[index]
            params = [blob_id, 2, 2, 2]  # another user's blob: the EXISTS is evaluated
            with conn.cursor() as cursor:  # server-side binding: preparable
                for prepare in (False, True):
                    label = "prepared" if prepare else "planned"

                    def lookup(prepare: bool = prepare) -> None:
                        cursor.execute(LOOKUP, params, prepare=prepare).fetchall()

                    results[f"blob lookup with its permission, {label}"] = median_us(lookup, iterations)
        results[f"SELECT 1 round trip ({'gevent' if case == 'gevent' else 'plain'})"] = median_us(
            lambda: conn.execute("SELECT 1").fetchone(), iterations
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.iterations)))
        return 0
    import psycopg

    from bench.bench_download import machine_facts
    from bench.bench_requests import create_postgres_database, drop_postgres_database

    name, url = create_postgres_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)
        results: dict[str, float] = {}
        for case in ("fsync", "gevent"):
            done = subprocess.run(
                [sys.executable, __file__, "--iterations", str(args.iterations), "--child", case, url],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            results.update(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        drop_postgres_database(name)
    print("| operation | p50 µs |\n|---|--:|")
    for operation, value in results.items():
        print(f"| {operation} | {value:,.0f} |")
    print()
    for fact, value in machine_facts().items():
        print(f"- {fact}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
