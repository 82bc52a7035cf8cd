"""Give blobs new data keys: each object is rewritten under a new name and its row swapped atomically
(architecture.md §4). The old object goes only after the new row commits; downloads keep working throughout.

``--only KEYREF`` limits the run to blobs whose data key is wrapped by that key (e.g. one suspected of
compromise); since re-encrypted blobs are wrapped by the active key, re-running it after a kill or a failure
finishes the job. Without it every visible blob is re-encrypted once per run.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from blobs.models import Blob
from blobs.rotation import blob_reencrypt, rotation_target
from kms.models import KeyRotation

from ._rotation import RotationCommand


class Command(RotationCommand):
    help = "Re-encrypt blobs with new data keys (wrapped by the active provider) into new objects."
    kind = "reencrypt"
    verb = "re-encrypted"
    counts_bytes = True

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--only", metavar="KEYREF", help="only blobs whose data key this key wraps")

    def handle(self, *args: Any, only: str | None, batch_size: int, **options: Any) -> None:
        target = self.target_or_error(rotation_target)
        queryset = Blob.objects.ready()
        if only is not None:
            queryset = queryset.filter(key_ref=only)
            # A mistyped key ref must not pass for a finished job (re-encrypted 0, exit 0); a re-run of one
            # that did finish is fine.
            done_before = KeyRotation.objects.filter(kind=self.kind, selection=f"--only {only}").exists()
            if not done_before and not queryset.exists():
                raise CommandError(
                    f"No blob's data key is wrapped by key ref {only!r}: nothing re-encrypted."
                )
        self.run_rotation(
            queryset=queryset,
            target=target,
            batch_size=batch_size,
            selection=f"--only {only}" if only is not None else "",
            already=0,
            work=lambda blob, advance: blob_reencrypt(blob=blob, on_bytes=advance),
        )
