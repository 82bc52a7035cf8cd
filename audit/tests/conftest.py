"""Audit tests start from an empty log.

``migrate`` already wrote events into the test database (the roles sync changes group permissions, which
is audited). Inside each test's transaction the log is emptied as the owner would (guards dropped, rows
deleted, guards re-created — DDL is transactional on SQLite and PostgreSQL): the rollback at the end of
the test restores both the rows and the guards.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _empty_audit_log(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("django_db")
    if marker is None or marker.kwargs.get("transaction"):
        return
    request.getfixturevalue("db")
    from audit.testing import wipe_audit_tables_as_owner

    wipe_audit_tables_as_owner()
