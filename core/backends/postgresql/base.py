"""PostgreSQL, with prepared statements for the queries every request runs (issue 14).

django-prometheus's wrapper of Django's backend underneath (its query metrics stay). Django binds every
query's parameters on the client (psycopg's ``ClientCursor``) and disables psycopg's prepared statements, so
PostgreSQL plans each query anew: the blob lookup with its permission check took ~0.3 ms of planning for
~0.05 ms of execution, on every request. ``prepared_cursor()`` is a cursor that binds on the server instead,
so psycopg prepares a statement once it has run ``OPTIONS["prepare_threshold"]`` times on a connection and
PostgreSQL reuses its plan (after five runs, a generic one when it costs no more). Only callers that ask for
it get one (``core.db.CompiledQuery``, the audit log's append): the ORM's queries, which vary, stay bound on
the client and unprepared, as Django ships them. Without ``prepare_threshold`` (``None``, Django's default;
``DATABASE_PREPARED_STATEMENTS=false``) the cursor binds on the server and prepares nothing.

Prepared statements live in a server connection: behind PgBouncer in transaction mode they need PgBouncer
1.22 or later with ``max_prepared_statements`` set (psycopg sends ``DEALLOCATE ALL``, which 1.22 learnt; and
closes one statement by the protocol's Close, which libpq 17 or later sends, as psycopg-binary's does;
docs/scaling-out.md). psycopg forgets every statement, with a ``DEALLOCATE ALL``, after a rollback on the
connection (a failed request, a failed append): the next runs prepare them again. PostgreSQL replans a
statement whose tables changed but refuses one whose result columns changed type ("cached plan must not change
result type", SQLSTATE 0A000): a migration that widens a column these queries select (``varchar(255)`` to
``varchar(512)``) while the previous release serves would fail them on every connection that prepared them,
for as long as it lives. Outside a transaction the cursor forgets its statements (``DEALLOCATE ALL``) and runs
the query once more; inside one the transaction is lost, and its rollback makes psycopg forget them
(``core.db.stale_prepared_statement``: the audit append then runs once more; a lookup in a caller's
transaction fails that request, once per connection). This relies on psycopg forgetting its statements when a
``DEALLOCATE ALL`` runs on the connection (psycopg 3.3; ``core/tests/test_db.py`` fails without it).
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql.base import DatabaseWrapper as DjangoWrapper
from django.db.backends.postgresql.base import ServerBindingCursor  # type: ignore[attr-defined]
from django.db.backends.postgresql.operations import DatabaseOperations as BaseOperations
from django.db.backends.postgresql.psycopg_any import register_tzloader  # type: ignore[import-untyped]
from django.utils.asyncio import async_unsafe
from django_prometheus.db.backends.postgresql import base
from psycopg import ClientCursor, adapters, errors
from psycopg.pq import Format, TransactionStatus

from core.backends import counting_cursor_class
from core.db import stale_prepared_statement

_TIMESTAMPTZ_OID = adapters.types["timestamptz"].oid


class PreparedCursor(ServerBindingCursor):
    """Django's server-binding cursor that recovers from a statement a migration made stale (above)."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        try:
            return super().execute(query, params, **kwargs)
        except errors.FeatureNotSupported as exc:
            in_transaction = self.connection.info.transaction_status != TransactionStatus.IDLE
            if in_transaction or not stale_prepared_statement(exc):
                raise  # in a transaction it is lost: its rollback makes psycopg forget every statement
            # PostgreSQL forgets this session's statements, and psycopg, which watches for this command, too.
            super().execute("DEALLOCATE ALL")
            return super().execute(query, params, **kwargs)


class DatabaseOperations(BaseOperations):
    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str | None:  # type: ignore[override]
        # psycopg keeps no client-side text of a query bound on the server: the query log (DEBUG,
        # CaptureQueriesContext) composes it on the client, as Django does with server_side_binding, but
        # without a cursor of Django's, so that logging a query that failed on a dead connection cannot
        # replace its error.
        if isinstance(cursor, ServerBindingCursor):
            try:
                return ClientCursor(cursor.connection).mogrify(sql, params)
            except Exception:  # a log line, never the query's outcome
                return None
        return super().last_executed_query(cursor, sql, params)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    def get_connection_params(self) -> dict[str, Any]:
        # Django's, its cursors counted by ours (core.backends.counting_cursor_class) rather than
        # django-prometheus's, which looks its series up again on every query: the same metrics.
        params: dict[str, Any] = DjangoWrapper.get_connection_params(self)
        params["cursor_factory"] = counting_cursor_class(params["cursor_factory"], self.alias, self.vendor)
        return params

    @async_unsafe
    def prepared_cursor(self) -> Any:
        """A cursor like ``cursor()`` (the same wrappers, errors and query log) whose parameters are bound on
        the server, so that its statements can be prepared."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            # Counted by django-prometheus as its own cursors are.
            cursor = counting_cursor_class(PreparedCursor, self.alias, self.vendor)(self.connection)
            # As Django's create_cursor: the cursor's time zone only if the connection's differs.
            tzloader = self.connection.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT)
            if self.timezone != tzloader.timezone:
                register_tzloader(self.timezone, cursor)
            return self._prepare_cursor(cursor)
