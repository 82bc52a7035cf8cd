"""Audit test data, written through the real service."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

from django.core.management import call_command

from audit.models import AuditEvent
from audit.recording import audit_record
from core.actors import Actor

YEAR = timedelta(days=365)


def record(n: int = 1, *, action: str = "test.event", **kwargs) -> list[AuditEvent]:
    return [
        audit_record(
            action=action, actor=Actor.system("test"), target_type="thing", target_id=str(i), **kwargs
        )
        for i in range(n)
    ]


def chain_rows() -> list[dict]:
    return [event.chain_fields() for event in AuditEvent.objects.order_by("sequence")]


def run(*args: str) -> str:
    """The stdout of ``call_command(*args)`` (stderr is discarded)."""
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()
