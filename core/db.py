"""Database connections around long transfers."""

from __future__ import annotations

from django.db import connections


def release_connections() -> None:
    """Close this thread's (under the event worker, this greenlet's) database connections, unless a
    transaction holds one: a download or upload may take hours, and a thousand slow clients must not hold a
    thousand connections (architecture.md §12). The next query reconnects, so the end of the transfer (its
    audit event, the upload's row) runs on a fresh connection rather than one a restart may have killed.
    Django leaves in-memory SQLite databases (the test suite's) open whatever is asked."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
