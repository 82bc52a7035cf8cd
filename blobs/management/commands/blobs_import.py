"""Import files as encrypted blobs (architecture.md §10 conventions).

Prints ``<id>\\t<path>`` per file on stdout; progress on stderr. Re-running skips a file already imported
from the same path with the same SHA-256 for the same owner (and, with ``--legacy-id``, under that legacy
id): another owner's blob is never handed out as this one's, and a legacy id is never dropped. A legacy id
that already names another blob is refused before anything is imported. Any failure is reported and makes
the exit status non-zero.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser
from tqdm import tqdm

from blobs.exceptions import BlobError
from blobs.models import LEGACY_ID_MAX_LENGTH, Blob
from blobs.services import blob_create
from core.terminal import OperatorCommand, progress
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


class Command(OperatorCommand):
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
        if legacy_id is not None:
            self._check_legacy_id(legacy_id, user, files[0])
        failures = 0
        total = sum(f.stat().st_size for f in files)
        with progress(self, total=total) as bar:
            for path in files:
                source = str(path.resolve())
                try:
                    existing = self._already_imported(source, path, user, legacy_id)
                    if existing is not None:
                        bar.update(path.stat().st_size)
                        bar.write(f"skipped (already imported): {path}", file=self.stderr._out)
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
                    bar.write(f"FAILED {path}: {exc}", file=self.stderr._out)
                    continue
                self.stdout.write(f"{blob.pk}\t{path}")
        if failures:
            raise CommandError(f"{failures} of {len(files)} file(s) failed to import.")

    def _already_imported(self, source: str, path: Path, owner: Any, legacy_id: str | None) -> Blob | None:
        """This owner's blob of this file, and with ``legacy_id`` the one under it: the same bytes imported
        for someone else are theirs, and re-using their blob would give this owner nothing."""
        candidates = Blob.objects.ready().filter(import_source=source, owner=owner)
        if legacy_id is not None:
            candidates = candidates.filter(legacy_id=legacy_id)
        if not candidates.exists():
            return None
        digest = _sha256(path)
        return next((b for b in candidates if hmac.compare_digest(b.sha256, digest)), None)

    def _check_legacy_id(self, legacy_id: str, owner: Any, path: Path) -> None:
        if not legacy_id or len(legacy_id) > LEGACY_ID_MAX_LENGTH:
            raise CommandError(f"--legacy-id must be 1 to {LEGACY_ID_MAX_LENGTH} characters.")
        taken = Blob.objects.filter(legacy_id=legacy_id).first()
        if taken is None or self._already_imported(str(path.resolve()), path, owner, legacy_id) == taken:
            return
        raise CommandError(
            f"Legacy id {legacy_id!r} already names blob {taken.pk} ({taken.filename!r}, another file or "
            "owner): nothing imported. Pick another --legacy-id, or delete that blob first."
        )


def _guess_type(path: Path) -> str:
    import mimetypes

    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"
