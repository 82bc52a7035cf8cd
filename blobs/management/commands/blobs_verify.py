"""Decrypt every blob (or a random sample), check its SHA-256, and count per key reference (seed:
``verify_encryption.py --version 2``).

Prints ``<provider>\\t<key ref>\\t<ok>\\t<failed>`` per key reference, then ``total\\t<ok>\\t<failed>``, on
stdout; the progress bar and each failure on stderr. Exits non-zero naming every failed blob id. Each blob's
key is unwrapped through its provider (never the download cache), so this also proves the wrapped keys.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from blobs.models import Blob
from blobs.rotation import iter_batches
from blobs.services import blob_verify
from kms.exceptions import KmsError


class Command(BaseCommand):
    help = "Decrypt blobs and check their SHA-256; counts per key reference; non-zero exit on any failure."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--key-ref", metavar="R", help="only blobs whose data key this key ref wraps")
        which.add_argument("--provider", metavar="A", help="only blobs wrapped by this provider alias")
        parser.add_argument("--sample", type=int, metavar="N", help="verify N blobs chosen at random")

    def handle(
        self, *args: Any, key_ref: str | None, provider: str | None, sample: int | None, **options: Any
    ) -> None:
        queryset = Blob.objects.ready()
        if key_ref is not None:
            queryset = queryset.filter(key_ref=key_ref)
        if provider is not None:
            queryset = queryset.filter(key_provider=provider)
        if sample is not None:
            if sample < 1:
                raise CommandError("--sample must be at least 1.")
            ids = list(queryset.order_by("?").values_list("pk", flat=True)[:sample])
            queryset = Blob.objects.filter(pk__in=ids)
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        failed: list[uuid.UUID] = []
        total = queryset.count()
        with tqdm(total=total, unit="blob", file=self.stderr._out, disable=None) as bar:
            for batch in iter_batches(queryset, batch_size=100):
                for blob in batch:
                    try:
                        result = blob_verify(blob=blob)
                        ok, detail = result.ok, result.detail
                    except (KmsError, ImproperlyConfigured) as exc:
                        ok, detail = False, f"the data key cannot be unwrapped: {exc}"
                    counts[(blob.key_provider, blob.key_ref)][0 if ok else 1] += 1
                    if not ok:
                        failed.append(blob.pk)
                        self.stderr.write(f"FAILED {blob.pk}: {detail}")
                    bar.update(1)
        for (alias, ref), (good, bad) in sorted(counts.items()):
            self.stdout.write(f"{alias}\t{ref}\t{good}\t{bad}")
        self.stdout.write(f"total\t{total - len(failed)}\t{len(failed)}")
        if failed:
            raise CommandError(
                f"{len(failed)} of {total} blob(s) failed verification: {', '.join(map(str, failed))}"
            )
