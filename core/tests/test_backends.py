"""core.backends.counting_cursor_class: every query of the configured backend (SQLite or PostgreSQL, whichever
suite runs) is counted in django-prometheus's metrics, as django-prometheus's own wrapper counts it."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from prometheus_client import REGISTRY

pytestmark = pytest.mark.django_db


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"alias": "default", "vendor": connection.vendor, **labels}) or 0.0


def _counts() -> tuple[float, float, float]:
    return (
        _value("django_db_execute_total"),
        _value("django_db_execute_many_total"),
        _value("django_db_query_duration_seconds_count"),
    )


def test_each_query_is_counted_and_timed():
    before = _counts()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.execute("SELECT %s", [2])
        assert cursor.fetchone() == (2,)
    assert _counts() == (before[0] + 2, before[1], before[2] + 2)


def test_executemany_counts_each_parameter_set():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE counted (n integer)")
        before = _counts()
        cursor.executemany("INSERT INTO counted (n) VALUES (%s)", [[1], [2], [3]])
        assert _counts() == (before[0] + 3, before[1] + 3, before[2] + 1)
        cursor.executemany("INSERT INTO counted (n) VALUES (%s)", ([n] for n in range(4)))  # a generator
        assert _counts() == (before[0] + 7, before[1] + 7, before[2] + 2)
        cursor.execute("SELECT count(*) FROM counted")
        assert cursor.fetchone() == (7,)
        cursor.execute("DROP TABLE counted")


def _fail() -> DatabaseError:
    # In a savepoint: on PostgreSQL the test's transaction stays usable after the error.
    with pytest.raises(DatabaseError) as raised, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    return raised.value


def test_a_failing_query_is_counted_by_its_error_type():
    # The driver's error type, under Django's wrapper (SQLite's and psycopg's names differ).
    name = type(_fail().__cause__).__name__
    before = _value("django_db_errors_total", type=name)
    assert before >= 1
    _fail()
    assert _value("django_db_errors_total", type=name) == before + 1


def _counted_failure(sql: str, params: list[list[int]] | None = None) -> tuple[tuple[float, ...], str]:
    """Runs ``sql`` (``executemany`` with ``params``), which must fail, and returns how the three counts moved
    across that one call (not the savepoint around it) and the driver's error type."""
    counts: list[tuple[float, float, float]] = []

    def run(cursor: Any) -> None:
        counts.append(_counts())
        try:
            cursor.execute(sql) if params is None else cursor.executemany(sql, params)
        finally:
            counts.append(_counts())

    with pytest.raises(DatabaseError) as raised, transaction.atomic(), connection.cursor() as cursor:
        run(cursor)
    before, after = counts
    return tuple(a - b for a, b in zip(after, before, strict=True)), type(raised.value.__cause__).__name__


def test_a_failing_query_is_counted_and_timed_too():
    _fail()  # the error type's series exists from here on
    name = type(_fail().__cause__).__name__
    errors = _value("django_db_errors_total", type=name)
    moved, failed_with = _counted_failure("SELECT * FROM no_such_table")
    assert (moved, failed_with) == ((1, 0, 1), name)
    assert _value("django_db_errors_total", type=name) == errors + 1


def test_a_failing_executemany_is_counted_timed_and_its_error_counted():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE unique_n (n integer PRIMARY KEY)")
    try:
        # The second parameter set breaks the key: both are counted, as a succeeding executemany's are.
        moved, name = _counted_failure("INSERT INTO unique_n (n) VALUES (%s)", [[1], [1]])
        assert moved == (2, 2, 1)
        assert _value("django_db_errors_total", type=name) >= 1
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE unique_n")


def test_the_cursors_count_with_one_class_per_database():
    with connection.cursor() as first, connection.cursor() as second:
        assert type(first.cursor) is type(second.cursor)
        assert type(first.cursor).__name__.startswith("Counting")
