"""Create the first admin account if none exists (``make run``).

Uses DJANGO_SUPERUSER_USERNAME / _PASSWORD / _EMAIL when set; otherwise ``admin`` with a generated
password printed once (``make run`` prints it last, just before the server's log). Re-running does nothing
when any superuser exists. A forgotten password is reset with ``manage.py changepassword USERNAME``.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from core.terminal import OperatorCommand, note


class Command(OperatorCommand):
    help = "Create the first superuser unless one exists."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        admin = User.objects.filter(is_superuser=True).order_by("pk").first()
        if admin is not None:
            note(
                self,
                f"Admin account {admin.get_username()!r} exists; forgot its password? "
                f"manage.py changepassword {admin.get_username()}",
            )
            return
        config = settings.BOOTSTRAP_SUPERUSER
        username = config["USERNAME"] or "admin"
        password = config["PASSWORD"] or secrets.token_urlsafe(18)
        User.objects.create_superuser(username=username, email=config["EMAIL"] or "", password=password)
        self.stdout.write(f"Created admin account {username!r}.")
        if not config["PASSWORD"]:
            self.stdout.write(f"Generated password (shown once, store it now): {password}")
            self.stdout.write(f"Forgot it? Set a new one with: manage.py changepassword {username}")
