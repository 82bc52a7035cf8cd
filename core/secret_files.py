"""Secret files (master keys, signing keys, the development secret key, the embedded SQLite database) and the
directories that hold them: created owner-only — files 0600, directories 0700 — and never overwritten. Pure:
no Django, so settings.py can use it too."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def create_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each owner-only (0700); leave existing directories alone.

    ``Path.mkdir(mode=..., parents=True)`` applies ``mode`` to the last directory only and gives the parents
    the umask's default (0755 under the common 022), as ``mkdir -p`` does; this gives every one it creates
    0700, and changes no process-wide umask (other threads keep theirs)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        # Another process or thread may make it first: with this same code, so 0700 as well.
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)


def create_private_file(path: Path) -> bool:
    """Create an empty ``path`` (0600, missing parents 0700) unless it exists; return whether it was
    created. For files another library fills in, with the umask's mode otherwise (SQLite)."""
    if path.exists():
        return False
    create_private_dirs(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


def create_secret_file(path: Path, text: str) -> bool:
    """Write ``text`` to a new ``path`` (0600 from the first byte, missing parents 0700); leave an existing
    file alone. Returns whether it was created. O_EXCL: two processes starting at once cannot both create
    it."""
    create_private_dirs(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())  # a key that vanishes in a crash would strand what it protects
    return True
