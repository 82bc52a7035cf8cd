"""Write a blob's plaintext (or an inclusive byte range ``A-B``) to stdout or a file.

Binary on a terminal is unreadable and can leave it garbled, so without ``-o`` a terminal stdout is refused
(``-o -`` writes there anyway); a target whose directory does not exist is refused before any decryption.
A progress bar (bytes) is drawn on stderr when that is a terminal.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from audit.services import audit_record, audit_record_after
from blobs.exceptions import BlobError
from blobs.models import Blob
from blobs.ranges import RangeNotSatisfiable, parse_range
from blobs.services import blob_open
from core.actors import Actor
from core.terminal import OperatorCommand, note, progress
from kms.exceptions import KmsError


class Command(OperatorCommand):
    help = "Decrypt a blob to stdout or -o FILE; --range A-B is inclusive like HTTP."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("blob_id")
        parser.add_argument("--range", dest="byte_range", help="inclusive byte range: A-B, A- or -N")
        parser.add_argument(
            "-o", "--output", help="output file, or - for stdout (default: stdout, unless it is a terminal)"
        )

    def handle(
        self, *args: Any, blob_id: str, byte_range: str | None, output: str | None, **options: Any
    ) -> None:
        if output is None:
            if sys.stdout.isatty():
                raise CommandError(
                    "stdout is a terminal: give -o FILE, redirect (> FILE), or -o - to print the bytes there."
                )
            output = "-"
        if output != "-":
            output = str(_check_target(Path(output)))
        try:
            blob = Blob.objects.ready().get(pk=blob_id)
        except (Blob.DoesNotExist, ValidationError):  # ValidationError: not a UUID
            raise CommandError(f"No ready blob {blob_id!r}.") from None
        start, stop = 0, blob.size
        if byte_range:
            if "," in byte_range:
                raise CommandError("--range takes one range.")
            try:
                ranges = parse_range(f"bytes={byte_range}", blob.size)
            except RangeNotSatisfiable:
                raise CommandError(f"Range {byte_range} is outside the blob ({blob.size} bytes).") from None
            if ranges is None:
                raise CommandError(f"Invalid range {byte_range!r}; use A-B (inclusive), A- or -N.")
            start, stop = ranges[0].start, ranges[0].stop
        # Plaintext leaving the system is a download, audited as one (architecture.md §8): a start event
        # committed before the first byte is decrypted (no event, no export), its outcome when it is over.
        details = {
            "range": [start, stop - 1] if stop > start else None,
            "to": "stdout" if output == "-" else "file",
        }
        try:
            audit_record(
                action="blob.export.start",
                actor=Actor.cli(),
                target_type="blob",
                target_id=str(blob.pk),
                details=details,
            )
        except DatabaseError:
            raise CommandError(
                "Export refused: its audit event could not be written (is the database available?)."
            ) from None
        try:
            reader = blob_open(blob=blob)
            with progress(self, total=stop - start) as bar:
                chunks = _counted(reader.iter_range(start, stop), bar.update)
                if output == "-":
                    sink = sys.stdout.buffer
                    for chunk in chunks:
                        sink.write(chunk)
                    sink.flush()
                else:
                    self._to_file(Path(output), chunks)
        except (BlobError, KmsError, OSError) as exc:
            audit_record_after(
                action="blob.export",
                actor=Actor.cli(),
                target_type="blob",
                target_id=str(blob.pk),
                outcome="error",
                details={**details, "error": getattr(exc, "code", type(exc).__name__)},
            )
            if isinstance(exc, OSError):
                raise CommandError(f"Export failed: cannot write {output}: {exc.strerror or exc}") from None
            raise CommandError(f"Export failed: {exc}") from exc
        if output != "-":
            note(self, f"Wrote {output}")
        audit_record_after(
            action="blob.export",
            actor=Actor.cli(),
            target_type="blob",
            target_id=str(blob.pk),
            details={**details, "bytes": stop - start},
        )

    def _to_file(self, path: Path, chunks: Any) -> None:
        # Written beside the target and renamed, so a failed export never leaves a partial plaintext file.
        # A fresh name, created here (O_EXCL, 0600): nothing planted in a shared directory beforehand, a
        # symlink or a file others can read, receives the plaintext.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _check_target(path: Path) -> Path:
    """The file to write: ``path``, or the regular file a symlink names (the rename replaces what it
    names, not the link). A device, pipe or socket (``/dev/stdout``) is refused: renaming a file over it
    would replace it."""
    if path.is_dir():
        raise CommandError(f"{path} is a directory: give a file name (-o {path / 'FILE'}).")
    if path.exists() and not path.is_file():
        raise CommandError(f"{path} is not a regular file: use -o - for stdout, or a shell redirect.")
    if path.is_symlink():
        path = path.resolve()
    if not path.parent.is_dir():
        raise CommandError(f"Cannot write {path}: the directory {path.parent} does not exist.")
    return path


def _counted(chunks: Iterator[bytes], advance: Callable[[int], object]) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk
        advance(len(chunk))
