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

django-prometheus's wrapper of the same backend underneath: its query metrics stay.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

from django.db.utils import OperationalError
from django_prometheus.db.backends.sqlite3 import base

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


# Per database file: (pid, connection) of this process's idle connection (pid: a forked worker opens its own).
_kept_open: dict[str, tuple[int, sqlite3.Connection]] = {}


def _keep_open(name: str) -> None:
    if not name or name == ":memory:" or "mode=memory" in name:
        return
    with _lock_guard:
        held = _kept_open.get(name)
        if held is not None and held[0] == os.getpid():
            return
        keeper = sqlite3.connect(name, check_same_thread=False)
        # A read maps the WAL index: from here on this connection counts as open for the WAL's sake.
        keeper.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        _kept_open[name] = (os.getpid(), keeper)


class DatabaseFeatures(base.DatabaseFeatures):
    """The same features as SQLite's."""


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holds_writer = False
        self.execute_wrappers.append(self._serialize_autocommit_write)

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        if not self.is_in_memory_db():
            _keep_open(str(conn_params.get("database") or self.settings_dict["NAME"]))
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
            super()._close()
        finally:
            self._release_writer()

    def _serialize_autocommit_write(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
    ) -> Any:
        if self._holds_writer or not sql.lstrip()[:7].upper().startswith(_WRITES):
            return execute(sql, params, many, context)
        with self.serialized_writes():
            return execute(sql, params, many, context)
