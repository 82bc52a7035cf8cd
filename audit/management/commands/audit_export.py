"""Export audit events as JSON lines, with a signed manifest (range, count, first/last hash, SHA-256)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.exceptions import CheckpointError
from audit.export import audit_export
from core.actors import Actor
from core.terminal import OperatorCommand

from ._dates import parse_when


class Command(OperatorCommand):
    help = (
        "Write events with SINCE <= time < UNTIL as JSON lines to -o FILE (manifest in FILE.manifest.json) "
        "or to stdout (manifest on stderr)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="ISO 8601 date/time, inclusive (default: the oldest event)")
        parser.add_argument("--until", help="ISO 8601 date/time, exclusive (default: now)")
        parser.add_argument("-o", "--output", default="-", help="output file, or - for stdout (default)")

    def handle(self, *args: Any, since: str | None, until: str | None, output: str, **options: Any) -> None:
        start = parse_when(since, "--since") if since else None
        end = parse_when(until, "--until") if until else None
        if start and end and start >= end:
            raise CommandError("--since must be before --until.")
        if output != "-":
            target = Path(output)
            # A device or pipe (/dev/stdout) is refused too: the rename of the finished file would replace it.
            if (target.exists() and not target.is_file()) or not target.parent.is_dir():
                raise CommandError(f"Cannot write {output}: give a file in an existing directory, or -.")
            if target.is_symlink():
                output = str(target.resolve())  # the file it names is replaced, not the link
        try:
            if output == "-":
                manifest = audit_export(since=start, until=end, sink=sys.stdout.buffer, actor=Actor.cli())
                sys.stdout.flush()
                self.stderr.write(json.dumps(manifest, indent=2, sort_keys=True))
                return
            manifest = self._to_file(Path(output), start, end)
        except CheckpointError as exc:
            raise CommandError(exc.detail) from exc
        except OSError as exc:  # the disk filled up, permission denied: nothing partial is left
            raise CommandError(f"Cannot write {output}: {exc.strerror or exc}") from None
        payload = manifest["payload"]
        self.stdout.write(
            f"{payload['count']}\t{payload['first_sequence']}-{payload['last_sequence']}\t{output}"
        )

    def _to_file(self, path: Path, start: Any, end: Any) -> dict[str, Any]:
        # Written beside the target and renamed: a failed export leaves no partial file that looks whole.
        tmp = path.with_name(f".{path.name}.part")
        manifest_path = path.with_name(path.name + ".manifest.json")
        try:
            with open(tmp, "wb") as sink:
                manifest = audit_export(since=start, until=end, sink=sink, actor=Actor.cli())
            manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return manifest
