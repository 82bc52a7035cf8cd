"""Test support: ``override_flag`` pins a flag's answer for every user, as a context manager or decorator.

    with override_flag("secure_blob_streaming", active=False):
        assert client.get("/secure/files/").status_code == 404

    @override_flag("secure_blob_streaming", active=True)
    def test_something(): ...

For tests only: the override wins over everything (kill switches included) in this process, whatever the
database holds, and is undone on exit. Answers already memoized on a request keep their value.
"""

from __future__ import annotations

from contextlib import ContextDecorator
from typing import Any

from . import services

_MISSING = object()


class override_flag(ContextDecorator):
    def __init__(self, name: str, active: bool = True) -> None:
        self.name = name
        self.active = active
        self._saved: list[Any] = []

    def __enter__(self) -> override_flag:
        self._saved.append(services._overrides.get(self.name, _MISSING))
        services._overrides[self.name] = self.active
        return self

    def __exit__(self, *exc_info: object) -> None:
        previous = self._saved.pop()
        if previous is _MISSING:
            services._overrides.pop(self.name, None)
        else:
            services._overrides[self.name] = previous


def restore_migration_flags() -> None:
    """Put back the rows migration 0002 creates, if a transactional test's flush removed them.

    Django empties every table after a ``transaction=True`` test (migration-made rows included); without the
    ``secure_blob_streaming`` row the gate knows no such flag and the secure file API answers 404 to all.
    The values are the migration's (kept in step by ``flags/tests/test_testing.py``).
    """
    from django.utils import timezone

    from .models import SECURE_BLOB_STREAMING, Flag, FlagStamp, new_salt

    FlagStamp.objects.get_or_create(pk=1, defaults={"value": 0})
    Flag.objects.get_or_create(
        name=SECURE_BLOB_STREAMING,
        defaults={
            "description": "The secure file API (/secure/files/): encrypted uploads and ranged downloads.",
            "enabled": True,
            "kill_switch": False,
            "beta_enabled": True,
            "rollout_basis_points": 10_000,
            "salt": new_salt(),
            "changed_at": timezone.now(),
        },
    )
    services.flag_cache_reset()
