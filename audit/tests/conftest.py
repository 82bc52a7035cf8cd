"""Audit tests start from an empty log; ``clock`` and ``history`` stamp events in the past.

``migrate`` already wrote events into the test database (the roles sync changes group permissions, which
is audited). Inside each test's transaction the log is emptied as the owner would (guards dropped, rows
deleted, guards re-created — DDL is transactional on SQLite and PostgreSQL): the rollback at the end of
the test restores both the rows and the guards.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from django.utils import timezone

from audit import clock as audit_clock

from .factories import YEAR, record
from .wipe import wipe_audit_tables_as_owner


@pytest.fixture(autouse=True)
def _empty_audit_log(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("django_db")
    if marker is None or marker.kwargs.get("transaction"):
        return
    request.getfixturevalue("db")
    wipe_audit_tables_as_owner()


@pytest.fixture
def clock(monkeypatch):
    """Stamp events at a chosen time: ``clock.at(datetime)``."""

    class Clock:
        current = timezone.now()

        def at(self, when: datetime) -> None:
            self.current = when

    c = Clock()
    monkeypatch.setattr(audit_clock, "now", lambda: c.current)
    return c


@pytest.fixture
def history(clock):
    """Ten events a year apart, the oldest ten years ago, then three from today."""
    today = timezone.now()
    for years_ago in range(10, 0, -1):
        clock.at(today - years_ago * YEAR)
        record(1, action=f"old.{years_ago}")
    clock.at(today)
    record(3, action="recent")
    return today
