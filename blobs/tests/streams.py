"""Helpers for tests that consume streaming responses from Django's test client."""

from __future__ import annotations

from django.core.signals import request_finished
from django.db import close_old_connections


def close(response) -> None:
    """Close like the WSGI server (when a client goes away), as Django's test client closes: without
    ``close_old_connections``, which would end the test's transaction. The client's own wrapper around the
    body goes first: once started, it closes the response itself and then reconnects that receiver."""
    response._iterator.close()
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)
