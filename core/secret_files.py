"""Secret files (master keys, signing keys, the development secret key): created once, mode 0600, never
overwritten. Pure: no Django, so settings.py can use it too."""

from __future__ import annotations

import os
from pathlib import Path


def create_secret_file(path: Path, text: str) -> bool:
    """Write ``text`` to a new ``path`` (0600 from the first byte, parents created); leave an existing file
    alone. Returns whether it was created. O_EXCL: two processes starting at once cannot both create it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())  # a key that vanishes in a crash would strand what it protects
    return True
