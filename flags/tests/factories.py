"""Test data for the flag tests: users, groups and flags as plain rows (flags write through the models'
own defaults; changes under test go through the services)."""

from __future__ import annotations

import itertools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from flags.models import Flag

_counter = itertools.count()


def make_user(username: str | None = None, *, groups: tuple[str, ...] = (), **extra):
    user = get_user_model().objects.create_user(
        username=username or f"flaguser{next(_counter)}", password="pw-123456!", **extra
    )
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


def make_flag(name: str = "new_thing", **fields) -> Flag:
    defaults = {"enabled": True, "rollout_basis_points": 0}
    return Flag.objects.create(name=name, **{**defaults, **fields})
