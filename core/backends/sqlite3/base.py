"""SQLite, with one writer per process at a time, handed over without blocking the process.

SQLite has one write lock per database file. Between processes, its busy handler queues writers (WAL,
``BEGIN IMMEDIATE``, ``timeout``: architecture.md §8). Inside one process of the event worker
(erphub/event_worker.py) that handler is a deadlock: greenlet A holds the write lock in a transaction and
yields (a KMS call, a cache call); greenlet B's write waits in SQLite's C busy handler, which sleeps the whole
process, so A never runs again to commit — until B's timeout expires with "database is locked". So writers of
one process first queue on a lock of its own (a gevent lock under the event worker, a thread lock under
gthread), held from ``BEGIN IMMEDIATE`` to ``COMMIT``/``ROLLBACK``, or around one autocommit write. SQLite's
busy handler then only ever waits for another process, which runs on its own.

Each process also keeps one idle connection to the database file open (``_keep_open``). Connections here
live one request (``CONN_MAX_AGE=0`` under the event worker, architecture.md §12), and in WAL mode the last
connection of the machine to close checkpoints the whole WAL into the database and deletes it, with fsyncs,
holding the exclusive lock: every request that closed the last connection paid it, and other processes'
readers and writers waited in SQLite's busy handler, which sleeps the whole process (issue 14: 1-byte range
requests at 8 clients had a p95 over a second). With one connection always open the WAL is checkpointed by
SQLite's auto-checkpoint (every 1,000 pages) instead, as with persistent connections.

Closing a connection gives it to a per-process pool of idle connections to the same file, as PostgreSQL's pool
does (``OPTIONS["pool_max_size"]``, from ``DATABASE_POOL_MAX_SIZE``; architecture.md §12): opening one costs
about 1.4 ms a request (Django registers some 30 SQL functions and runs its PRAGMAs), taking an idle one
microseconds. A connection goes back clean: rolled back, in autocommit, foreign keys enforced, and without the
writer turn (released after the rollback); one closed inside ``atomic()`` is really closed, since Django keeps
using that object until the block ends. At most ``pool_max_size`` idle connections per database file; beyond
that, or if cleaning fails, the connection is closed. Never pooled: in-memory databases and ``file:`` URIs (no
file to check), and a connection whose file was replaced since it was opened (another inode: a test runner
recreated it). A forked child never uses, nor closes, a connection its parent opened: closing any descriptor
of the file drops every POSIX lock the process holds on it (SQLite's documented fork hazard, "How To Corrupt
An SQLite Database File" §2.2, §2.6), so those stay referenced, unused.

django-prometheus's wrapper of the same backend underneath: its query metrics stay (its connection count
counts connections opened, not those taken from the pool).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.sqlite3.base import SQLiteCursorWrapper
from django.db.utils import OperationalError
from django_prometheus.db.backends.sqlite3 import base

from core.backends import counting_cursor_class

# Statements that take SQLite's write lock when run outside a transaction.
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "VACUUM")

_lock: threading.RLock | None = None
_lock_guard = threading.Lock()


def _writer_lock() -> threading.RLock:
    # Created on first use, in the worker: after gevent has patched threading, so that it is a gevent lock.
    global _lock
    with _lock_guard:
        if _lock is None:
            _lock = threading.RLock()
        return _lock


def _file_id(path: str) -> tuple[int, int] | None:
    """The file a path names now (device, inode), or None if there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino)


# Per (pid, database file): this process's idle connection and the file it has open. Keyed by pid so that a
# forked worker opens its own and the parent's stays referenced: dropping it would close it (fork hazard).
_kept_open: dict[tuple[int, str], tuple[tuple[int, int] | None, sqlite3.Connection]] = {}


def _keep_open(name: str) -> None:
    if not name or name == ":memory:" or "mode=memory" in name:
        return
    with _lock_guard:
        key = (os.getpid(), name)
        file_id = _file_id(name)
        held = _kept_open.get(key)
        if held is not None and held[0] == file_id:
            return
        if held is not None:
            held[1].close()  # the file was replaced: this process's own connection to the old one
        keeper = sqlite3.connect(name, check_same_thread=False)
        # A read maps the WAL index: from here on this connection counts as open for the WAL's sake.
        keeper.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        _kept_open[key] = (_file_id(name), keeper)


@dataclass(frozen=True, slots=True)
class _Opened:
    """A raw connection, the process that opened it, and the file (device, inode) it opened."""

    connection: sqlite3.Connection
    pid: int
    file_id: tuple[int, int] | None


# Idle connections per (pid, connection parameters), most recently used last. Keyed by pid: a forked child
# never sees its parent's, which stay referenced here and so are never closed by it. The guard is held for
# list operations only (no I/O), so a plain lock is safe under gevent as well as with threads.
_idle: dict[tuple[int, str], list[_Opened]] = {}
_idle_guard = threading.Lock()
# Connections a forked child inherited and was asked to close: kept, never closed (see the module docstring).
_inherited: list[sqlite3.Connection] = []


def _take_idle(key: str, path: str) -> _Opened | None:
    pid = os.getpid()
    while True:
        with _idle_guard:
            idle = _idle.get((pid, key))
            if not idle:
                return None
            opened = idle.pop()
        if _file_id(path) == opened.file_id:
            return opened
        # The path names another file now: this idle connection reads the old one. It is this process's own.
        with contextlib.suppress(sqlite3.Error):
            opened.connection.close()


# Longer texts (a bulk insert's many rows) are converted each time: kept, they would push the hot ones out.
_QMARK_MAX_LENGTH = 4096


@functools.lru_cache(maxsize=512)
def _qmark(query: str) -> str:
    return SQLiteCursorWrapper.convert_query(None, query)  # type: ignore[attr-defined]  # self: unused


class CursorWrapper(SQLiteCursorWrapper):
    """Django's cursor, remembering its conversion of a query's ``%s`` placeholders to sqlite3's ``?``: a
    regular expression over the whole text, ~20 µs for the blob lookup with its permission answer on every
    request (issue 14). The queries a request runs are few and their text is the same every time (those of
    ``core.db.CompiledQuery`` the very same string); at most 512 of up to 4 KiB are kept."""

    def convert_query(self, query: str, *, param_names: list[str] | None = None) -> str:
        if param_names is None and len(query) <= _QMARK_MAX_LENGTH:
            return _qmark(query)
        return super().convert_query(query, param_names=param_names)  # type: ignore[misc]


class DatabaseFeatures(base.DatabaseFeatures):
    """The same features as SQLite's."""


class DatabaseWrapper(base.DatabaseWrapper):
    CURSOR_CLASS = CursorWrapper

    def create_cursor(self, name: str | None = None) -> Any:
        factory = counting_cursor_class(self.CURSOR_CLASS, self.alias, self.vendor)
        return self.connection.cursor(factory=factory)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holds_writer = False
        self._pool_max_size = 0
        self._pool_key = ""
        self._opened: _Opened | None = None
        self.execute_wrappers.append(self._serialize_autocommit_write)

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        # Ours, not sqlite3.connect()'s.
        size = params.pop("pool_max_size", 0)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImproperlyConfigured(
                f"settings.DATABASES[{self.alias!r}]['OPTIONS']['pool_max_size'] is {size!r}: use an "
                "integer, 0 (no pool) or more."
            )
        name = str(params["database"])
        self._pool_max_size = 0 if self.is_in_memory_db() or name.startswith("file:") else size
        # Only a connection opened with the same parameters and init commands is lent again.
        self._pool_key = repr((sorted(params.items()), self.init_commands))
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        path = str(conn_params["database"])
        if self._pool_max_size:
            opened = _take_idle(self._pool_key, path)
            if opened is not None:
                self._opened = opened
                return opened.connection
        self._opened = None
        connection = super().get_new_connection(conn_params)
        if not self.is_in_memory_db():
            _keep_open(path)
        # The file opened, to tell later whether the path still names it (connect() created it if missing).
        file_id = _file_id(path) if self._pool_max_size else None
        self._opened = _Opened(connection, os.getpid(), file_id)
        return connection

    @contextlib.contextmanager
    def serialized_writes(self) -> Iterator[None]:
        """Hold this process's writer turn (re-entrant in the same thread or greenlet)."""
        self._acquire_writer()
        try:
            yield
        finally:
            _writer_lock().release()

    def _acquire_writer(self) -> None:
        timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        if not _writer_lock().acquire(timeout=timeout):
            raise OperationalError("database is locked (no writer turn within the busy timeout)")

    def _release_writer(self) -> None:
        if self._holds_writer:
            self._holds_writer = False
            _writer_lock().release()

    def _start_transaction_under_autocommit(self) -> None:
        self._acquire_writer()
        self._holds_writer = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._release_writer()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._release_writer()

    def _close(self) -> None:
        try:
            opened, self._opened = self._opened, None
            if opened is not None and opened.pid != os.getpid():
                _inherited.append(opened.connection)  # a forked child's: never closed (fork hazard)
            elif opened is None or not self._give_back(opened):
                super()._close()
        finally:
            # After the rollback above: the next writer must not find SQLite's write lock still taken.
            self._release_writer()

    def _give_back(self, opened: _Opened) -> bool:
        """Clean this connection and put it among the idle ones; False if it must be closed instead."""
        # Inside atomic() Django keeps this object as its connection until the block ends (a query there
        # must fail, not run on a connection lent to someone else meanwhile).
        if not self._pool_max_size or opened.file_id is None or self.in_atomic_block:
            return False
        connection = opened.connection
        try:
            if connection.in_transaction:
                connection.rollback()
            connection.isolation_level = None  # autocommit, as Django's connect() expects
            # disable_constraint_checking() may have left it off. Set only then: setting a flag pragma, even
            # to the value it has, expires every statement the connection has prepared (SQLite's pragma.c
            # emits OP_Expire), so each of the next request's queries was compiled anew: 80-250 µs for the
            # blob lookup, several per request (issue 14). Reading it expires nothing.
            if connection.execute("PRAGMA foreign_keys").fetchone() != (1,):
                connection.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error:
            return False
        with _idle_guard:
            idle = _idle.setdefault((opened.pid, self._pool_key), [])
            if len(idle) >= self._pool_max_size:
                return False
            idle.append(opened)
        return True

    def _serialize_autocommit_write(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
    ) -> Any:
        if self._holds_writer or not sql.lstrip()[:7].upper().startswith(_WRITES):
            return execute(sql, params, many, context)
        with self.serialized_writes():
            return execute(sql, params, many, context)
