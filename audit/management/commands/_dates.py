"""Date arguments for the audit commands: ISO 8601 dates or datetimes, UTC unless they say otherwise."""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.management.base import CommandError


def parse_when(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"{option} {value!r} is not an ISO 8601 date (2026-01-31 or 2026-01-31T12:00:00Z)."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
