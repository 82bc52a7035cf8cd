"""Import files as encrypted blobs (architecture.md §10 conventions).

Prints ``<id>\\t<path>`` per file on stdout; progress on stderr. Re-running skips a file already imported
from the same path with the same SHA-256. Any failure is reported and makes the exit status non-zero.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from blobs.exceptions import BlobError
from blobs.models import Blob
from blobs.services import blob_create
from kms.exceptions import KmsError


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Progress:
    """A file wrapper that advances a progress bar as the encryptor reads."""

    def __init__(self, handle: Any, bar: tqdm) -> None:
        self._handle = handle
        self._bar = bar

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._bar.update(len(data))
        return data


class Command(BaseCommand):
    help = "Encrypt files or directories into blobs owned by --owner."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--owner", required=True, help="username that will own the blobs")
        parser.add_argument("--legacy-id", help="id under /legacy/files/ (one file only)")

    def handle(
        self, *args: Any, paths: list[Path], owner: str, legacy_id: str | None, **options: Any
    ) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: owner})
        except User.DoesNotExist:
            raise CommandError(f"No user named {owner!r}.") from None
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise CommandError(f"Not found: {', '.join(missing)}")
        files = list(_files(paths))
        if legacy_id and len(files) != 1:
            raise CommandError("--legacy-id names one file; give exactly one.")
        failures = 0
        total = sum(f.stat().st_size for f in files)
        with tqdm(total=total, unit="B", unit_scale=True, file=self.stderr._out, disable=None) as bar:
            for path in files:
                source = str(path.resolve())
                try:
                    existing = self._already_imported(source, path)
                    if existing is not None:
                        bar.update(path.stat().st_size)
                        self.stderr.write(f"skipped (already imported): {path}")
                        self.stdout.write(f"{existing.pk}\t{path}")
                        continue
                    with path.open("rb") as handle:
                        blob = blob_create(
                            owner=user,
                            stream=_Progress(handle, bar),
                            filename=path.name,
                            content_type=_guess_type(path),
                            legacy_id=legacy_id,
                            import_source=source,
                        )
                except (OSError, BlobError, KmsError) as exc:
                    failures += 1
                    self.stderr.write(f"FAILED {path}: {exc}")
                    continue
                self.stdout.write(f"{blob.pk}\t{path}")
        if failures:
            raise CommandError(f"{failures} of {len(files)} file(s) failed to import.")

    def _already_imported(self, source: str, path: Path) -> Blob | None:
        candidates = list(Blob.objects.ready().filter(import_source=source))
        if not candidates:
            return None
        digest = _sha256(path)
        return next((b for b in candidates if hmac.compare_digest(b.sha256, digest)), None)


def _guess_type(path: Path) -> str:
    import mimetypes

    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"
