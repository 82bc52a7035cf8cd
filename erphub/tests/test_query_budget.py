"""Query budgets of the token endpoints (issue 14; the file API's are in blobs/tests/test_query_budget.py):
the count of SQL statements a warm request runs, failing if it grows. Counted inside the test's transaction
(an audit append's own transaction shows as SAVEPOINT/RELEASE)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from blobs.tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "pw-123456!"


def _sql(call) -> tuple[object, list[str]]:  # type: ignore[no-untyped-def]
    with CaptureQueriesContext(connection) as ctx:
        response = call()
    return response, [q["sql"] for q in ctx.captured_queries]


def _appends(queries: list[str]) -> int:
    return sum(1 for sql in queries if re.match(r'INSERT INTO "audit_auditevent"', sql))


def _budget(queries: list[str], budget: int) -> None:
    # Counted on SQLite; PostgreSQL adds one statement per append, its advisory lock.
    if connection.vendor == "postgresql":
        budget += _appends(queries)
    listing = "\n".join(f"  {sql[:160]}" for sql in queries)
    assert len(queries) <= budget, f"{len(queries)} queries, budget {budget}:\n{listing}"


def _obtain() -> object:
    return Client().post(
        reverse("token-obtain"), {"username": "carol", "password": PASSWORD}, content_type="application/json"
    )


def test_token_obtain():
    user = make_user("carol", perms=())
    _obtain()  # warm: the first login of a process loads more than the next ones
    user.refresh_from_db()
    before = user.last_login
    response, queries = _sql(_obtain)
    assert response.status_code == 200  # type: ignore[attr-defined]
    user.refresh_from_db()
    assert before is not None
    assert user.last_login is not None
    assert user.last_login > before  # still recorded, by one UPDATE
    assert _appends(queries) == 1  # token.obtain
    # The user (read once: authentication; the audit actor is that user), the outstanding refresh token,
    # last_login (one UPDATE: no save, so no django-auditlog read of the row), the audit append (its head
    # read and insert).
    _budget(queries, 5)


def test_token_refresh():
    make_user("carol", perms=())
    first = _obtain().json()["refresh"]  # type: ignore[attr-defined]
    second = Client().post(reverse("token-refresh"), {"refresh": first}, content_type="application/json")
    refresh = second.json()["refresh"]

    def call() -> object:
        return Client().post(reverse("token-refresh"), {"refresh": refresh}, content_type="application/json")

    response, queries = _sql(call)
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert _appends(queries) == 1  # token.refresh
    # The old token's blacklist check, the user (read once), the old token claimed (its outstanding row and
    # blacklist insert in a savepoint), the new one recorded with one INSERT, the audit append.
    _budget(queries, 9)
