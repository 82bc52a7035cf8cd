"""GCP specifics beyond the contract: CRC32C both ways, the key a blob names, per-call deadline."""

from __future__ import annotations

import os

import pytest

from kms.base import WrappedKey
from kms.exceptions import UnwrapFailed
from kms.providers.gcp import crc32c, crypto_key_of
from kms.tests.conftest import calls
from kms.tests.fakes import crc32c_bitwise


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", 0x00000000), (b"123456789", 0xE3069283), (b"\x00" * 32, 0x8A9136AA), (b"\xff" * 32, 0x62A8AB43)],
)
def test_crc32c_known_answers(data, expected):
    # RFC 3720 §B.4 test vectors (32 zero bytes, 32 0xff bytes) and the classic "123456789" check value.
    assert crc32c(data) == expected
    assert crc32c_bitwise(data) == expected


def test_crypto_key_of_a_version_name():
    ref = "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/12"
    assert crypto_key_of(ref) == "projects/p/locations/l/keyRings/r/cryptoKeys/k"
    assert crypto_key_of("projects/p/locations/l/keyRings/r/cryptoKeys/k") is None


def test_a_corrupted_answer_is_retried(gcp, gcp_fake):
    provider = gcp.provider()
    context = {"blob_id": "b"}
    before = calls("gcp", "wrap", "unavailable")
    gcp_fake.corrupt_next(1)  # ciphertext_crc32c off by one bit
    wrapped = provider.wrap(os.urandom(32), context=context)
    assert calls("gcp", "wrap", "unavailable") - before == 1
    gcp_fake.corrupt_next(1)  # plaintext_crc32c off by one bit
    before = calls("gcp", "unwrap", "unavailable")
    assert len(provider.unwrap(wrapped, context=context)) == 32
    assert calls("gcp", "unwrap", "unavailable") - before == 1


def test_unwrap_calls_the_key_the_blob_names_not_the_configured_one(gcp, gcp_fake):
    old = gcp.provider()
    context = {"blob_id": "b"}
    data_key = os.urandom(32)
    wrapped = old.wrap(data_key, context=context)
    new_name = gcp.options["key_name"] + "-next"
    gcp_fake.create_key(new_name)
    moved = gcp.provider(key_name=new_name)  # KMS_KEY_NAME changed since the blob was written
    assert moved.unwrap(wrapped, context=context) == data_key
    assert moved.rewrap(wrapped, context=context).key_ref.startswith(new_name + "/cryptoKeyVersions/")


def test_a_reference_that_is_not_a_key_version_is_refused_without_a_call(gcp):
    provider = gcp.provider()
    before = calls("gcp", "unwrap")
    with pytest.raises(UnwrapFailed):
        provider.unwrap(WrappedKey(b"x" * 40, "vault:v1", "GOOGLE_SYMMETRIC_ENCRYPTION"), context={})
    assert calls("gcp", "unwrap") == before
