"""Test data built through the real services (no fake blobs: the bytes are really encrypted), and what the
tests read back: the plaintext of a blob, the files in blob storage, a management command's output."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from blobs.models import Blob
from blobs.services import blob_create, blob_open
from blobs.storage import blob_store

_counter = itertools.count()


def make_user(
    username: str | None = None,
    *,
    perms: tuple[str, ...] = ("add_blob",),
    roles: tuple[str, ...] = (),
    **extra,
):
    """A user with blob permissions (``perms``, codenames in ``blobs``) and/or roles (group names)."""
    User = get_user_model()
    user = User.objects.create_user(
        username=username or f"user{next(_counter)}", password="pw-123456!", **extra
    )
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="blobs", codename=codename))
    for role in roles:
        user.groups.add(Group.objects.get(name=role))  # the groups exist: post_migrate synced them
    return User.objects.get(pk=user.pk)  # fresh instance: permission cache empty


def make_blob(
    owner,
    data: bytes = b"hello world",
    *,
    filename: str = "hello.txt",
    content_type: str = "text/plain",
    **kwargs,
) -> Blob:
    return blob_create(
        owner=owner, stream=io.BytesIO(data), filename=filename, content_type=content_type, **kwargs
    )


def pattern(size: int, seed: int = 7) -> bytes:
    """Deterministic non-repeating-looking bytes (so misplaced segments show up in comparisons)."""
    import hashlib

    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def plaintext(blob: Blob) -> bytes:
    """The whole plaintext of ``blob``, decrypted and authenticated through the real service."""
    return b"".join(blob_open(blob=blob).iter_all())


def stored_files() -> list[Path]:
    """Every file under the ``blobs`` storage's root (objects and temporaries), sorted."""
    root = Path(blob_store("blobs").storage.location)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def run(name: str, *args: str) -> tuple[str, str]:
    """``(stdout, stderr)`` of the management command ``name``."""
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()
