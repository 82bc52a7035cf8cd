"""Move existing blobs to another storage alias: ``manage.py blobs_migrate_storage --to blobs_s3``
(architecture.md §5). Each blob's ciphertext is copied, verified where it now lives (every segment
decrypts, the plaintext hashes to the row's SHA-256) and its row moved in an audited compare-and-swap; the
old object goes after that commits. Resumable: blobs already in the target are not selected, so a re-run
after a kill or a failure finishes the job (an object copied by a killed run is an orphan for blobs_gc).

Conventions (architecture §10): counts on stdout, progress and per-blob failures on stderr, non-zero exit
naming the failed blob ids.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from audit.services import audit_record_after
from blobs.exceptions import BlobError
from blobs.models import Blob
from blobs.rotation import Outcome, blob_move_storage, iter_batches
from blobs.storage import blob_store
from core.actors import Actor
from kms.exceptions import KmsError

from ._rotation import MAX_IDS_SHOWN, ROW_ERRORS


class Command(BaseCommand):
    help = "Move blobs to another STORAGES alias (copied, verified, audited; resumable)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--to", required=True, metavar="ALIAS", help="the STORAGES alias to move blobs to (blobs_s3)"
        )
        parser.add_argument(
            "--batch-size", type=int, default=100, metavar="N", help="rows read per query (default 100)"
        )

    def handle(self, *args: Any, to: str, batch_size: int, **options: Any) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if to not in settings.STORAGES:
            raise CommandError(f"No STORAGES alias {to!r} (known: {', '.join(sorted(settings.STORAGES))}).")
        try:
            blob_store(to).check()
        except (BlobError, ImproperlyConfigured) as exc:
            raise CommandError(f"The storage {to!r} is not usable: {exc}") from None
        queryset = Blob.objects.ready().exclude(storage_alias=to)
        total = queryset.count()
        actor = Actor.cli()
        counts: Counter[str] = Counter()
        failed: list[uuid.UUID] = []
        outcome = "aborted"
        try:
            with tqdm(total=total, unit="blob", file=self.stderr._out, disable=None) as bar:
                for batch in iter_batches(queryset, batch_size=batch_size):
                    for blob in batch:
                        try:
                            counts[blob_move_storage(blob=blob, to_alias=to, actor=actor).value] += 1
                        except ROW_ERRORS as exc:
                            failed.append(blob.pk)
                            self.stderr.write(f"FAILED {blob.pk}: {exc}")
                            # The row is unchanged (nothing committed), so this is after the fact.
                            audit_record_after(
                                action="blob.migrate_storage",
                                actor=actor,
                                target_type="blob",
                                target_id=str(blob.pk),
                                outcome="error",
                                details={
                                    "error": exc.code if isinstance(exc, (BlobError, KmsError)) else "config",
                                    "to": to,
                                },
                            )
                        bar.update(1)
            outcome = "error" if failed else "success"
        finally:
            audit_record_after(
                action="blob.migrate_storage_run",
                actor=actor,
                target_type="storage",
                target_id=to,
                outcome=outcome,
                details={
                    "moved": counts[Outcome.CHANGED.value],
                    "changed_meanwhile": counts[Outcome.CONFLICT.value],
                    "failed": len(failed),
                },
            )
        self.stdout.write(f"target\t{to}")
        self.stdout.write(f"moved\t{counts[Outcome.CHANGED.value]}")
        self.stdout.write(f"changed meanwhile (skipped)\t{counts[Outcome.CONFLICT.value]}")
        self.stdout.write(f"failed\t{len(failed)}")
        if failed:
            shown = ", ".join(str(pk) for pk in failed[:MAX_IDS_SHOWN])
            more = f" and {len(failed) - MAX_IDS_SHOWN} more" if len(failed) > MAX_IDS_SHOWN else ""
            raise CommandError(f"{len(failed)} blob(s) failed: {shown}{more}. Re-run to retry them.")
