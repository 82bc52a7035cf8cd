"""core.backends.sqlite3 under gevent: a greenlet that yields inside a write transaction does not stall the
other greenlets' writes into "database is locked" (the stock backend does: its busy handler sleeps the
whole process). Run in a subprocess, since monkey-patching cannot be undone in the test process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json
    import sys

    import django
    import gevent
    from django.conf import settings

    engine, path, pool = sys.argv[1:4]
    options = {"timeout": 2, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    if pool != "-":
        options["pool_max_size"] = int(pool)  # closed connections are lent to the next greenlet
    settings.configure(DATABASES={"default": {"ENGINE": engine, "NAME": path, "OPTIONS": options}})
    django.setup()
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE t (v INTEGER)")
    connection.close()


    def holder():
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO t VALUES (1)")
            gevent.sleep(0.5)  # a KMS or cache call: this greenlet yields, holding SQLite's write lock
        connection.close()


    def autocommit_writer():
        gevent.sleep(0.1)
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (2)")
        connection.close()


    def transaction_writer():
        gevent.sleep(0.1)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (3)")
        connection.close()


    jobs = [gevent.spawn(f) for f in (holder, autocommit_writer, transaction_writer)]
    gevent.joinall(jobs)
    with connection.cursor() as cursor:
        cursor.execute("SELECT v FROM t ORDER BY v")
        rows = [row[0] for row in cursor.fetchall()]
    print(json.dumps({"errors": [str(job.exception) for job in jobs if job.exception], "rows": rows}))
    """
)


def _run(engine: str, tmp_path, pool: str = "-") -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, engine, str(tmp_path / "db.sqlite3"), pool],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("pool", ["0", "2"])
def test_writers_wait_their_turn_instead_of_failing(tmp_path, pool):
    assert _run("core.backends.sqlite3", tmp_path, pool) == {"errors": [], "rows": [1, 2, 3]}


@pytest.mark.parametrize("engine", ["django.db.backends.sqlite3"])
def test_the_stock_backend_fails_the_same_writers(tmp_path, engine):
    # What the backend exists for: the same script, SQLite's busy handler alone.
    result = _run(engine, tmp_path)
    assert any("database is locked" in error for error in result["errors"])


KEEP_OPEN = textwrap.dedent(
    """
    import json
    import os
    import sys

    import django
    from django.conf import settings

    engine, path = sys.argv[1:3]
    options = {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    settings.configure(DATABASES={"default": {"ENGINE": engine, "NAME": path, "OPTIONS": options}})
    django.setup()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE t (v INTEGER)")
        cursor.execute("INSERT INTO t VALUES (1)")
    connection.close()  # a request's connection, closed at its end
    print(json.dumps({"wal_after_close": os.path.exists(path + "-wal")}))
    """
)


@pytest.mark.parametrize(
    ("engine", "kept"), [("core.backends.sqlite3", True), ("django.db.backends.sqlite3", False)]
)
def test_closing_a_requests_connection_does_not_checkpoint_the_wal(tmp_path, engine, kept):
    # The stock backend's close is the last one: SQLite checkpoints and deletes the WAL (fsyncs, exclusive
    # lock) on every request; ours keeps one idle connection per process, so the WAL stays.
    done = subprocess.run(
        [sys.executable, "-c", KEEP_OPEN, engine, str(tmp_path / "db.sqlite3")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"wal_after_close": kept}


@pytest.mark.parametrize(
    ("query", "param_names"),
    [
        ("SELECT %s, '%%', %s", None),  # format style: "?" for each %s, a literal % for %%
        ("SELECT %(a)s, %(b)s", ["a", "b"]),  # pyformat style: named, never remembered
    ],
)
def test_placeholders_are_converted_as_djangos_cursor_does(query, param_names):
    import sqlite3

    from django.db.backends.sqlite3.base import SQLiteCursorWrapper

    from core.backends.sqlite3.base import CursorWrapper

    raw = sqlite3.connect(":memory:")
    expected = raw.cursor(SQLiteCursorWrapper).convert_query(query, param_names=param_names)
    ours = raw.cursor(CursorWrapper)
    assert ours.convert_query(query, param_names=param_names) == expected
    assert ours.convert_query(query, param_names=param_names) == expected  # remembered
    raw.close()


@pytest.mark.django_db
def test_the_backends_cursors_remember_their_conversions():
    from django.db import connection

    from core.backends.sqlite3.base import CursorWrapper, _qmark

    if connection.vendor != "sqlite":
        pytest.skip("core.backends.sqlite3")
    with connection.cursor() as cursor:
        assert isinstance(cursor.cursor, CursorWrapper)
        query = "SELECT %s + 40 -- remembered"
        cursor.execute(query, [2])
        hits = _qmark.cache_info().hits
        cursor.execute(query, [2])
        assert cursor.fetchone() == (42,)
    assert _qmark.cache_info().hits == hits + 1


def test_the_converted_queries_remembered_are_bounded():
    import sqlite3

    from core.backends.sqlite3.base import CursorWrapper, _qmark

    raw = sqlite3.connect(":memory:")
    cursor = raw.cursor(CursorWrapper)
    for n in range(600):
        assert cursor.convert_query(f"SELECT %s + {n}") == f"SELECT ? + {n}"
    assert _qmark.cache_info().currsize == _qmark.cache_info().maxsize == 512
    before = _qmark.cache_info()
    long = "SELECT %s" + ", %s" * 2000  # a bulk insert's length: converted, never kept
    assert cursor.convert_query(long) == "SELECT ?" + ", ?" * 2000
    assert _qmark.cache_info() == before
    raw.close()
