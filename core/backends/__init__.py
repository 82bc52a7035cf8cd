"""Database backends: Django's, under django-prometheus's query metrics, with this project's changes."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from django_prometheus.db import errors_total, execute_many_total, execute_total, query_duration_seconds


@functools.cache
def counting_cursor_class(cursor_class: type, alias: str, vendor: str) -> type:
    """``cursor_class`` counting its queries in django-prometheus's metrics as django-prometheus's own wrapper
    does (``django_db_execute_total``, ``django_db_execute_many_total``, ``django_db_query_duration_seconds``,
    ``django_db_errors_total`` by exception type), built once per database.

    Its wrapper is built for every cursor (SQLite; ~7 µs, and garbage only the cyclic collector frees: several
    per request, issue 14) or for every connection, and looks up each labelled series again for every query
    (~6 µs of a ~60 µs query on SQLite); the series of one database are looked up here, once.
    """
    executed = execute_total.labels(alias, vendor)
    executed_many = execute_many_total.labels(alias, vendor)
    duration = query_duration_seconds.labels(alias, vendor)

    def timed(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return run(*args, **kwargs)
        except BaseException as exc:
            # As django-prometheus's ExceptionCounterByType: every exception, by its type's name.
            errors_total.labels(alias, vendor, type(exc).__name__).inc()
            raise
        finally:
            duration.observe(max(time.perf_counter() - started, 0))

    class CountingCursor(cursor_class):
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            executed.inc()
            return timed(super().execute, *args, **kwargs)

        def executemany(self, query: Any, param_list: Any, *args: Any, **kwargs: Any) -> Any:
            if not hasattr(param_list, "__len__"):  # a generator, which Django's cursors accept
                param_list = list(param_list)
            executed.inc(len(param_list))
            executed_many.inc(len(param_list))
            return timed(super().executemany, query, param_list, *args, **kwargs)

    CountingCursor.__name__ = CountingCursor.__qualname__ = f"Counting{cursor_class.__name__}"
    return CountingCursor
