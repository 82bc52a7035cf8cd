"""The deferred writer (audit/deferred.py) and the group commit's deferred queue (audit/recording.py):
after-the-fact events queued, merged into the next batch, retried, flushed on a worker's graceful stop.

In-process tests drive ``GroupCommit`` in the test's transaction (each group transaction is a savepoint);
the writer itself runs for real in subprocesses (threads and gevent, SQLite and PostgreSQL) and in a live
gunicorn, each on a database of its own.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from prometheus_client import REGISTRY

from audit.chain import verify_chain
from audit.deferred import DeferredWriter
from audit.recording import GroupCommit, _fields
from blobs.tests.liveserver import serve
from core.actors import Actor

from .factories import chain_rows
from .test_concurrency import ROOT, _env, _manage, verified


def _event(target_id: str) -> dict:
    return _fields(
        action="test.deferred",
        actor=Actor.system("test"),
        target_type="t",
        target_id=target_id,
        outcome="success",
        details={"bytes_sent": 1, "duration_ms": 2},
        request=None,
        context=None,
    )


def failures() -> float:
    return REGISTRY.get_sample_value("audit_write_failures_total") or 0.0


# --- the queue, in-process ----------------------------------------------------------------------------------


def test_nothing_is_deferred_without_a_writer():
    assert GroupCommit().defer(_event("a"), using="default") is False


@pytest.mark.django_db
def test_the_next_leader_takes_the_deferred_events_first():
    group = GroupCommit()
    wakes: list[None] = []
    group.start_deferring(capacity=10, wake=lambda: wakes.append(None))
    assert group.defer(_event("end-1"), using="default")
    assert group.defer(_event("end-2"), using="default")
    assert len(wakes) == 1  # woken once, when the queue stopped being empty
    started = group.append(_event("start"), using="default")
    # One transaction: the ends first (they happened before), then the leader's own event.
    assert (group.transactions, group.events) == (1, 3)
    assert [row["target_id"] for row in chain_rows()] == ["end-1", "end-2", "start"]
    assert started.sequence == 3
    assert group.deferred_left() == 0
    assert verify_chain(chain_rows()).ok


@pytest.mark.django_db
def test_flush_writes_what_no_leader_took():
    group = GroupCommit()
    group.start_deferring(capacity=10, wake=lambda: None)
    group.defer(_event("end"), using="default")
    group.flush(using="default")
    assert (group.transactions, group.events) == (1, 1)
    assert [row["target_id"] for row in chain_rows()] == ["end"]
    group.flush(using="default")  # nothing queued: no transaction
    assert group.transactions == 1


def test_a_full_queue_refuses_so_the_caller_writes_inline():
    group = GroupCommit()
    group.start_deferring(capacity=2, wake=lambda: None)
    assert [group.defer(_event(str(n)), using="default") for n in range(3)] == [True, True, False]
    group.stop_deferring()
    assert group.defer(_event("after"), using="default") is False
    assert group.deferred_left() == 2  # stopping keeps what is queued, for the final flush


class FailsFor:
    """Fails the audit INSERT of one target id at the database boundary (an execute wrapper)."""

    def __init__(self, target_id: str) -> None:
        self.target_id = target_id
        self.attempts = 0

    def __call__(self, execute, sql, params, many, context):
        if sql.lstrip().upper().startswith('INSERT INTO "AUDIT_AUDITEVENT"') and self.target_id in params:
            self.attempts += 1
            raise OperationalError("disk I/O error")
        return execute(sql, params, many, context)


@pytest.mark.django_db
def test_a_failing_deferred_event_is_retried_later_then_lost(caplog):
    group = GroupCommit()
    group.start_deferring(capacity=10, wake=lambda: None)
    group.defer(_event("bad"), using="default")
    group.defer(_event("good"), using="default")
    before = failures()
    fails = FailsFor("bad")
    with connection.execute_wrapper(fails), caplog.at_level(logging.CRITICAL):
        group.append(_event("mine"), using="default")
        # The batch failed, then each event alone: the others are written; the failed one waits its retry,
        # not in the leader's caller's time.
        assert [row["target_id"] for row in chain_rows()] == ["good", "mine"]
        assert group.deferred_left() == 1
        assert group.retry_due(now=0.0) is not None  # not due yet
        for _ in range(2):  # AFTER_RETRIES = 3 writes in all
            assert group.retry_due(now=float("inf")) is None
            group.flush(using="default")
    assert fails.attempts == 3 + 1  # the batch, then alone, then two retries
    assert group.deferred_left() == 0
    assert failures() == before + 1
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "AUDIT EVENT NOT WRITTEN" in message
    assert '"target_id": "bad"' in message
    assert verify_chain(chain_rows()).ok


def test_a_worker_exit_past_its_deadline_logs_what_is_left_as_lost(caplog):
    # A database that stays down must not hold the worker's exit until gunicorn kills it: the events left are
    # then logged whole and counted, not gone without a trace.
    group = GroupCommit()
    writer = DeferredWriter(group, interval=3600.0, capacity=10)
    writer.start()
    group.defer(_event("end-1"), using="default")
    group.defer(_event("end-2"), using="default")
    before = failures()
    with caplog.at_level(logging.CRITICAL):
        writer.stop(within=0.0)
    assert group.deferred_left() == 0
    assert failures() == before + 2
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(lost) == 2
    assert all("AUDIT EVENT NOT WRITTEN (TimeoutError" in line for line in lost)
    assert group.defer(_event("late"), using="default") is False  # stopped: the caller writes inline


# --- the writer, in a process of its own --------------------------------------------------------------------


def _appender(env: dict[str, str], tmp_path: Path, *args: str) -> dict:
    with (tmp_path / "appender.err").open("w") as err:
        done = subprocess.run(
            [sys.executable, "-m", "audit.tests.deferred_appender", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, (tmp_path / "appender.err").read_text()[-4000:]
    return json.loads(done.stdout)


def _prepared(database_url: str, tmp_path: Path, **settings: str) -> tuple[dict[str, str], int]:
    env = {**_env(database_url, tmp_path / "var"), **settings}
    migrated = _manage(env, "migrate", "--noinput", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr
    return env, verified(env) + 1  # migrate's own events and that verification's event


WRITERS = 32
EACH = 4


def _downloads(database_url: str, tmp_path: Path, mode: str) -> None:
    env, before = _prepared(database_url, tmp_path)
    out = _appender(env, tmp_path, "downloads", mode, str(WRITERS), str(EACH))
    events = 2 * WRITERS * EACH
    # Every start and every end landed exactly once, and the chain verifies gap-free.
    assert (out["rows"], out["distinct"]) == (events, events), out
    assert verified(env) == before + events
    assert out["inline"] == 0, out  # the queue never filled: no end waited for its own transaction
    assert out["failures"] == 0
    # Ends shared transactions with starts (or each other): fewer transactions than events.
    assert out["grouped"] == events, out
    assert out["transactions"] < events, out


@pytest.mark.parametrize("mode", ["threads", "gevent"])
def test_deferred_ends_land_once_merged_on_sqlite(tmp_path, mode):
    _downloads(f"sqlite:///{tmp_path / 'deferred.sqlite3'}", tmp_path, mode)


@pytest.mark.parametrize("mode", ["threads", "gevent"])
def test_deferred_ends_land_once_merged_on_postgresql(postgres_database, tmp_path, mode):
    _downloads(postgres_database, tmp_path, mode)


def test_a_full_queue_writes_inline_and_drops_nothing(tmp_path):
    # Three may wait, and the writer never comes in time: every fourth end finds the queue full and is written
    # inline, as the leader of a batch that takes the three queued before it.
    env, before = _prepared(
        f"sqlite:///{tmp_path / 'full.sqlite3'}",
        tmp_path,
        AUDIT_DEFERRED_MAX_QUEUED="3",
        AUDIT_DEFERRED_INTERVAL="3600",
    )
    out = _appender(env, tmp_path, "ends", "threads", "1", "10")
    assert out["inline"] == 2, out  # the 4th and the 8th
    assert (out["rows"], out["distinct"]) == (10, 10), out
    assert (out["transactions"], out["grouped"]) == (3, 10), out  # 4 + 4, then the 2 left at the stop
    assert verified(env) == before + 10


def test_a_refused_deferred_event_is_retried_then_lost_and_costs_no_other(tmp_path):
    env, before = _prepared(f"sqlite:///{tmp_path / 'refused.sqlite3'}", tmp_path)
    out = _appender(env, tmp_path, "refused", "threads", "1", "1")
    assert out["targets"] == ["kept", "leader"], out
    assert out["failures"] == 1, out
    log = (tmp_path / "appender.err").read_text()
    (lost,) = [line for line in log.splitlines() if "AUDIT EVENT NOT WRITTEN" in line]
    assert '"target_id": "refused"' in lost
    assert verified(env) == before + 2


# --- a live server: ranges on a kept-alive connection, then a graceful stop ------------------------------

PASSWORD = "deferred-pass-1"
RANGES = 20


def _call(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None, **headers: str
):
    conn.request(method, path, body=body, headers=headers)
    with conn.getresponse() as reply:
        return reply.status, reply.read()


@pytest.mark.parametrize("mode", ["event", "gthread"])
def test_a_graceful_stop_writes_the_queued_ends(tmp_path, mode):
    # The writer never flushes on its own here (an hour's interval): every end is written either by the next
    # start's transaction or by the worker's exit. One worker, so that /metrics is the whole server's.
    server, env = serve(
        tmp_path,
        "deferred",
        password=PASSWORD,
        key_id="deferred-1",
        mode=mode,
        workers=1,
        AUDIT_DEFERRED_INTERVAL="3600",
        AUDIT_SIGNING_KEY=base64.b64encode(os.urandom(32)).decode(),  # audit_verify's checkpoint key
    )
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        status, body = _call(
            conn,
            "POST",
            "/api/token/",
            json.dumps({"username": "admin", "password": PASSWORD}).encode(),
            **{"Content-Type": "application/json"},
        )
        assert status == 200, body
        bearer = f"Bearer {json.loads(body)['access']}"
        data = os.urandom(4096)
        status, body = _call(
            conn,
            "POST",
            "/secure/files/?filename=d.bin",
            data,
            Authorization=bearer,
            **{"Content-Type": "application/octet-stream"},
        )
        assert status == 201, body
        blob_id = json.loads(body)["id"]
        before = _batches(conn)
        for n in range(RANGES):
            status, body = _call(
                conn, "GET", f"/secure/files/{blob_id}/stream", Authorization=bearer, Range=f"bytes={n}-{n}"
            )
            assert (status, body) == (206, data[n : n + 1])
        transactions = _batches(conn) - before
        conn.close()
    finally:
        server.stop()  # SIGTERM: gunicorn's graceful shutdown
    assert server.proc.returncode == 0, server.log_tail()
    rows = _rows(env, blob_id)
    assert rows.count("blob.download.start") == RANGES
    assert rows.count("blob.download.end") == RANGES  # the last one was still queued at the SIGTERM
    # Each end rode in the next start's transaction: one per range, not two (the scrapes add none: /metrics
    # records no event). The last end was written by the exit, after this count.
    assert transactions == RANGES, (transactions, server.log_tail())
    done = _manage(env, "audit_verify", "--full")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: "), done.stdout


def _batches(conn: http.client.HTTPConnection) -> float:
    """``audit_append_batch_events``'s count: the group commit's transactions in the (only) worker."""
    status, body = _call(conn, "GET", "/metrics")
    assert status == 200
    (line,) = [ln for ln in body.decode().splitlines() if ln.startswith("audit_append_batch_events_count")]
    return float(line.split()[-1])


def _rows(env: dict[str, str], blob_id: str) -> list[str]:
    db = Path(env["ERPHUB_VAR_DIR"]) / "db.sqlite3"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT action FROM audit_auditevent WHERE target_id = ? ORDER BY sequence", (blob_id,)
        ).fetchall()
    finally:
        conn.close()
    return [action for (action,) in rows]
