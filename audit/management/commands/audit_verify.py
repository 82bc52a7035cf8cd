"""Verify the audit chain: what is new since the signed verification cursor (or the last checkpoint) plus
the rolling check's next window of older history, so the whole chain is re-verified every
AUDIT["VERIFY_ROLLING_RUNS"] runs (--full: everything now); or check an export file on its own (--export)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.exceptions import CheckpointError
from audit.export import audit_export_verify
from audit.verification import audit_verify
from core.actors import Actor
from core.terminal import OperatorCommand


class Command(OperatorCommand):
    help = "Verify the audit log's hash chain and signed checkpoints; exits non-zero at the first bad event."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--full", action="store_true", help="the whole chain now, from the oldest event")
        parser.add_argument(
            "--export", metavar="FILE", help="check an audit_export file against FILE.manifest.json instead"
        )

    def handle(self, *args: Any, full: bool, export: str | None, **options: Any) -> None:
        if export:
            self._verify_export(Path(export))
            return
        try:
            status = audit_verify(full=full, actor=Actor.cli())
        except CheckpointError as exc:
            raise CommandError(exc.detail) from exc
        for problem in status.rejected:
            self.stderr.write(f"ignored checkpoint: {problem}")
        report = status.report
        start = f"{status.start.kind} #{status.start.sequence}" if status.start else "the first event"
        if not status.ok:
            failure = status.failure
            where = (
                f"checked {report.checked} events from {start}"
                if failure is report
                else "rolling check of #{}-#{}".format(*(status.window_range or (0, 0)))
            )
            raise CommandError(
                f"audit chain BROKEN at sequence {failure.first_bad_sequence}: {failure.reason} ({where})"
            )
        self.stdout.write(
            f"ok: {report.checked} events verified from {start}; last #{report.last_sequence} "
            f"{report.last_hash}; {status.checkpoints} signed checkpoints trusted"
        )
        if status.window_range is not None:
            self.stdout.write(
                f"rolling check: #{status.window_range[0]}-#{status.window_range[1]} re-verified"
            )
        cursor = status.cursor
        if cursor is not None and cursor.full_finished:
            self.stdout.write(
                f"last full verification: every event checked between {cursor.full_started} "
                f"and {cursor.full_finished}"
            )

    def _verify_export(self, path: Path) -> None:
        """An export on its own (no database needed): signature, SHA-256, count and the chain inside it,
        read line by line."""
        manifest_path = path.with_name(path.name + ".manifest.json")
        # Each file by name: "no such manifest" for a mistyped export path sends the operator looking for
        # the wrong file.
        for needed in (path, manifest_path):
            if not needed.is_file():
                raise CommandError(f"Cannot read {needed}: no such file.")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read the manifest {manifest_path}: {exc}") from None
        if not isinstance(manifest, dict):
            raise CommandError(f"{manifest_path} is not an audit_export manifest (a JSON object).")
        try:
            with path.open("rb") as handle:
                report = audit_export_verify(lines=handle, manifest=manifest)
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read the export {path}: {exc}") from None
        except CheckpointError as exc:
            raise CommandError(exc.detail) from exc
        if not report.ok:
            where = f" at sequence {report.first_bad_sequence}" if report.first_bad_sequence else ""
            raise CommandError(f"export {path} does NOT verify{where}: {report.reason}")
        self.stdout.write(f"ok: {path}: {report.checked} events, signed manifest, chain intact")
