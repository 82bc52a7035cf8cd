"""Database connections around long transfers."""

from __future__ import annotations

from django.db import connections


def release_connections() -> None:
    """Close this thread's (under the event worker, this greenlet's) database connections, unless a
    transaction holds one: a download or upload may take hours, and a thousand slow clients must not hold a
    thousand connections (architecture.md §12). Closing gives the connection back to the worker's pool
    (PostgreSQL's, or core/backends/sqlite3's idle ones; ``DATABASE_POOL_MAX_SIZE``), so what a thousand slow
    clients leave open is bounded by the pool, not by them. The next query takes one from the pool (health-
    checked on PostgreSQL) or reconnects, so the end of the transfer (its audit event, the upload's row) does
    not run on one a restart may have killed. Django leaves in-memory SQLite databases (the test suite's) open
    whatever is asked."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
