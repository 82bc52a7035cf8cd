"""Create the first admin account if none exists (``make run``).

Uses DJANGO_SUPERUSER_USERNAME / _PASSWORD / _EMAIL when set; otherwise ``admin`` with a generated
password printed once. Re-running does nothing when any superuser exists.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first superuser unless one exists."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stderr.write("An admin account exists already; not creating another.")
            return
        config = settings.BOOTSTRAP_SUPERUSER
        password = config["PASSWORD"] or secrets.token_urlsafe(18)
        User.objects.create_superuser(
            username=config["USERNAME"] or "admin", email=config["EMAIL"] or "", password=password
        )
        self.stdout.write(f"Created admin account {config['USERNAME']!r}.")
        if not config["PASSWORD"]:
            self.stdout.write(f"Generated password (shown once, store it now): {password}")
