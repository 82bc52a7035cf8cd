"""Print one blob's data key as a Tink JSON keyset: disaster recovery without this application
(docs/disaster-recovery.md). Refuses without ``--acknowledge-key-exposure`` and ``--as USERNAME`` naming
an active user granted ``kms.export_data_key`` (the Key administrators role), who is the event's actor in the
audit log. Being a superuser is not a grant (blobs.permissions.may_export_data_key): a superuser outside the
role is refused like anyone else.

Shell access to the app's environment already reaches the master key, so ``--as`` is accountability and a
guard against the wrong person running this by habit, not authentication: the audit log says who asked.

The keyset goes to stdout alone (redirect it to a file on an offline machine); the warning and what else a
Tink implementation needs (the associated data, the object's location) go to stderr.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser

from audit.services import audit_record_after
from blobs.keyset import tink_json_keyset
from blobs.models import Blob
from blobs.permissions import EXPORT_DATA_KEY, may_export_data_key
from blobs.services import blob_export_data_key
from core.actors import Actor
from core.terminal import OperatorCommand
from kms.exceptions import KmsError

FLAG = "--acknowledge-key-exposure"


class Command(OperatorCommand):
    help = (
        "Print a blob's data key as a Tink JSON keyset (disaster recovery). Needs "
        + FLAG
        + " and --as naming an active member of the Key administrators role (permission "
        + EXPORT_DATA_KEY
        + " granted through the role or to the user; superuser status alone is refused)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("blob_id")
        parser.add_argument(
            "--as",
            dest="username",
            required=True,
            metavar="USERNAME",
            help=(
                "the key administrator on whose behalf the key is exported: an active user granted "
                f"{EXPORT_DATA_KEY} (the Key administrators role); a superuser outside it is refused"
            ),
        )
        parser.add_argument(
            FLAG,
            action="store_true",
            dest="acknowledged",
            help="I understand this prints the blob's data key in clear",
        )

    def handle(self, *args: Any, blob_id: str, acknowledged: bool, username: str, **options: Any) -> None:
        warning = (
            f"WARNING: this prints the data key of blob {blob_id} in clear. Anyone holding it and the stored "
            "object can read the file. Keep it offline, never in a ticket or chat; when done, run "
            "`manage.py blobs_reencrypt` for this blob's key reference if the keyset may have leaked."
        )
        self.stderr.write(warning)
        if not acknowledged:
            raise CommandError(f"Refusing to print a data key without {FLAG}.")
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if not may_export_data_key(user):
            audit_record_after(
                action="blob.key_export",
                actor=Actor.cli(),
                target_type="blob",
                target_id=blob_id[:64],
                outcome="denied",
                details={"as": username[:150]},
            )
            raise CommandError(
                f"{username!r} is not an active key administrator (permission {EXPORT_DATA_KEY}, the Key "
                "administrators role; superuser status is not enough): refusing."
            )
        try:
            blob = Blob.objects.ready().get(pk=uuid.UUID(blob_id))
        except (ValueError, Blob.DoesNotExist):
            raise CommandError(f"No ready blob with id {blob_id!r}.") from None
        try:
            data_key = blob_export_data_key(blob=blob, actor=Actor.for_user(user))
        except (KmsError, ImproperlyConfigured) as exc:
            raise CommandError(f"The data key of blob {blob.pk} cannot be unwrapped: {exc}") from None
        self.stdout.write(tink_json_keyset(data_key, blob.params))
        self.stderr.write(
            f"associated data: the blob id's 16 raw bytes, hex {blob.pk.bytes.hex()}\n"
            f"object: storage {blob.storage_alias!r}, name {blob.storage_name!r} "
            f"({blob.ciphertext_size} bytes; plaintext {blob.size} bytes, SHA-256 {blob.sha256})"
        )
