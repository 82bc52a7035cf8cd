"""core.backends.sqlite3's pool of idle connections (its module docstring; architecture.md §12): a closed
connection is lent again, clean (rolled back, autocommit, foreign keys on, no writer turn), at most
``pool_max_size`` of them per file; never an in-memory database's, a replaced file's, or a forked parent's.

Each test opens its own file database in ``tmp_path`` through its own Django connection (the suite's default
database is in memory, never pooled), so the pool entries of one test are never another's."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import OperationalError
from pytest_django import DjangoDbBlocker

from core.backends.sqlite3.base import DatabaseWrapper
from erphub.tests.test_settings import start


@pytest.fixture(autouse=True)
def _database_access(django_db_blocker: DjangoDbBlocker) -> Iterator[None]:
    # Our own connections to files in tmp_path, not the suite's test database.
    with django_db_blocker.unblock():
        yield


def _wrapper(name: str | Path, pool_max_size: int = 2, **options: object) -> DatabaseWrapper:
    settings_dict = {
        "ENGINE": "core.backends.sqlite3",
        "NAME": str(name),
        "OPTIONS": {"timeout": 2, "transaction_mode": "IMMEDIATE", "pool_max_size": pool_max_size, **options},
    }
    configured = connections.configure_settings({"default": settings_dict})["default"]
    return DatabaseWrapper(configured, alias="pooled")


def _raw(wrapper: DatabaseWrapper) -> sqlite3.Connection:
    wrapper.ensure_connection()
    assert wrapper.connection is not None
    return wrapper.connection


def _is_open(raw: sqlite3.Connection) -> bool:
    try:
        raw.execute("SELECT 1").fetchall()
    except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
        return False
    return True


@pytest.fixture
def path(tmp_path: Path) -> Path:
    database = tmp_path / "db.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as setup:
        setup.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        setup.execute("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id))")
        setup.commit()
    return database


def test_a_closed_connection_is_lent_again(path):
    wrapper = _wrapper(path)
    raw = _raw(wrapper)
    wrapper.close()
    assert wrapper.connection is None
    assert _is_open(raw)
    assert _raw(wrapper) is raw
    assert _raw(_wrapper(path)) is not raw  # lent to one Django connection at a time
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM parent")
        assert cursor.fetchone() == (0,)
    wrapper.close()


@pytest.mark.parametrize("begin", ["autocommit off", "BEGIN IMMEDIATE"])
def test_a_connection_closed_in_a_transaction_comes_back_rolled_back_in_autocommit(path, begin):
    wrapper = _wrapper(path)
    raw = _raw(wrapper)
    if begin == "autocommit off":
        wrapper.set_autocommit(False)
    with wrapper.cursor() as cursor:
        if begin == "BEGIN IMMEDIATE":
            cursor.execute("BEGIN IMMEDIATE")
        cursor.execute("INSERT INTO parent VALUES (1)")
    assert raw.in_transaction
    wrapper.close()
    assert (raw.in_transaction, raw.isolation_level) == (False, None)
    # Rolled back, and SQLite's write lock is free: another connection writes at once (no busy wait).
    with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as other:
        assert other.execute("SELECT count(*) FROM parent").fetchone() == (0,)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    assert _raw(wrapper) is raw
    assert wrapper.get_autocommit()
    wrapper.close()


def test_foreign_keys_are_enforced_again_on_a_lent_connection(path):
    wrapper = _wrapper(path)
    raw = _raw(wrapper)
    assert wrapper.disable_constraint_checking()
    wrapper.close()
    assert _raw(wrapper) is raw
    with wrapper.cursor() as cursor:
        cursor.execute("PRAGMA foreign_keys")
        assert cursor.fetchone() == (1,)
    with pytest.raises(DatabaseError, match="FOREIGN KEY"), wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO child VALUES (42)")
    wrapper.close()


def test_a_connection_with_foreign_keys_on_is_given_back_without_setting_them(path):
    # Setting the pragma expires every statement the connection prepared (SQLite's OP_Expire): the next
    # request would compile each of its queries anew. Reading it is free.
    wrapper = _wrapper(path)
    raw = _raw(wrapper)
    statements: list[str] = []
    raw.set_trace_callback(statements.append)
    try:
        wrapper.close()
        assert statements == ["PRAGMA foreign_keys"]
        assert _raw(wrapper) is raw
        assert wrapper.disable_constraint_checking()
        statements.clear()
        wrapper.close()
        assert statements == ["PRAGMA foreign_keys", "PRAGMA foreign_keys = ON"]
    finally:
        raw.set_trace_callback(None)
    assert _raw(wrapper) is raw
    assert raw.execute("PRAGMA foreign_keys").fetchone() == (1,)
    wrapper.close()


def test_at_most_pool_max_size_idle_connections_per_file(path):
    wrappers = [_wrapper(path, pool_max_size=2) for _ in range(4)]
    raws = [_raw(wrapper) for wrapper in wrappers]
    for wrapper in wrappers:
        wrapper.close()
    # The first two closed are kept; the others were really closed.
    assert [_is_open(raw) for raw in raws] == [True, True, False, False]
    lent = [_raw(wrapper) for wrapper in wrappers]
    assert {id(raw) for raw in lent} & {id(raw) for raw in raws} == {id(raws[0]), id(raws[1])}
    for wrapper in wrappers:
        wrapper.close()


def test_pool_size_0_closes_every_connection(path):
    wrapper = _wrapper(path, pool_max_size=0)
    raw = _raw(wrapper)
    wrapper.close()
    assert not _is_open(raw)
    assert _raw(wrapper) is not raw
    wrapper.close()


@pytest.mark.parametrize("name", [":memory:", "file:pooltest?mode=memory&cache=shared"])
def test_in_memory_databases_are_never_pooled(name):
    wrapper = _wrapper(name)
    raw = _raw(wrapper)
    # Django's close() leaves an in-memory database open on purpose; what it does when it does close:
    BaseDatabaseWrapper.close(wrapper)
    assert not _is_open(raw)
    assert _raw(wrapper) is not raw
    BaseDatabaseWrapper.close(wrapper)


def test_a_connection_to_a_replaced_file_is_closed_not_lent(path):
    wrapper = _wrapper(path)
    raw = _raw(wrapper)
    wrapper.close()
    # A test runner recreates the database: the path now names another file (another inode).
    path.unlink()
    with contextlib.closing(sqlite3.connect(path)) as setup:
        setup.execute("CREATE TABLE recreated (id INTEGER)")
        setup.commit()
    fresh = _raw(wrapper)
    assert fresh is not raw
    assert not _is_open(raw)
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert cursor.fetchall() == [("recreated",)]
    wrapper.close()


def test_a_forked_child_neither_uses_nor_closes_its_parents_connections(path):
    # Pools of 1, the parent's full: nothing would keep the inherited connection but the pid check.
    held = _wrapper(path, pool_max_size=1)
    held_raw = _raw(held)  # the parent's, open across the fork
    idle = _wrapper(path, pool_max_size=1)
    idle_raw = _raw(idle)
    idle.close()  # in the parent's pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and never return into pytest
        try:
            held.close()
            child = _wrapper(path, pool_max_size=1)
            child_raw = _raw(child)
            result = {
                "parents_idle_lent": child_raw is idle_raw or child_raw is held_raw,
                "held_open": _is_open(held_raw),
                "idle_open": _is_open(idle_raw),
            }
            child.close()
            result["child_reuses_its_own"] = _raw(child) is child_raw
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as report:
        result = json.loads(report.read())
    assert os.waitpid(pid, 0)[1] == 0
    assert result == {
        "parents_idle_lent": False,
        "held_open": True,  # closing it would drop the child's POSIX locks on the file (fork hazard)
        "idle_open": True,
        "child_reuses_its_own": True,
    }
    held.close()  # the parent's pool is full: really closed
    assert _raw(held) is idle_raw  # the parent's pool is intact
    held.close()


def _writer_turn_is_free(path: Path) -> bool:
    """Whether another thread gets this process's writer turn (the lock is re-entrant in this thread)."""
    other = _wrapper(path, timeout=0.2)
    outcome: list[bool] = []

    def take() -> None:
        try:
            with other.serialized_writes():
                outcome.append(True)
        except OperationalError:
            outcome.append(False)

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return outcome == [True]


@pytest.fixture
def registered(path: Path) -> Iterator[DatabaseWrapper]:
    """A wrapper that transaction.atomic(using="pooled") finds (this thread's connections)."""
    wrapper = _wrapper(path)
    connections["pooled"] = wrapper
    yield wrapper
    wrapper.close()
    del connections["pooled"]


def test_closing_inside_atomic_really_closes_and_releases_the_writer_turn(path, registered):
    raw = _raw(registered)
    with transaction.atomic(using="pooled"):
        with registered.cursor() as cursor:
            cursor.execute("INSERT INTO parent VALUES (1)")
        assert not _writer_turn_is_free(path)
        registered.close()
        # Django keeps this object as its connection until the block ends: it must not be lent meanwhile.
        assert registered.connection is raw
        assert not _is_open(raw)
        assert _writer_turn_is_free(path)
        with pytest.raises(DatabaseError, match="closed database"):
            registered.cursor()
    assert registered.connection is None
    assert _raw(registered) is not raw
    with registered.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM parent")
        assert cursor.fetchone() == (0,)


def test_a_connection_closed_after_atomic_is_pooled_without_the_writer_turn(path, registered):
    raw = _raw(registered)
    with transaction.atomic(using="pooled"), registered.cursor() as cursor:
        cursor.execute("INSERT INTO parent VALUES (1)")
    registered.close()
    assert _writer_turn_is_free(path)
    assert _raw(registered) is raw
    with registered.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM parent")
        assert cursor.fetchone() == (1,)


def test_a_transaction_left_open_is_rolled_back_and_its_writer_turn_released(path):
    # Defensive: closed outside atomic() while holding the writer turn (what atomic() takes at BEGIN).
    wrapper = _wrapper(path)
    raw = _raw(wrapper)
    wrapper._start_transaction_under_autocommit()
    with wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO parent VALUES (1)")
    wrapper.close()
    assert _writer_turn_is_free(path)
    assert not raw.in_transaction
    assert _raw(wrapper) is raw
    wrapper.close()


def test_threads_never_share_a_connection(path):
    in_use: set[int] = set()
    guard = threading.Lock()
    errors: list[str] = []

    def work() -> None:
        wrapper = _wrapper(path, pool_max_size=3)
        for _ in range(100):
            raw = _raw(wrapper)
            with guard:
                if id(raw) in in_use:
                    errors.append("lent twice")
                in_use.add(id(raw))
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM parent")
            with guard:
                in_use.discard(id(raw))
            wrapper.close()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_negative_pool_size_is_refused(path):
    with pytest.raises(ImproperlyConfigured, match="pool_max_size"):
        _wrapper(path, pool_max_size=-1).ensure_connection()


def test_the_setting_sizes_the_sqlite_pool(tmp_path):
    probe = (
        "import django; django.setup(); from django.conf import settings; "
        "print('SIZE', settings.DATABASES['default']['OPTIONS']['pool_max_size'])"
    )
    for configured, size in ((None, "8"), ("3", "3"), ("0", "0")):
        env = {} if configured is None else {"DATABASE_POOL_MAX_SIZE": configured}
        result = start(tmp_path, argv=("-c", probe), **env)
        assert result.returncode == 0, result.stderr
        assert f"SIZE {size}" in result.stdout.splitlines()
