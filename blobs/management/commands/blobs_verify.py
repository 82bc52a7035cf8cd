"""Decrypt every blob (or a random sample), check its SHA-256, and count per key reference (seed:
``verify_encryption.py --version 2``).

Prints ``<provider>\\t<key ref>\\t<ok>\\t<failed>`` per key reference, then ``total\\t<ok>\\t<failed>``, on
stdout; the progress bar (bytes decrypted, on a terminal only) and each failure on stderr. Exits non-zero
naming every failed blob id, and at once for a ``--provider`` or ``--key-ref`` that names nothing: a typo
must not pass for a clean check. Each blob's key is unwrapped through its provider (never the download
cache), so this also proves the wrapped keys.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser
from django.db.models import Sum

from blobs.models import Blob
from blobs.rotation import iter_batches
from blobs.services import blob_verify
from core.terminal import OperatorCommand, positive_int, progress
from kms.exceptions import KmsError
from kms.registry import provider_aliases


class Command(OperatorCommand):
    help = "Decrypt blobs and check their SHA-256; counts per key reference; non-zero exit on any failure."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--key-ref", metavar="R", help="only blobs whose data key this key ref wraps")
        which.add_argument("--provider", metavar="A", help="only blobs wrapped by this provider alias")
        parser.add_argument(
            "--sample", type=positive_int, metavar="N", help="verify N blobs chosen at random"
        )

    def handle(
        self, *args: Any, key_ref: str | None, provider: str | None, sample: int | None, **options: Any
    ) -> None:
        queryset = Blob.objects.ready()
        if key_ref is not None:
            queryset = queryset.filter(key_ref=key_ref)
            if not queryset.exists():
                raise CommandError(f"No blob's data key is wrapped by key ref {key_ref!r}: nothing verified.")
        if provider is not None:
            queryset = queryset.filter(key_provider=provider)
            # A configured provider with no blobs yet is a clean (empty) check; an unknown alias is a typo.
            if provider not in provider_aliases() and not queryset.exists():
                known = ", ".join(sorted(provider_aliases()))
                raise CommandError(f"No key provider {provider!r} (KMS_PROVIDERS has: {known}).")
        if sample is not None:
            ids = list(queryset.order_by("?").values_list("pk", flat=True)[:sample])
            queryset = Blob.objects.filter(pk__in=ids)
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        failed: list[uuid.UUID] = []
        total = queryset.count()
        size = queryset.aggregate(size=Sum("size"))["size"] or 0
        # Bytes, not blobs: one large blob is most of the work, and a bar counting blobs sits at 0 % on it.
        with progress(self, total=size) as bar:
            for batch in iter_batches(queryset, batch_size=100):
                for blob in batch:
                    done = 0

                    def advance(length: int) -> None:
                        nonlocal done
                        done += length
                        bar.update(length)

                    try:
                        result = blob_verify(blob=blob, on_bytes=advance)
                        ok, detail = result.ok, result.detail
                    except (KmsError, ImproperlyConfigured) as exc:
                        ok, detail = False, f"the data key cannot be unwrapped: {exc}"
                    counts[(blob.key_provider, blob.key_ref)][0 if ok else 1] += 1
                    if not ok:
                        failed.append(blob.pk)
                        bar.write(f"FAILED {blob.pk}: {detail}", file=self.stderr._out)
                    bar.update(max(blob.size - done, 0))  # what a failure left unread
        for (alias, ref), (good, bad) in sorted(counts.items()):
            self.stdout.write(f"{alias}\t{ref}\t{good}\t{bad}")
        self.stdout.write(f"total\t{total - len(failed)}\t{len(failed)}")
        if failed:
            raise CommandError(
                f"{len(failed)} of {total} blob(s) failed verification: {', '.join(map(str, failed))}"
            )
