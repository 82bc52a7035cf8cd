"""What blobs_rewrap and blobs_reencrypt share: the batch loop, progress, counts, the run record.

Conventions (architecture §10): counts on stdout, progress bar and per-blob failures on stderr, non-zero exit
naming the failed blob ids. A run is recorded (kms.KeyRotation) however it ends, interrupted included.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser
from django.db.models import Sum
from django.utils import timezone

from audit.services import audit_record_after
from blobs.exceptions import BlobError
from blobs.models import Blob, BlobQuerySet
from blobs.rotation import Outcome, RotationTarget, iter_batches
from core.actors import Actor
from core.terminal import OperatorCommand, positive_int, progress
from kms.exceptions import KmsError
from kms.models import KeyRotation
from kms.services import key_rotation_record

# Failures of one blob that the run reports and goes on from; anything else is a bug and stops the run.
ROW_ERRORS = (KmsError, BlobError, ImproperlyConfigured)
MAX_IDS_SHOWN = 50


class RotationCommand(OperatorCommand):
    kind: str = ""
    verb: str = ""
    #: The progress bar counts bytes (the work rewrites every byte) rather than blobs (a rewrap moves a
    #: wrapped key, whatever the blob's size).
    counts_bytes: bool = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=100,
            metavar="N",
            help="rows read per query (default 100)",
        )

    def run_rotation(
        self,
        *,
        queryset: BlobQuerySet,
        target: RotationTarget,
        batch_size: int,
        selection: str,
        already: int,
        work: Callable[[Blob, Callable[[int], object]], Outcome],
    ) -> None:
        """``work(blob, advance)`` does one blob; with ``counts_bytes`` it calls ``advance(n)`` as it goes."""
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        started = timezone.now()
        total = queryset.count()
        size = (queryset.aggregate(size=Sum("size"))["size"] or 0) if self.counts_bytes else total
        actor = Actor.cli()  # one name for this run in the audit log and the rotation record
        counts: Counter[str] = Counter()
        failed: list[uuid.UUID] = []
        outcome = KeyRotation.Outcome.INTERRUPTED
        try:
            with progress(self, total=size, unit="B" if self.counts_bytes else "blob") as bar:
                for batch in iter_batches(queryset, batch_size=batch_size):
                    for blob in batch:
                        done = 0

                        def advance(length: int) -> None:
                            nonlocal done
                            done += length
                            bar.update(length)

                        try:
                            counts[work(blob, advance).value] += 1
                        except ROW_ERRORS as exc:
                            failed.append(blob.pk)
                            bar.write(f"FAILED {blob.pk}: {exc}", file=self.stderr._out)
                            # The row is unchanged (its transaction rolled back), so this is after the fact.
                            audit_record_after(
                                action=f"blob.{self.kind}",
                                actor=actor,
                                target_type="blob",
                                target_id=str(blob.pk),
                                outcome="error",
                                details={"error": type(exc).__name__, "to_provider": target.alias},
                            )
                        # What a failure or a skip left unread.
                        bar.update(max(blob.size - done, 0) if self.counts_bytes else 1)
            outcome = KeyRotation.Outcome.FAILED if failed else KeyRotation.Outcome.COMPLETED
        finally:
            audit_record_after(
                action=f"kms.{self.kind}_run",
                actor=actor,
                target_type="key",
                target_id=f"{target.alias}:{target.key_ref or ''}",
                outcome={"completed": "success", "failed": "error"}.get(str(outcome), "aborted"),
                details={
                    "selection": selection,
                    "changed": counts[Outcome.CHANGED.value],
                    "skipped": already + counts[Outcome.SKIPPED.value] + counts[Outcome.CONFLICT.value],
                    "failed": len(failed),
                },
            )
            key_rotation_record(
                kind=self.kind,
                outcome=outcome,
                started_at=started,
                finished_at=timezone.now(),
                actor=actor,
                target_provider=target.alias,
                target_key_ref=target.key_ref,
                selection=selection,
                examined=sum(counts.values()) + len(failed),
                changed=counts[Outcome.CHANGED.value],
                skipped=already + counts[Outcome.SKIPPED.value] + counts[Outcome.CONFLICT.value],
                failed=len(failed),
            )
        self.stdout.write(f"target\t{target.alias}\t{target.key_ref}")
        self.stdout.write(f"{self.verb}\t{counts[Outcome.CHANGED.value]}")
        self.stdout.write(f"already on target\t{already + counts[Outcome.SKIPPED.value]}")
        self.stdout.write(f"changed meanwhile (skipped)\t{counts[Outcome.CONFLICT.value]}")
        self.stdout.write(f"failed\t{len(failed)}")
        if failed:
            shown = ", ".join(str(pk) for pk in failed[:MAX_IDS_SHOWN])
            more = f" and {len(failed) - MAX_IDS_SHOWN} more" if len(failed) > MAX_IDS_SHOWN else ""
            raise CommandError(f"{len(failed)} blob(s) failed: {shown}{more}. Re-run to retry them.")

    def target_or_error(self, make: Callable[[], RotationTarget]) -> RotationTarget:
        try:
            return make()
        except (KmsError, ImproperlyConfigured) as exc:
            raise CommandError(f"The target key provider is not usable: {exc}") from None
