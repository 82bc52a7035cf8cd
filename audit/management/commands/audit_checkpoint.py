"""Write a signed checkpoint of the newest audit event to the checkpoint storage (write-once)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from audit.exceptions import CheckpointError
from audit.verification import audit_checkpoint
from core.actors import Actor
from core.terminal import OperatorCommand


class Command(OperatorCommand):
    help = "Sign (Ed25519) the newest audit event's sequence and hash and store it outside the database."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            point = audit_checkpoint(actor=Actor.cli())
        except CheckpointError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"{point.sequence}\t{point.hash}\t{point.name}")
