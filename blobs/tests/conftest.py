"""Fixtures shared by the blob tests: the disk filling up mid-write, injected at the OS file boundary."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable

import pytest


class FailingFile(io.FileIO):
    """A real file whose write() fails like the kernel does once ``room`` bytes are used: with ``code``,
    ENOSPC (the disk filling up) unless told otherwise. ``room`` is shared by every such file, like a disk."""

    room = 0
    code = errno.ENOSPC

    def write(self, data):
        allowed = min(len(data), max(type(self).room, 0))
        if allowed == 0 and len(data):
            raise OSError(self.code, os.strerror(self.code))
        type(self).room -= allowed
        return super().write(bytes(memoryview(data)[:allowed]))


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Unbuffered binary files opened with os.fdopen (the storage writer's object file) fail after ``room``
    bytes. Call it to set the room and the errno: ``disk_full(room=100)``, ``disk_full(0, errno.EDQUOT)``."""
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", buffering=-1, *args, **kwargs):
        if mode == "wb" and buffering == 0:
            return FailingFile(fd, "wb", closefd=True)
        return real_fdopen(fd, mode, buffering, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)

    def configure(room: int, code: int = errno.ENOSPC) -> None:
        # monkeypatch puts the class defaults back after the test: no room left over for the next one.
        monkeypatch.setattr(FailingFile, "room", room)
        monkeypatch.setattr(FailingFile, "code", code)

    return configure
