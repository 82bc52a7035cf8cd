"""The local master-key provider: AES-256-GCM wrap bound to the blob, several keys, key files."""

from __future__ import annotations

import base64
import os
import stat
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kms.base import WrappedKey
from kms.exceptions import KeyNotFound, KeyUnavailable, UnwrapFailed
from kms.providers.local import (
    ALGORITHM,
    LocalKeyProvider,
    add_key_to_file,
    create_key_file,
    new_key_line,
    parse_keys,
)


def b64key(raw: bytes | None = None) -> str:
    return base64.b64encode(raw if raw is not None else os.urandom(32)).decode()


def context(blob_id: uuid.UUID | None = None) -> dict[str, str]:
    return {"blob_id": str(blob_id or uuid.uuid4())}


@pytest.fixture
def provider() -> LocalKeyProvider:
    return LocalKeyProvider(alias="local", keys=f"mk-a:{b64key()},mk-b:{b64key()}")


def test_wrap_unwrap_round_trip(provider):
    data_key = os.urandom(32)
    ctx = context()
    wrapped = provider.wrap(data_key, context=ctx)
    assert wrapped.algorithm == ALGORITHM
    assert data_key not in wrapped.ciphertext
    assert len(wrapped.ciphertext) == 12 + 32 + 16  # nonce || ciphertext || tag
    assert provider.unwrap(wrapped, context=ctx) == data_key


def test_each_wrap_uses_a_fresh_nonce(provider):
    data_key = os.urandom(32)
    ctx = context()
    assert provider.wrap(data_key, context=ctx).ciphertext != provider.wrap(data_key, context=ctx).ciphertext


def test_key_ref_is_the_active_key_id(provider):
    wrapped = provider.wrap(os.urandom(32), context=context())
    assert wrapped.key_ref == "mk-a"  # the first key is active
    assert provider.active_key_ref() == "mk-a"


def test_unwrap_with_another_blobs_context_fails(provider):
    wrapped = provider.wrap(os.urandom(32), context=context())
    with pytest.raises(UnwrapFailed):
        provider.unwrap(wrapped, context=context())


def test_tampered_wrapped_key_fails(provider):
    ctx = context()
    wrapped = provider.wrap(os.urandom(32), context=ctx)
    flipped = bytearray(wrapped.ciphertext)
    flipped[-1] ^= 0x01
    with pytest.raises(UnwrapFailed):
        provider.unwrap(WrappedKey(bytes(flipped), wrapped.key_ref, wrapped.algorithm), context=ctx)


def test_unwrap_under_the_wrong_configured_key_fails(provider):
    # Same bytes recorded as wrapped by the other (configured) key: the tag does not verify.
    ctx = context()
    wrapped = provider.wrap(os.urandom(32), context=ctx)
    with pytest.raises(UnwrapFailed):
        provider.unwrap(WrappedKey(wrapped.ciphertext, "mk-b", wrapped.algorithm), context=ctx)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: WrappedKey(w.ciphertext, w.key_ref, "AES-128-CBC"),
        lambda w: WrappedKey(w.ciphertext[:12], w.key_ref, w.algorithm),
        lambda w: WrappedKey(b"", w.key_ref, w.algorithm),
    ],
    ids=["unknown-algorithm", "nonce-only", "empty"],
)
def test_malformed_wrapped_key_fails(provider, mutate):
    ctx = context()
    with pytest.raises(UnwrapFailed):
        provider.unwrap(mutate(provider.wrap(os.urandom(32), context=ctx)), context=ctx)


def test_unknown_key_ref_is_key_not_found(provider):
    ctx = context()
    wrapped = provider.wrap(os.urandom(32), context=ctx)
    with pytest.raises(KeyNotFound) as info:
        provider.unwrap(WrappedKey(wrapped.ciphertext, "mk-retired", wrapped.algorithm), context=ctx)
    assert info.value.key_ref == "mk-retired"
    assert info.value.provider == "local"
    assert "mk-retired" in str(info.value)
    assert "Restore it there from backup and restart the app" in str(info.value)
    assert "BLOB_MASTER_KEYS" in str(info.value)


def test_a_running_provider_picks_up_a_key_added_by_another_process(tmp_path):
    # Two providers over one file: a worker that loaded its keys before `local_master_key --add` ran, and
    # a process started after it, which wraps new blobs under the new key.
    key_file = tmp_path / "master.key"
    assert create_key_file(key_file)
    worker = LocalKeyProvider(alias="local", key_file=str(key_file))
    old_id = worker.active_key_ref()
    new_id = add_key_to_file(key_file)
    restarted = LocalKeyProvider(alias="local", key_file=str(key_file))
    data_key, ctx = os.urandom(32), context()
    wrapped = restarted.wrap(data_key, context=ctx)
    assert wrapped.key_ref == new_id
    assert worker.active_key_ref() == old_id  # nothing re-read until a blob names an unknown key

    assert worker.unwrap(wrapped, context=ctx) == data_key
    assert worker.active_key_ref() == new_id  # the re-read file's first key is active from now on


def test_concurrent_unwraps_of_a_new_key_reread_the_file_once(tmp_path, monkeypatch):
    key_file = tmp_path / "master.key"
    assert create_key_file(key_file)
    worker = LocalKeyProvider(alias="local", key_file=str(key_file))
    worker.active_key_ref()
    add_key_to_file(key_file)
    data_key, ctx = os.urandom(32), context()
    wrapped = LocalKeyProvider(alias="local", key_file=str(key_file)).wrap(data_key, context=ctx)

    reads: list[Path] = []
    real_read_text = Path.read_text

    def counting_read_text(self, *args, **kwargs):
        reads.append(self)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting_read_text)
    threads = 8
    start = threading.Barrier(threads)

    def unwrap() -> bytes:
        start.wait()
        return worker.unwrap(wrapped, context=ctx)

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda _: unwrap(), range(threads)))
    assert results == [data_key] * threads
    assert reads == [key_file]


def test_a_key_missing_from_the_file_after_a_reread_is_key_not_found(tmp_path):
    key_file = tmp_path / "master.key"
    assert create_key_file(key_file)
    provider = LocalKeyProvider(alias="local", key_file=str(key_file))
    ctx = context()
    wrapped = provider.wrap(os.urandom(32), context=ctx)
    with pytest.raises(KeyNotFound) as info:
        provider.unwrap(WrappedKey(wrapped.ciphertext, "mk-retired", wrapped.algorithm), context=ctx)
    message = str(info.value)
    assert f"'mk-retired' is not in the key file {key_file}" in message
    assert "Restore it there from backup and restart the app" in message


@pytest.mark.parametrize("damage", ["garbage", "deleted"])
def test_a_failed_reread_keeps_the_keys_already_loaded(tmp_path, damage):
    key_file = tmp_path / "master.key"
    assert create_key_file(key_file)
    provider = LocalKeyProvider(alias="local", key_file=str(key_file))
    active = provider.active_key_ref()
    data_key, ctx = os.urandom(32), context()
    wrapped = provider.wrap(data_key, context=ctx)
    if damage == "garbage":
        key_file.write_text("half-written\n")
    else:
        key_file.unlink()
    with pytest.raises(KeyNotFound):
        provider.unwrap(WrappedKey(wrapped.ciphertext, "mk-unknown", wrapped.algorithm), context=ctx)
    assert provider.unwrap(wrapped, context=ctx) == data_key
    assert provider.active_key_ref() == active
    assert provider.wrap(os.urandom(32), context=ctx).key_ref == active


def test_old_key_still_unwraps_after_a_new_key_is_prepended(tmp_path):
    key_file = tmp_path / "master.key"
    assert create_key_file(key_file)
    first = LocalKeyProvider(alias="local", key_file=str(key_file))
    old_id = first.active_key_ref()
    data_key, ctx = os.urandom(32), context()
    old_wrap = first.wrap(data_key, context=ctx)
    assert old_wrap.key_ref == old_id

    new_id = add_key_to_file(key_file)
    assert new_id != old_id
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (tmp_path / "master.key.tmp").exists()
    assert [key_id for key_id, _ in parse_keys(key_file.read_text(), source="test")] == [new_id, old_id]

    rotated = LocalKeyProvider(alias="local", key_file=str(key_file))
    assert rotated.active_key_ref() == new_id
    assert rotated.wrap(os.urandom(32), context=context()).key_ref == new_id
    assert rotated.unwrap(old_wrap, context=ctx) == data_key


def test_create_if_missing_creates_a_0600_key_file(tmp_path):
    key_file = tmp_path / "sub" / "master.key"
    provider = LocalKeyProvider(alias="local", key_file=str(key_file), create_if_missing=True)
    ctx = context()
    data_key = os.urandom(32)
    wrapped = provider.wrap(data_key, context=ctx)
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    keys = parse_keys(key_file.read_text(), source="test")
    assert len(keys) == 1
    assert wrapped.key_ref == keys[0][0]
    # A second provider reads the same file instead of inventing another key.
    again = LocalKeyProvider(alias="local", key_file=str(key_file), create_if_missing=True)
    assert again.unwrap(wrapped, context=ctx) == data_key
    assert key_file.read_text().count("\n") == 1


def test_create_key_file_keeps_an_existing_file(tmp_path):
    key_file = tmp_path / "master.key"
    assert create_key_file(key_file) is True
    before = key_file.read_text()
    assert create_key_file(key_file) is False
    assert key_file.read_text() == before


def test_missing_key_file_without_create_is_key_unavailable(tmp_path):
    missing = tmp_path / "nope.key"
    provider = LocalKeyProvider(alias="local", key_file=str(missing), create_if_missing=False)
    with pytest.raises(KeyUnavailable, match="cannot be read"):
        provider.wrap(os.urandom(32), context=context())
    assert not missing.exists()


def test_no_key_configured_is_key_unavailable():
    with pytest.raises(KeyUnavailable, match="No local master key"):
        LocalKeyProvider(alias="local").wrap(os.urandom(32), context=context())


def test_inline_keys_win_over_the_key_file(tmp_path):
    missing = tmp_path / "never-created.key"
    provider = LocalKeyProvider(
        alias="local", keys=f"mk-inline:{b64key()}", key_file=str(missing), create_if_missing=True
    )
    assert provider.active_key_ref() == "mk-inline"
    assert not missing.exists()


def test_key_file_comments_and_blank_lines_are_ignored(tmp_path):
    key_file = tmp_path / "master.key"
    key_file.write_text(f"# backup me\n\nmk-one:{b64key()}\n  \nmk-two:{b64key()}\n")
    assert [k for k, _ in parse_keys(key_file.read_text(), source="f")] == ["mk-one", "mk-two"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# only a comment", "no master key found"),
        (" , ,", "no master key found"),
        ("justakey", "is not 'id:base64key'"),
        (f":{b64key()}", "is not 'id:base64key'"),
        (f"bad id!:{b64key()}", "is not 'id:base64key'"),
        ("mk-1:not*base64", "is not valid base64"),
        (f"mk-1:{b64key(os.urandom(16))}", "is 16 bytes; master keys are 32 bytes"),
        (f"mk-1:{b64key()},mk-1:{b64key()}", "appears twice"),
    ],
)
def test_malformed_key_strings_are_key_unavailable_with_a_clear_message(text, message):
    provider = LocalKeyProvider(alias="local", keys=text)
    with pytest.raises(KeyUnavailable) as info:
        provider.wrap(os.urandom(32), context=context())
    assert message in str(info.value)
    assert "BLOB_MASTER_KEYS" in str(info.value)  # says where the bad value came from
    assert info.value.provider == "local"


def test_malformed_key_file_names_the_file(tmp_path):
    key_file = tmp_path / "master.key"
    key_file.write_text("mk-1:short\n")
    with pytest.raises(KeyUnavailable) as info:
        LocalKeyProvider(alias="local", key_file=str(key_file)).wrap(os.urandom(32), context=context())
    assert str(key_file) in str(info.value)


def test_add_key_refuses_a_malformed_file(tmp_path):
    key_file = tmp_path / "master.key"
    key_file.write_text("garbage\n")
    with pytest.raises(KeyUnavailable):
        add_key_to_file(key_file)
    assert key_file.read_text() == "garbage\n"


def test_new_key_line_is_a_valid_key():
    ((key_id, key),) = parse_keys(new_key_line(), source="test")
    assert key_id.startswith("mk-")
    assert len(key) == 32


def test_error_messages_never_contain_key_material():
    secret = b64key()
    with pytest.raises(KeyUnavailable) as info:
        parse_keys(f"mk-1:{secret},mk-1:{secret}", source="BLOB_MASTER_KEYS")
    assert secret not in str(info.value)


def test_repr_and_str_never_contain_key_material(tmp_path):
    raw = os.urandom(32)
    secret = b64key(raw)
    provider = LocalKeyProvider(alias="local", keys=f"mk-secret:{secret}")
    wrapped = provider.wrap(os.urandom(32), context=context())  # keys loaded
    for text in (repr(provider), str(provider), repr(wrapped), str(wrapped)):
        assert secret not in text
        assert raw.hex() not in text
        assert repr(raw) not in text
    assert repr(wrapped.ciphertext) not in repr(wrapped)
    assert "local" in repr(provider)
