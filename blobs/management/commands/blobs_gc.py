"""Remove what crashed uploads left: ``pending``/``failed`` rows and objects no row names."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import CommandParser

from blobs.conf import blob_setting
from blobs.services import blobs_gc
from core.terminal import OperatorCommand, non_negative_int


class Command(OperatorCommand):
    help = "Delete pending uploads and orphan objects older than --older-than minutes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=non_negative_int,
            default=None,
            metavar="MINUTES",
            help="grace period in minutes (default BLOBS['GC_GRACE_MINUTES'])",
        )

    def handle(self, *args: Any, older_than: int | None, **options: Any) -> None:
        minutes = blob_setting("GC_GRACE_MINUTES") if older_than is None else older_than
        result = blobs_gc(older_than=timedelta(minutes=minutes))
        self.stdout.write(f"removed {result.rows} pending row(s) and {result.objects} orphan object(s)")
