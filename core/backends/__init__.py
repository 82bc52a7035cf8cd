"""Database backends: Django's, under django-prometheus's query metrics, with this project's changes."""

from __future__ import annotations

import functools

from django_prometheus.db.common import ExportingCursorWrapper


@functools.cache
def counting_cursor_class(cursor_class: type, alias: str, vendor: str) -> type:
    """django-prometheus's counting subclass of ``cursor_class``, built once per database. Its own backends
    build one for every cursor (SQLite; ~7 µs, and garbage only the cyclic collector frees: several per
    request, issue 14) or for every connection."""
    return ExportingCursorWrapper(cursor_class, alias, vendor)
