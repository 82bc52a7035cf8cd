"""Manage the local provider's master key file (architecture.md §4; docs/keys.md).

``--create`` makes the file (0600) with one key unless it exists — what ``make run`` does. In production
(``DEBUG`` off) it refuses to make one without ``--allow-production``: a missing key file there is a lost key
to restore from backup, and a new key would only strand every existing blob further.
``--add`` prepends a new active key; older keys stay in the file and keep unwrapping old blobs.
Without options, lists the key ids (never the keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from core.actors import Actor
from core.terminal import OperatorCommand, note
from kms.exceptions import KmsError
from kms.providers.local import add_key_to_file, create_key_file, parse_keys
from kms.signals import master_key_changed


class Command(OperatorCommand):
    # The kms checks load the keys (and in development create them): this command must run without a
    # usable key — creating the first one is what it is for.
    requires_system_checks: list[str] = []
    help = "Create, rotate or list the local master key file (never prints key material)."

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--create", action="store_true", help="create the key file if it does not exist")
        group.add_argument("--add", action="store_true", help="prepend a new active key")
        parser.add_argument("--file", type=Path, default=None, help="key file (default BLOB_MASTER_KEY_FILE)")
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="with --create and DJANGO_DEBUG=false: deliberately create the first key of a new install",
        )

    def handle(
        self,
        *args: Any,
        create: bool,
        add: bool,
        file: Path | None,
        allow_production: bool,
        **options: Any,
    ) -> None:
        if settings.BLOB_MASTER_KEYS and file is None:
            note(self, "BLOB_MASTER_KEYS is set: keys come from the environment, not a file.")
            return
        path = file or Path(settings.BLOB_MASTER_KEY_FILE)
        try:
            if create:
                if not settings.DEBUG and not allow_production and not path.exists():
                    raise CommandError(
                        f"{path} does not exist and DJANGO_DEBUG=false: refusing to invent a master key in "
                        "production. Restore the key file from backup (docs/keys.md), or pass "
                        "--allow-production to create the first key of a new install deliberately."
                    )
                made = create_key_file(path)
                if not made:
                    note(self, f"Kept existing master key file {path} (0600).")
                    return
                note(self, f"Created master key file {path} (0600).")
                note(self, "Back it up now: blobs cannot be decrypted without it (docs/keys.md).")
                key_id = parse_keys(path.read_text(), source=str(path))[0][0]
                self._audit("kms.master_key_create", key_id=key_id, path=path)
                return
            if add:
                key_id = add_key_to_file(path)
                note(self, f"Added active master key {key_id}; restart the app so new blobs use it.")
                self._audit("kms.master_key_add", key_id=key_id, path=path)
                self.stdout.write(key_id)
                return
            for index, (key_id, _key) in enumerate(parse_keys(path.read_text(), source=str(path))):
                self.stdout.write(f"{key_id}\t{'active' if index == 0 else 'unwrap-only'}")
        except FileNotFoundError:
            raise CommandError(f"{path} does not exist: create it with --create.") from None
        except (OSError, KmsError) as exc:
            raise CommandError(f"{path}: {exc}") from exc

    def _audit(self, action: str, *, key_id: str, path: Path) -> None:
        """Key configuration changes are audited (the key id and file, never the key) by whoever listens
        (the audit app); a change nobody recorded is said, not lost silently. The first key of a fresh
        install is made before ``migrate`` creates the audit log (``make run``): there is no log yet to
        leave it out of, so that is not reported as a lost change."""
        replies = master_key_changed.send(
            sender=self.__class__, action=action, key_id=key_id, path=path, actor=Actor.cli()
        )
        if not any(recorded for _receiver, recorded in replies) and action != "kms.master_key_create":
            self.stderr.write("The audit log is not migrated yet: this key change is not recorded in it.")
