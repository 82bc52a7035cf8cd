"""Move every blob's wrapped data key to the active (or given) provider and key version (architecture.md §4).

Rows already there are skipped, so a re-run (after a kill, or after a failure) finishes the job. Same
provider: the provider's rewrap (server-side where the KMS can); another provider: unwrap with the old one,
wrap with the new. Each row changes in its own transaction, compare-and-swap on the old wrapped key.
``--dry-run`` prints what would move, per provider and key reference, and changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django.db.models import Count, Sum

from blobs.models import Blob
from blobs.rotation import blob_rewrap, blobs_needing_rewrap, rotation_target
from core.terminal import note

from ._rotation import RotationCommand


class Command(RotationCommand):
    help = "Rewrap every blob's data key under the active (or --to) provider's current key."
    kind = "rewrap"
    verb = "rewrapped"

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--to", metavar="ALIAS", help="KMS_PROVIDERS alias (default: the active one)")
        parser.add_argument("--dry-run", action="store_true", help="print what would move; change nothing")

    def handle(self, *args: Any, to: str | None, batch_size: int, dry_run: bool, **options: Any) -> None:
        target = self.target_or_error(lambda: rotation_target(alias=to))
        queryset = blobs_needing_rewrap(target=target)
        already = Blob.objects.ready().count() - queryset.count()
        if dry_run:
            groups = (
                queryset.order_by()
                .values("key_provider", "key_ref")
                .annotate(blobs=Count("pk"), bytes=Sum("size"))
                .order_by("key_provider", "key_ref")
            )
            self.stdout.write(f"target\t{target.alias}\t{target.key_ref}")
            for group in groups:
                where = f"{group['key_provider']}\t{group['key_ref']}"
                self.stdout.write(f"would rewrap\t{where}\t{group['blobs']}\t{group['bytes']}")
            self.stdout.write(f"would rewrap total\t{sum(g['blobs'] for g in groups)}")
            self.stdout.write(f"already on target\t{already}")
            note(self, "Dry run: nothing was changed.")
            return
        self.run_rotation(
            queryset=queryset,
            target=target,
            batch_size=batch_size,
            selection=f"--to {to}" if to else "",
            already=already,
            work=lambda blob, _advance: blob_rewrap(blob=blob, target=target),
        )
