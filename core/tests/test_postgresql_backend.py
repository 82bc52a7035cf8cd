"""core.backends.postgresql: what its operations and cursors change in Django's PostgreSQL backend (the
PostgreSQL suite; skipped on SQLite)."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

pytestmark = [
    pytest.mark.django_db(transaction=True),  # outside a transaction, as a request's queries run
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL backend's own behaviour"),
]


def _terminate(admin: psycopg.Connection, pid: int) -> None:
    """Ends backend ``pid`` from another session and waits until it is gone (pg_terminate_backend returns
    before the backend has exited)."""
    (ended,) = admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()
    assert ended
    deadline = time.monotonic() + 10
    while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
        assert time.monotonic() < deadline, f"backend {pid} still there after pg_terminate_backend"
        time.sleep(0.01)


def test_a_query_that_fails_on_a_dead_connection_keeps_its_own_error_in_the_query_log(migration_connection):
    # The query log (DEBUG, CaptureQueriesContext) composes the text of a query bound on the server after it
    # ran. Composed through a cursor of Django's, as Django's own operations do, it asked the dead
    # connection for a cursor, and "the connection is closed" replaced the error that said why.
    connection.close()
    connection.ensure_connection()  # a new connection counts as health-checked: the query goes to it
    try:
        _terminate(migration_connection, connection.connection.info.backend_pid)
        with (
            CaptureQueriesContext(connection) as captured,
            pytest.raises(OperationalError) as raised,
            connection.prepared_cursor() as cursor,
        ):
            cursor.execute("SELECT %s::integer", [7])
    finally:
        connection.close()  # the test's teardown connects afresh
    assert "the connection is closed" not in str(raised.value)
    assert "terminat" in str(raised.value) or "closed the connection unexpectedly" in str(raised.value)
    (logged,) = captured.captured_queries  # the failed query is still logged, with its parameters
    assert logged["sql"] == "SELECT 7::integer"


def test_the_query_log_shows_a_server_bound_query_with_its_parameters():
    with CaptureQueriesContext(connection) as captured, connection.prepared_cursor() as cursor:
        cursor.execute("SELECT %s::text, %s::integer", ["it's", 3])
        assert cursor.fetchone() == ("it's", 3)
    assert [query["sql"] for query in captured.captured_queries] == ["SELECT 'it''s'::text, 3::integer"]
