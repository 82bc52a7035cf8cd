"""The retention purge: the only way audit events are ever deleted (architecture.md §8)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from audit.exceptions import CheckpointError, PurgeRefused
from audit.retention import audit_purge
from core.actors import Actor
from core.terminal import OperatorCommand

from ._dates import parse_when


class Command(OperatorCommand):
    help = (
        "Delete audit events older than --before (and than the retention period), except those under a "
        "legal hold, after writing a signed anchor checkpoint the chain resumes from."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--before", required=True, help="ISO 8601 date/time: events before it may go")
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args: Any, before: str, dry_run: bool, **options: Any) -> None:
        try:
            result = audit_purge(before=parse_when(before, "--before"), actor=Actor.cli(), dry_run=dry_run)
        except (PurgeRefused, CheckpointError) as exc:
            raise CommandError(exc.detail) from exc
        except DatabaseError as exc:
            # The trigger refused (not the table owner nor a member of the purge role, or a rule unmet).
            raise CommandError(f"The database refused the purge; nothing was deleted: {exc}") from exc
        if dry_run:
            self.stdout.write(f"would delete up to {result.deleted} events before {result.cutoff:%Y-%m-%d}")
            return
        anchor = f"anchor #{result.anchor.sequence} ({result.anchor.name})" if result.anchor else "no anchor"
        self.stdout.write(f"deleted {result.deleted}\theld {result.held}\t{anchor}")
