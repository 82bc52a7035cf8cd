"""core.secret_files: owner-only files and the directories made for them, under the common umask (022)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.secret_files import create_private_dirs, create_private_file, create_secret_file


@pytest.fixture(autouse=True)
def common_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # what most systems start with: mkdir -p would make 0755 here
    yield
    os.umask(previous)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.mark.parametrize(
    "make",
    [
        lambda path: create_private_dirs(path),
        lambda path: create_private_file(path / "db.sqlite3"),
        lambda path: create_secret_file(path / "master.key", "k"),
    ],
    ids=["dirs", "file", "secret"],
)
def test_every_directory_made_is_owner_only(tmp_path, make):
    make(tmp_path / "var" / "a" / "b")
    assert [mode(tmp_path / p) for p in ("var", "var/a", "var/a/b")] == [oct(0o700)] * 3


def test_existing_directories_are_left_alone(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    create_private_dirs(shared / "own")
    assert (mode(shared), mode(shared / "own")) == (oct(0o755), oct(0o700))
    create_private_dirs(shared / "own")  # already there: nothing to do


def test_a_private_file_is_created_empty_and_once(tmp_path):
    path = tmp_path / "db.sqlite3"
    assert create_private_file(path) is True
    assert (path.read_bytes(), mode(path)) == (b"", oct(0o600))
    path.write_bytes(b"SQLite format 3\x00")
    assert create_private_file(path) is False
    assert path.read_bytes() == b"SQLite format 3\x00"  # never truncated


def test_a_secret_file_is_owner_only_and_never_overwritten(tmp_path):
    path = tmp_path / "keys" / "secret_key"
    assert create_secret_file(path, "first") is True
    assert create_secret_file(path, "second") is False
    assert (path.read_text(), mode(path)) == ("first", oct(0o600))
