"""Bench-only: switches off the download audit events (start and end) in this process, so that
bench/bench_audit.py can measure what they cost. Loaded by bench/settings_noaudit.py only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _skip(**kwargs: Any) -> None:
    return None


class DownloadsUnaudited:
    def __init__(self, get_response: Callable[..., Any]) -> None:
        # Middleware is built once the apps are ready: the stream module can be patched now.
        from blobs import streaming

        streaming.audit_record = _skip  # type: ignore[assignment]
        streaming.audit_record_after = _skip  # type: ignore[assignment]
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)
