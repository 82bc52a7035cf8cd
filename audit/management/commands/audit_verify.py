"""Recompute the audit chain from the last trusted checkpoint (or, with --full, from the oldest event), or
check an export file on its own (--export)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.exceptions import CheckpointError
from audit.export import audit_export_verify
from audit.recording import audit_record
from audit.verification import audit_chain_status
from core.actors import Actor


class Command(BaseCommand):
    help = "Verify the audit log's hash chain and signed checkpoints; exits non-zero at the first bad event."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--full", action="store_true", help="from the oldest event, not the last checkpoint"
        )
        parser.add_argument(
            "--export", metavar="FILE", help="check an audit_export file against FILE.manifest.json instead"
        )

    def handle(self, *args: Any, full: bool, export: str | None, **options: Any) -> None:
        if export:
            self._verify_export(Path(export))
            return
        try:
            status = audit_chain_status(full=full)
        except CheckpointError as exc:
            raise CommandError(exc.detail) from exc
        for problem in status.rejected:
            self.stderr.write(f"ignored checkpoint: {problem}")
        report = status.report
        start = f"checkpoint #{status.start.sequence}" if status.start else "the first event"
        audit_record(
            action="audit.verify",
            actor=Actor.cli(),
            outcome="success" if report.ok else "error",
            details={
                "full": full,
                "from": status.start.sequence if status.start else 1,
                "checked": report.checked,
                "first_bad_sequence": report.first_bad_sequence,
                "reason": report.reason,
                "rejected_checkpoints": len(status.rejected),
            },
        )
        if not report.ok:
            raise CommandError(
                f"audit chain BROKEN at sequence {report.first_bad_sequence}: {report.reason} "
                f"(checked {report.checked} events from {start})"
            )
        self.stdout.write(
            f"ok: {report.checked} events verified from {start}; last #{report.last_sequence} "
            f"{report.last_hash}; {status.checkpoints} signed checkpoints trusted"
        )

    def _verify_export(self, path: Path) -> None:
        """An export on its own (no database needed): signature, SHA-256, count and the chain inside it,
        read line by line."""
        manifest_path = path.with_name(path.name + ".manifest.json")
        try:
            manifest = json.loads(manifest_path.read_text())
            with path.open("rb") as handle:
                report = audit_export_verify(lines=handle, manifest=manifest)
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read the export or its manifest: {exc}") from exc
        except CheckpointError as exc:
            raise CommandError(exc.detail) from exc
        if not report.ok:
            where = f" at sequence {report.first_bad_sequence}" if report.first_bad_sequence else ""
            raise CommandError(f"export {path} does NOT verify{where}: {report.reason}")
        self.stdout.write(f"ok: {path}: {report.checked} events, signed manifest, chain intact")
