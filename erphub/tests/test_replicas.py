"""Two replicas end to end (docs/scaling-out.md): two gunicorns on different loopback ports sharing one
PostgreSQL database, one S3 bucket for blobs (moto's server over real HTTP) and one Redis (a private
redis-server this module starts and stops).

A blob uploaded through one streams with ranges from the other; metrics of both add up; the audit chain stays
valid with both writing at once; Redis stopping changes nothing a client sees; PostgreSQL dropping every
connection of the app fails only what was in flight; a kill switch set through one replica is enforced by the
other within 5 seconds (last: the switch stays tripped). Runs in the PostgreSQL suite only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import secrets
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest

from blobs.tests.liveserver import Gunicorn, ServerError, manage, prepare_database, server_env
from blobs.tests.liveserver import Session as LiveSession
from blobs.tests.s3 import S3Bucket, s3_environment
from core.tests.redis_server import RedisServer
from kms.tests import servers

pytestmark = pytest.mark.e2e

SEGMENT_SIZE = 65536
SIZE = 2 * 1024 * 1024 + 321
HTTP_TIMEOUT = 30.0
FLAG_DEADLINE = 5.0  # seconds: the design's bound for a flag change to reach every worker and replica


@dataclass
class Cluster:
    a: Gunicorn
    b: Gunicorn
    env: dict[str, str]  # replica A's (the same database, cache and storage as B's)
    database_url: str
    redis: RedisServer
    username: str
    password: str
    bucket: S3Bucket


class Session(LiveSession):
    def upload(self, data: bytes, filename: str) -> dict:
        reply = self.request(
            "POST",
            f"/secure/files/?{urlencode({'filename': filename})}",
            body=data,
            headers={"Content-Type": "application/octet-stream", **self.csrf_headers()},
        )
        assert reply.status == 201, reply.body[:500]
        return reply.json()


@pytest.fixture(scope="module")
def s3_store(tmp_path_factory) -> Iterator[S3Bucket]:
    """The blob store both replicas use: one bucket on moto's S3 server, reached the way a deploy reaches
    S3 (BLOB_STORAGE_BACKEND=s3, boto3's AWS_ENDPOINT_URL_S3 and credentials from the environment)."""
    servers.require_moto()
    server = servers.MotoServer(tmp_path_factory.mktemp("replicas-s3"))
    proxy = servers.FaultProxy(server.port)  # unused faults; S3Bucket takes the pair the blob suite uses
    bucket = S3Bucket(server, proxy)
    try:
        with pytest.MonkeyPatch.context() as patch:  # the test's own client: moto's test credentials
            for name, value in s3_environment(server.url).items():
                if value is None:
                    patch.delenv(name, raising=False)
                else:
                    patch.setenv(name, value)
            bucket.create()
            yield bucket
    finally:
        bucket.close()
        proxy.close()
        server.stop()


def shared_storage_env(bucket: S3Bucket) -> dict[str, str]:
    environment = s3_environment(bucket.server.url)
    environment = {name: value for name, value in environment.items() if value is not None}
    return {"BLOB_STORAGE_BACKEND": "s3", "BLOB_S3_BUCKET": bucket.bucket, **environment}


@pytest.fixture(scope="module")
def database_url(module_postgres_database: str) -> str:
    """A fresh PostgreSQL database for this module's servers, dropped afterwards."""
    return module_postgres_database


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, database_url, s3_store) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replicas")
    try:
        redis = RedisServer(root)
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    redis.start()
    username, password = "admin", secrets.token_urlsafe(18)
    # What replicas must share besides the services: the Django secret (sessions, CSRF), the master key
    # (a blob wrapped by one is unwrapped by the other) and the audit checkpoint signing key.
    shared = {
        "DATABASE_URL": database_url,
        # The default per-worker connection pool (health-checked): what PostgreSQL dropping them tests.
        "DATABASE_POOL_MAX_SIZE": "4",
        "REDIS_URL": redis.url,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "BLOB_MASTER_KEYS": f"rep-1:{base64.b64encode(os.urandom(32)).decode()}",
        "AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
        "AUDIT_CHECKPOINT_DIR": str(root / "shared-checkpoints"),
        "BLOB_SEGMENT_SIZE": str(SEGMENT_SIZE),
        **shared_storage_env(s3_store),
    }
    servers: list[Gunicorn] = []
    envs: list[dict[str, str]] = []
    try:
        for name in ("a", "b"):
            var_dir = root / name
            (var_dir / "prometheus").mkdir(parents=True)
            env = server_env(
                var_dir,
                username=username,
                password=password,
                key_id="unused",
                PROMETHEUS_MULTIPROC_DIR=str(var_dir / "prometheus"),  # each replica its own
                **shared,
            )
            if name == "a":
                prepare_database(env)  # migrate and the superuser, once for both
            servers.append(Gunicorn.start(env, var_dir / "gunicorn.log", timeout=60, name=name))
            envs.append(env)
        for server in servers:
            server.wait_until_healthy(60)
        yield Cluster(servers[0], servers[1], envs[0], database_url, redis, username, password, s3_store)
    except ServerError as exc:
        pytest.fail(str(exc))
    finally:
        for server in servers:
            server.stop()
        redis.stop()


def login(cluster: Cluster, server: Gunicorn) -> Session:
    session = Session(server, timeout=HTTP_TIMEOUT)
    session.login(cluster.username, cluster.password)
    return session


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(16).randbytes(SIZE)


@pytest.fixture(scope="module")
def blob(cluster, data) -> dict:
    return login(cluster, cluster.a).upload(data, "replicated.bin")


def stream(blob_id: str) -> str:
    return f"/secure/files/{blob_id}/stream"


def scrape(server: Gunicorn) -> str:
    with urllib.request.urlopen(server.url("/metrics"), timeout=30) as reply:
        return reply.read().decode()


def downloads(server: Gunicorn) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(scrape(server))
        for sample in family.samples
        if sample.name == "file_downloads_total" and sample.labels.get("status") == "success"
    )


def test_a_blob_uploaded_through_one_replica_streams_with_ranges_from_the_other(cluster, blob, data):
    assert blob["sha256"] == hashlib.sha256(data).hexdigest()
    # Its ciphertext is in the shared bucket (no replica holds it on a disk of its own), under a name from
    # the blob's id, never the upload's filename.
    keys = cluster.bucket.keys()
    assert len([key for key in keys if ".ready" not in key]) == 1, keys
    assert not any("replicated" in key for key in keys)
    other = login(cluster, cluster.b)  # the session cookie of A is valid on B too (shared secret + database)
    whole = other.request("GET", stream(blob["id"]))
    assert whole.status == 200
    assert whole.body == data
    for start, stop in [(0, 99), (SEGMENT_SIZE - 7, SEGMENT_SIZE + 7), (SIZE - 500, SIZE - 1)]:
        part = other.request("GET", stream(blob["id"]), headers={"Range": f"bytes={start}-{stop}"})
        assert part.status == 206
        assert part.headers["Content-Range"] == f"bytes {start}-{stop}/{SIZE}"
        assert part.body == data[start : stop + 1]


def test_metrics_of_both_replicas_add_up(cluster, blob, data):
    before = downloads(cluster.a), downloads(cluster.b)
    sessions = login(cluster, cluster.a), login(cluster, cluster.b)
    for session, count in zip(sessions, (3, 5), strict=True):
        for n in range(count):
            reply = session.request("GET", stream(blob["id"]), headers={"Range": f"bytes={n}-{n + 9}"})
            assert reply.status == 206
    # Each replica counts only what it served (its own PROMETHEUS_MULTIPROC_DIR); the sum is every download.
    # The end of a download is counted when its body iterator finishes, just after the client has it all.
    deadline = time.monotonic() + 30
    while True:
        after = downloads(cluster.a), downloads(cluster.b)
        if (after[0] - before[0], after[1] - before[1]) == (3, 5) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (after[0] - before[0], after[1] - before[1]) == (3, 5)
    assert sum(after) - sum(before) == 8


def test_the_audit_chain_stays_valid_with_both_replicas_writing_at_once(cluster, blob):
    sessions = [login(cluster, cluster.a), login(cluster, cluster.b)]

    def fetch(n: int) -> int:
        reply = sessions[n % 2].request(
            "GET", stream(blob["id"]), headers={"Range": f"bytes={n}-{n + 99}", "X-Request-ID": f"rep-{n}"}
        )
        return reply.status

    def upload(n: int) -> int:
        return int(bool(sessions[n % 2].upload(os.urandom(1000 + n), f"concurrent-{n}.bin")["id"]))

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(fetch, range(40)))
        uploaded = list(pool.map(upload, range(10)))
    assert statuses == [206] * 40
    assert sum(uploaded) == 10
    time.sleep(0.5)  # a download's end event is written just after its last byte; nothing asserts on timing
    out = manage(cluster.env, "audit_verify", "--full", timeout=120)  # raises unless it exits 0
    assert out.startswith("ok: "), out


def test_redis_stopping_changes_nothing_a_client_sees(cluster, blob, data):
    cluster.redis.stop()
    try:
        for server in (cluster.a, cluster.b):
            session = login(cluster, server)  # the login lockout counts in process memory meanwhile
            part = session.request("GET", stream(blob["id"]), headers={"Range": "bytes=1000-1999"})
            assert part.status == 206
            assert part.body == data[1000:2000]
            assert session.request("GET", "/secure/files/").status == 200  # the flag gate: stamp from the DB
            assert session.upload(b"while redis is down", "no-redis.txt")["size"] == 19
            token = session.request(
                "POST",
                "/api/token/",
                body=json.dumps({"username": cluster.username, "password": "wrong"}),
                headers={"Content-Type": "application/json"},
            )
            assert token.status == 401  # counted, and refused as usual
    finally:
        cluster.redis.start()
    for server in (cluster.a, cluster.b):
        log = server.log_path.read_text(errors="replace")
        assert "shared cache unavailable" in log
        assert cluster.redis.url not in log
        assert "Traceback" not in log


def _terminate_app_connections(database_url: str) -> int:
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


def test_postgresql_dropping_every_connection_fails_only_what_was_in_flight(cluster, blob, data):
    sessions = [login(cluster, cluster.a), login(cluster, cluster.b)]
    for session in sessions:  # every replica holds pooled connections now
        assert session.request("GET", "/secure/files/").status == 200
    stop = threading.Event()
    results: list[tuple[int, bytes]] = []

    def traffic(session: Session) -> None:
        while not stop.is_set():
            reply = session.request("GET", stream(blob["id"]), headers={"Range": "bytes=0-999"})
            results.append((reply.status, reply.body))

    threads = [threading.Thread(target=traffic, args=(s,)) for s in sessions for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        terminated = 0
        for _ in range(5):
            terminated += _terminate_app_connections(cluster.database_url)
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert terminated > 0
    failed = [status for status, _ in results if status != 206]
    print(f"{terminated} connections terminated; {len(failed)} of {len(results)} requests failed: {failed}")
    for status, body in results:
        if status == 206:
            assert body == data[:1000]
        else:  # a request whose connection died under it: a clean error, no stack trace
            assert status == 503, (status, body[:300])
            assert json.loads(body)["code"] == "database_unavailable"
    # No restart: the next requests on both replicas succeed.
    for session in sessions:
        for _ in range(10):
            reply = session.request("GET", stream(blob["id"]), headers={"Range": "bytes=0-999"})
            if reply.status == 206:
                break
        assert reply.status == 206, reply.body[:300]
        assert [session.request("GET", "/secure/files/").status for _ in range(6)] == [200] * 6


def test_a_kill_switch_set_through_one_replica_is_enforced_by_the_other_within_5_seconds(cluster):
    admin = login(cluster, cluster.a)
    user_on_b = login(cluster, cluster.b)
    assert user_on_b.request("GET", "/secure/files/").status == 200
    changelist = admin.request("GET", "/admin/flags/flag/")
    match = re.search(rb'href="/admin/flags/flag/(\d+)/change/">secure_blob_streaming<', changelist.body)
    assert match, changelist.body[:500]
    kill_path = f"/admin/flags/flag/{match.group(1).decode()}/kill/"
    page = admin.request("GET", kill_path)
    version = re.search(rb'name="version" value="(\d+)"', page.body).group(1).decode()
    reply = admin.request(
        "POST",
        kill_path,
        body=urlencode({"version": version, "reason": "replica proof"}),
        headers={"Content-Type": "application/x-www-form-urlencoded", **admin.csrf_headers()},
    )
    saved_at = time.monotonic()
    assert reply.status == 302, reply.body[:500]
    # Every request on B may land on either of its workers: poll until several in a row answer 503.
    in_a_row, seen_at = 0, None
    while time.monotonic() - saved_at < FLAG_DEADLINE + 5 and in_a_row < 6:
        status = user_on_b.request("GET", "/secure/files/").status
        if status == 503:
            in_a_row += 1
            seen_at = seen_at or time.monotonic() - saved_at
        else:
            assert status == 200
            in_a_row, seen_at = 0, None
        time.sleep(0.05)
    print(f"kill switch enforced by replica B after {seen_at} s")
    assert in_a_row >= 6, "replica B still serves after the kill switch"
    assert seen_at is not None
    assert seen_at <= FLAG_DEADLINE, f"seen after {seen_at:.2f} s"
