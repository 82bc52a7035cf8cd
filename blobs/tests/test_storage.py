"""FileSystemBlobStore: the streaming writer (commit/abort), ranged reads, size, delete, GC listing,
readiness, and the disk filling up mid-write (fault injected at the OS file boundary)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage

from blobs.exceptions import ObjectMissing, StorageFull, StorageUnavailable
from blobs.storage import FileSystemBlobStore, blob_store

NAME = "ab/cd/abcdef0123456789"


@pytest.fixture
def store() -> FileSystemBlobStore:
    s = blob_store("blobs")  # the per-test directory from the root conftest
    assert isinstance(s, FileSystemBlobStore)
    return s


def root(store: FileSystemBlobStore) -> Path:
    return Path(store.storage.location)


def final(store: FileSystemBlobStore, name: str = NAME) -> Path:
    return root(store) / name


def part(store: FileSystemBlobStore, name: str = NAME) -> Path:
    return root(store) / (name + ".part")


def all_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


# --- writer -------------------------------------------------------------------------------------------------


def test_object_is_visible_only_on_commit(store):
    writer = store.writer(NAME)
    writer.write(b"hello ")
    writer.write(bytearray(b"world"))
    assert not final(store).exists()
    assert part(store).exists()
    with pytest.raises(ObjectMissing):
        store.size(NAME)
    writer.commit()
    assert final(store).read_bytes() == b"hello world"
    assert not part(store).exists()
    assert store.size(NAME) == 11
    assert oct(final(store).stat().st_mode & 0o777) == oct(0o600)


@pytest.fixture
def common_umask():
    """The umask most systems start with (022), under which mkdir -p makes 0755 directories."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("common_umask")
def test_the_root_and_shard_directories_are_owner_only(store):
    # Issue 15 item 12: the object was 0600 but mkdir -p left the root and the first shard (ab/) 0755.
    with store.writer(NAME) as writer:
        writer.write(b"ciphertext")
        writer.commit()
    made = [root(store), root(store) / "ab", root(store) / "ab" / "cd"]
    assert {str(d.relative_to(root(store).parent)): oct(d.stat().st_mode & 0o777) for d in made} == {
        str(d.relative_to(root(store).parent)): oct(0o700) for d in made
    }
    assert oct(final(store).stat().st_mode & 0o777) == oct(0o600)


@pytest.mark.usefixtures("common_umask")
def test_the_readiness_probe_makes_the_root_and_its_parents_owner_only(tmp_path):
    fresh = FileSystemBlobStore(FileSystemStorage(location=str(tmp_path / "var" / "blobs")), "fresh")
    fresh.check()  # the first thing a new deployment's /ready does
    assert [oct((tmp_path / d).stat().st_mode & 0o777) for d in ("var", "var/blobs")] == [oct(0o700)] * 2


def test_abort_leaves_nothing(store):
    writer = store.writer(NAME)
    writer.write(b"x" * 1000)
    writer.abort()
    assert not part(store).exists()
    assert not final(store).exists()
    writer.abort()  # idempotent


def test_abort_after_commit_keeps_the_object(store):
    writer = store.writer(NAME)
    writer.write(b"data")
    writer.commit()
    writer.abort()
    assert final(store).read_bytes() == b"data"


def test_exception_inside_with_aborts(store):
    def write_then_fail() -> None:
        with store.writer(NAME) as writer:
            writer.write(b"partial")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert all_files(root(store)) == []


def test_leaving_with_without_commit_aborts(store):
    with store.writer(NAME) as writer:
        writer.write(b"never committed")
    assert all_files(root(store)) == []  # and the file handle is closed (ResourceWarning is an error)


def test_with_block_commit(store):
    with store.writer(NAME) as writer:
        writer.write(b"abc")
        writer.commit()
    assert final(store).read_bytes() == b"abc"


def test_write_or_commit_after_finishing_is_an_error(store):
    writer = store.writer(NAME)
    writer.commit()
    with pytest.raises(ValueError, match="after commit or abort"):
        writer.write(b"x")
    with pytest.raises(ValueError, match="after commit or abort"):
        writer.commit()
    assert store.size(NAME) == 0


def test_a_second_writer_cannot_clobber_an_upload_in_progress(store):
    first = store.writer(NAME)
    first.write(b"first")
    with pytest.raises(StorageUnavailable):
        store.writer(NAME)
    first.commit()
    assert final(store).read_bytes() == b"first"


# --- reads --------------------------------------------------------------------------------------------------


def put(store, data: bytes, name: str = NAME) -> None:
    writer = store.writer(name)
    writer.write(data)
    writer.commit()


def test_open_range_is_positioned_at_start(store):
    data = bytes(range(256)) * 4
    put(store, data)
    with store.open_range(NAME, 300, 50) as handle:
        assert handle.read(50) == data[300:350]
    with store.open_range(NAME, 0, len(data)) as handle:
        assert handle.read() == data


def test_open_range_of_a_truncated_object_yields_fewer_bytes(store):
    put(store, b"0123456789")
    with store.open_range(NAME, 8, 10) as handle:
        assert handle.read(10) == b"89"


def test_a_missing_object_is_lost_data_and_a_missing_store_an_outage(store):
    put(store, b"keep the root")  # the storage root exists: it answers, and this object is not in it
    with pytest.raises(ObjectMissing, match="missing"):
        store.open_range("no/such/object", 0, 1)
    with pytest.raises(ObjectMissing, match="missing"):
        store.size("no/such/object")
    assert ObjectMissing.status_code == 500
    assert ObjectMissing().response_headers() == {}  # retrying cannot bring it back


def test_a_store_whose_root_is_gone_is_unavailable(store, tmp_path, monkeypatch):
    monkeypatch.setattr(store.storage, "location", str(tmp_path / "not-mounted"))
    with pytest.raises(StorageUnavailable, match="not mounted") as caught:
        store.open_range("no/such/object", 0, 1)
    assert caught.value.status_code == 503
    with pytest.raises(StorageUnavailable, match="not mounted"):
        store.size("no/such/object")


def test_size(store):
    put(store, b"")
    assert store.size(NAME) == 0
    put(store, b"x" * 12345, name="other")
    assert store.size("other") == 12345


# --- delete and listing -------------------------------------------------------------------------------------


def test_delete_removes_object_and_partial_upload(store):
    put(store, b"done")
    stale = part(store)
    stale.write_bytes(b"left by a crash")
    store.delete(NAME)
    assert not final(store).exists()
    assert not stale.exists()
    store.delete(NAME)  # missing is fine


def test_delete_removes_an_in_progress_part(store):
    writer = store.writer("x/y/z")
    writer.write(b"partial")
    store.delete("x/y/z")
    assert not part(store, "x/y/z").exists()
    writer.abort()


def test_iter_objects_lists_objects_and_parts_under_their_final_names(store):
    assert list(store.iter_objects()) == []  # root does not exist yet
    put(store, b"a", name="aa/bb/one")
    put(store, b"b", name="cc/dd/two")
    pending = store.writer("ee/ff/three")
    pending.write(b"c")
    listed = dict(store.iter_objects())
    assert set(listed) == {"aa/bb/one", "cc/dd/two", "ee/ff/three"}
    assert listed["aa/bb/one"] == pytest.approx(final(store, "aa/bb/one").stat().st_mtime)
    pending.abort()
    assert set(dict(store.iter_objects())) == {"aa/bb/one", "cc/dd/two"}


# --- readiness ----------------------------------------------------------------------------------------------


def test_check_creates_the_root_and_leaves_no_probe(store):
    assert not root(store).exists()
    store.check()
    assert root(store).is_dir()
    assert list(root(store).iterdir()) == []


def test_check_fails_when_the_root_cannot_take_writes(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    broken = FileSystemBlobStore(FileSystemStorage(location=str(blocker / "blobs")), "broken")
    with pytest.raises(StorageUnavailable, match="Blob storage failed"):
        broken.check()
    with pytest.raises(StorageUnavailable):
        broken.writer(NAME)


# --- disk full ----------------------------------------------------------------------------------------------


def test_disk_full_on_write_is_storage_full_and_leaves_nothing(store, disk_full):
    disk_full(room=100)
    writer = store.writer(NAME)
    writer.write(b"x" * 60)
    with pytest.raises(StorageFull) as info:
        writer.write(b"y" * 60)  # the first 40 bytes fit, then ENOSPC
    assert info.value.status_code == 507
    assert all_files(root(store)) == []
    with pytest.raises(ValueError, match="after commit or abort"):
        writer.write(b"z")
    writer.abort()


def test_quota_exceeded_is_storage_full(store, disk_full):
    disk_full(room=0, code=errno.EDQUOT)
    writer = store.writer(NAME)
    with pytest.raises(StorageFull):
        writer.write(b"x")
    assert all_files(root(store)) == []


def test_other_io_errors_are_storage_unavailable_not_full(store, disk_full):
    disk_full(room=0, code=errno.EIO)
    writer = store.writer(NAME)
    with pytest.raises(StorageUnavailable) as info:
        writer.write(b"x")
    assert not isinstance(info.value, StorageFull)
    assert "Input/output error" in info.value.detail
    assert all_files(root(store)) == []


def test_disk_full_at_commit_leaves_nothing(store, monkeypatch):
    writer = store.writer(NAME)
    writer.write(b"all written")

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StorageFull):
        writer.commit()
    monkeypatch.undo()
    assert all_files(root(store)) == []


# --- adapter registry ---------------------------------------------------------------------------------------


def test_blob_store_is_cached_and_reset_when_storages_change(settings, tmp_path):
    first = blob_store("blobs")
    assert blob_store("blobs") is first
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    second = blob_store("blobs")
    assert second is not first
    assert Path(second.storage.location) == tmp_path


def test_storage_without_an_adapter_is_improperly_configured(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "memory": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    with pytest.raises(ImproperlyConfigured, match="InMemoryStorage, which has no blob adapter"):
        blob_store("memory")


class LocalFiles(FileSystemStorage):
    """A project's own subclass of a supported backend."""


def test_a_subclass_of_a_backend_gets_its_adapter(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "local": {"BACKEND": f"{__name__}.LocalFiles", "OPTIONS": {"location": str(tmp_path)}},
    }
    assert isinstance(blob_store("local"), FileSystemBlobStore)


def test_a_filesystem_store_imports_no_cloud_sdk(tmp_path):
    # In a fresh interpreter: the first download of a worker used to import boto3, azure and google-cloud
    # whatever the configured backend (about a second, issue 14).
    code = (
        "import sys, django; django.setup(); from blobs.storage import blob_store; blob_store('blobs'); "
        "sdks = ('boto3', 'azure.storage.blob', 'google.cloud.storage'); "
        "print(sorted(m for m in sdks if m in sys.modules))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "erphub.settings", "BLOB_STORAGE_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]


def test_failure_syncing_the_directory_after_rename_leaves_nothing(store, monkeypatch):
    # The rename has happened when the directory fsync fails: the commit failed, so the object must go too.
    writer = store.writer(NAME)
    writer.write(b"all written")
    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StorageUnavailable):
        writer.commit()
    monkeypatch.undo()
    assert len(calls) == 2
    assert all_files(root(store)) == []
