"""Test support: empty the audit tables as their owner (drop the guards, delete, re-create the guards).

Used by the fixtures in ``conftest.py`` (this package's, before each test that runs in a transaction, and
the project's, after each test that commits: ``transaction=True``, live_server — Django's flush between
tests would otherwise be refused by the triggers). It runs with the owner's rights in the test database
only, and lives here, in the tests, so that no application code can call it; every statement it needs is
the migration's own.
"""

from __future__ import annotations

from django.db import connection

from audit.triggers import TABLES, statements


def wipe_audit_tables_as_owner() -> None:
    with connection.cursor() as cursor:
        for sql in statements(connection.vendor, reverse=True):
            cursor.execute(sql)
        for table in TABLES:
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        for sql in statements(connection.vendor):
            cursor.execute(sql)
