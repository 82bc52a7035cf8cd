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
  limit of that part on this machine);
- the same work with no framework around it (``_framework_free_range``): the audited 1-byte range and the
  durable append done with PyJWT, a DB-API connection of its own, the chain's hash and the crypto core, and
  the plaintext range read with ``open``; on PostgreSQL also in three round trips instead of seven
  (``fewest_round_trips``). Not a product path: the lower bound of any path in Python here, to tell the work
  an audited range must do from the cost of the path it runs on. Its events go into the product's chain,
  which is verified at the end.

No server and no client: the figures are wall time (``perf_counter``) of one request on one thread of an
otherwise idle process (commits and greenlet switches included), without gunicorn's parsing and socket
writes (the same for every request), which is why they are smaller than bench_requests.py's time to first
byte. The child is patched by gevent as a server worker is, and the end
event of a download is queued as there (``audit.deferred``) and written by the writer greenlet meanwhile.
"""

from __future__ import annotations

import argparse
import hashlib
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
    # Every database's operations, in the order of the one with the most (some are one database's only: a dash
    # elsewhere).
    ordered = sorted(results.values(), key=lambda result: -len(result["operations"]))
    names = list(dict.fromkeys(name for result in ordered for name in result["operations"]))
    lines = ["| operation | " + " | ".join(f"{db} p50 µs | p90 µs" for db in results) + " |"]
    lines.append("|---|" + "--:|--:|" * len(results))
    for name in names:
        cells = []
        for db in results:
            row = results[db]["operations"].get(name)
            cells.append(f"{row['p50_us']:,.0f} | {row['p90_us']:,.0f}" if row else "– | –")
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
    from django.db import connection
    from django.test.utils import override_settings
    from rest_framework_simplejwt.tokens import AccessToken

    from audit.deferred import deferred_writer_start, deferred_writer_stop
    from audit.recording import group_commit
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

    def write_deferred() -> None:
        # The whole requests before it leave their end events queued (audit.deferred), and the next append
        # takes them into its batch: written first, the append piece is one event's, as the floor's is.
        connection.ensure_connection()
        group_commit.flush(using=connection.alias)

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

    framework_free, framework_free_append = _framework_free_range(
        token=token, blob_id=blob_ids[1 << 20], reader=reader
    )
    # PostgreSQL only: the same work in three round trips (a join, and the append in two).
    fewest, _ = (
        _framework_free_range(token=token, blob_id=blob_ids[1 << 20], reader=reader, fewest_round_trips=True)
        if connection.vendor == "postgresql"
        else (None, None)
    )
    plain_file = Path(settings.BENCH_PLAIN_FILE)

    def framework_free_plain() -> list[tuple[str, str]]:
        # The plaintext 1-byte range with no framework: what Django itself adds to the yardstick.
        offset = (next(offsets) * 7919) % BLOB_SIZE
        with open(plain_file, "rb", buffering=0) as handle:
            handle.seek(offset)
            body = handle.read(1)
        if len(body) != 1:
            raise SystemExit("plain range: no byte")
        return [("Content-Range", f"bytes {offset}-{offset}/{BLOB_SIZE}"), ("Content-Length", "1")]

    operations: dict[str, Callable[[], object]] = {
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
    prepare = {"piece: one durable audit append": write_deferred}  # run untimed before the operation
    operations["limit: audited 1-byte range, 1024 KiB segments, no framework"] = lambda: framework_free(
        (next(offsets) * 7919) % BLOB_SIZE
    )
    if fewest is not None:
        operations["limit: audited 1-byte range, 1024 KiB segments, no framework, 3 round trips"] = lambda: (
            fewest((next(offsets) * 7919) % BLOB_SIZE)
        )
    operations["limit: plain 1-byte range, no framework"] = framework_free_plain
    operations["limit: one durable audit append, no framework"] = framework_free_append
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
            if name in prepare:
                prepare[name]()
            began = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - began)
    deferred_writer_stop()
    from audit.chain import verify_chain
    from audit.verification import _chain_values

    # The framework-free operation appends to the product's chain: its events must verify like the rest.
    report = verify_chain(_chain_values(1))
    if not report.ok:
        raise SystemExit(f"audit chain does not verify: {report}")
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


def _framework_free_range(
    *, token: str, blob_id: Any, reader: Any, queue_writers: bool = False, fewest_round_trips: bool = False
) -> tuple[Callable[..., tuple[list[tuple[str, str]], bytes]], Callable[[], None]]:
    """What an audited 1-byte range must do, with no framework around it: the lower bound of any serving path
    in Python on this machine, and so what the issue's targets can be measured against. Not a product path:
    it skips what the product does besides (request id, flags, throttling, the group-permission answer,
    conditional requests, the end event, logs, metrics, error mapping).

    On its own DB-API connection (sqlite3 or psycopg, autocommit): PyJWT checks the token's signature and
    claims, one query loads its user (active, password claim), one the blob it owns; the start event is
    appended to the product's chain in its own transaction (the write lock, the head, the insert, the
    commit, the hash by audit.chain); the one segment is read and decrypted by blobs.crypto with the data key
    from the process's cache; the status line and headers are built.

    ``run(offset, authorization=...)`` returns the headers and the byte; ``authorization`` is the request's
    header when it is served (bench/requestserve.py), ``token`` otherwise. ``queue_writers``: on SQLite, take
    the product's cross-process audit lock (``audit.recording._lock_audit_file``) before ``BEGIN IMMEDIATE``,
    as any path serving SQLite from several workers must; without it SQLite's busy handler would sleep
    inside the call, the whole worker with it. Failures raise RuntimeError (in a served view, a 500 the
    benchmark counts as an error).

    ``fewest_round_trips`` (PostgreSQL): the same work in three round trips instead of seven. The user and the
    blob in one query (a join), and the append in two simple queries bound on the client (psycopg's
    ``ClientCursor``): ``BEGIN; SELECT pg_advisory_xact_lock(..); <head>``, then ``<insert>; COMMIT``. The
    lock and the head stay two statements, so the head's snapshot is taken after the lock is held
    (READ COMMITTED takes one per statement): it sees the previous holder's committed event."""
    import hmac
    import sqlite3
    import uuid
    from datetime import UTC, datetime

    import jwt
    from django.conf import settings
    from django.db import connection

    from audit.chain import GENESIS, event_hash
    from audit.recording import ADVISORY_LOCK_KEY, _lock_audit_file, _Statements
    from blobs import crypto
    from blobs.models import Blob
    from blobs.selectors import blob_get_for_user
    from blobs.services import _unwrap_data_key, blob_store

    jwt_settings = settings.SIMPLE_JWT
    key, algorithm = jwt_settings["SIGNING_KEY"], jwt_settings["ALGORITHM"]
    blob = blob_get_for_user(user=reader, blob_id=blob_id, with_owner=False)
    data_keys = {blob.pk: _unwrap_data_key(blob, cached=True)}  # the cache hit, as a dict lookup
    path = blob_store(blob.storage_alias)._path(blob.storage_name)  # type: ignore[attr-defined]
    params, associated_data = blob.params, blob.associated_data
    statements = _Statements(connection)
    fields = [field.attname for field in statements.fields]
    db = connection.settings_dict
    sqlite = connection.vendor == "sqlite"
    if sqlite:
        raw_db: Any = sqlite3.connect(db["NAME"], isolation_level=None, timeout=20, check_same_thread=False)
        raw_db.execute("PRAGMA synchronous=NORMAL")  # the product's (WAL is the file's own)
        mark, blob_param = "?", blob.pk.hex
    else:
        import psycopg
        from psycopg.types.json import Jsonb

        raw_db = psycopg.connect(
            dbname=db["NAME"],
            user=db["USER"],
            password=db["PASSWORD"],
            host=db["HOST"],
            port=db["PORT"],
            autocommit=True,
        )
        mark, blob_param = "%s", blob.pk
    head_sql = statements.head
    insert_sql = statements.insert_sql.replace("%s", mark)
    blob_table, owner = Blob._meta.db_table, Blob._meta.get_field("owner").column
    user_sql = f"SELECT is_active, password FROM auth_user WHERE id = {mark}"  # noqa: S608
    blob_sql = f"SELECT id, size FROM {blob_table} WHERE id = {mark} AND {owner} = {mark}"  # noqa: S608
    authorization = f"Bearer {token}"
    user_and_blob_sql = (
        f"SELECT u.is_active, u.password, b.id, b.size FROM auth_user u LEFT JOIN {blob_table} b"  # noqa: S608
        f" ON b.id = {mark} AND b.{owner} = u.id WHERE u.id = {mark}"
    )
    lock_and_head_sql = f"BEGIN; SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY}); {head_sql}"
    insert_and_commit_sql = f"{insert_sql}; COMMIT"
    piped = fewest_round_trips and not sqlite

    def append(cursor: Any, event: dict[str, Any]) -> None:
        if not (sqlite and queue_writers):
            return append_locked(cursor, event)
        fd = os.open(f"{db['NAME']}-auditlock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock_audit_file(fd, timeout=20)
            return append_locked(cursor, event)
        finally:
            os.close(fd)  # releases the lock

    def append_locked(cursor: Any, event: dict[str, Any]) -> None:
        now = event["timestamp"]

        if piped:
            cursor = psycopg.ClientCursor(raw_db)
        else:
            cursor.execute("BEGIN IMMEDIATE" if sqlite else "BEGIN")
        try:
            if piped:
                cursor.execute(lock_and_head_sql)  # in the try: a failed lock or head must be rolled back
                cursor.nextset()  # BEGIN's and the lock's results: the head's is the third
                cursor.nextset()
            else:
                if not sqlite:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
                cursor.execute(head_sql)
            last = cursor.fetchone()
            event["sequence"], event["prev_hash"] = (int(last[0]) + 1, last[1]) if last else (1, GENESIS)
            event["hash"] = event_hash(event)
            row = dict(event)
            if sqlite:
                row["timestamp"] = now.replace(tzinfo=None).isoformat(sep=" ")
                row["details"] = json.dumps(event["details"])
            else:
                row["details"] = Jsonb(event["details"])
            if piped:
                cursor.execute(insert_and_commit_sql, [row[name] for name in fields])
            else:
                cursor.execute(insert_sql, [row[name] for name in fields])
                cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise

    def run(offset: int, *, authorization: str = authorization) -> tuple[list[tuple[str, str]], bytes]:
        if not authorization.startswith("Bearer "):
            raise RuntimeError("no bearer token")
        claims = jwt.decode(
            authorization[7:],
            key,
            algorithms=[algorithm],
            audience=jwt_settings["AUDIENCE"],
            issuer=jwt_settings["ISSUER"],
            leeway=jwt_settings["LEEWAY"],
        )
        if claims["token_type"] != "access":  # noqa: S105 — a claim's value, not a password
            raise RuntimeError("not an access token")
        cursor = raw_db.cursor()
        if piped:
            cursor.execute(user_and_blob_sql, (blob_param, claims["user_id"]))
            active, password, found_id, size = cursor.fetchone()
        else:
            cursor.execute(user_sql, (claims["user_id"],))
            active, password = cursor.fetchone()
        expected = hashlib.md5(password.encode()).hexdigest().upper()  # noqa: S324 — simplejwt's claim
        if not active or not hmac.compare_digest(claims["hash_password"].encode(), expected.encode()):
            raise RuntimeError("user inactive or token revoked")
        if not piped:
            cursor.execute(blob_sql, (blob_param, claims["user_id"]))
            found_id, size = cursor.fetchone()
        if found_id is None:
            raise RuntimeError("no such blob of this user")
        found = uuid.UUID(hex=found_id) if sqlite else found_id
        now = datetime.now(UTC)
        event = {
            "timestamp": now,
            "actor_type": "user",
            "actor_id": str(claims["user_id"]),
            "actor": "reader",
            "action": "blob.download",
            "target_type": "blob",
            "target_id": str(found),
            "outcome": "success",
            "remote_addr": "127.0.0.1",
            "request_id": uuid.uuid4().hex,
            "user_agent": "bench",
            "details": {"range": [offset, offset + 1]},
        }
        append(cursor, event)
        with open(path, "rb", buffering=0) as raw:
            decryptor = crypto.Decryptor(
                data_keys[found],
                associated_data,
                raw.read(params.header_size),
                plaintext_size=size,
                params=params,
            )
            raw.seek(decryptor.span(offset, offset + 1)[0])
            body = b"".join(decryptor.iter_range(raw, offset, offset + 1))
        if len(body) != 1:
            raise RuntimeError("audited range: no byte")
        headers = [
            ("Content-Range", f"bytes {offset}-{offset}/{size}"),
            ("Content-Length", str(len(body))),
            ("Content-Type", "application/octet-stream"),
        ]
        return headers, body

    def append_only() -> None:
        event = {
            "timestamp": datetime.now(UTC),
            "actor_type": "user",
            "actor_id": str(reader.pk),
            "actor": "reader",
            "action": "bench.floor",
            "target_type": "blob",
            "target_id": "floor",
            "outcome": "success",
            "remote_addr": "",
            "request_id": "",
            "user_agent": "",
            "details": {},
        }
        append(raw_db.cursor(), event)

    return run, append_only


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
