"""Test support: empty the audit tables as their owner (drop the guards, delete, re-create the guards).

For tests that commit (``transaction=True``, live_server): Django's flush between tests would otherwise be
refused by the triggers. Runs with the owner's rights in the test database only; the application's guard
is never weakened, and every statement it needs is the migration's own.
"""

from __future__ import annotations

from django.db import connection

from .triggers import GUARDED, statements


def wipe_audit_tables_as_owner() -> None:
    with connection.cursor() as cursor:
        for sql in statements(connection.vendor, reverse=True):
            cursor.execute(sql)
        for table in GUARDED:
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        for sql in statements(connection.vendor):
            cursor.execute(sql)
