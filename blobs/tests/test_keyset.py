"""blobs.keyset (pure): our hand-encoded Tink keyset is what Tink's own protobuf classes and JSON reader
read, and Tink decrypts our objects with it."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
import tink
from tink import cleartext_keyset_handle, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

from blobs.crypto import StreamParams, encrypt
from blobs.keyset import TYPE_URL, _varint, streaming_key_proto, tink_json_keyset


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (1 << 20, b"\x80\x80\x40"),
    ],
)
def test_varint(value, encoded):
    assert _varint(value) == encoded


@pytest.mark.parametrize(
    "params",
    [
        StreamParams(),
        StreamParams(segment_size=128),
        StreamParams(segment_size=4096, key_size=16, hkdf_hash="sha1"),
    ],
)
def test_the_key_proto_is_what_tinks_protobuf_parses(params):
    dek = os.urandom(32)
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey.FromString(streaming_key_proto(dek, params))
    assert key.version == 0
    assert key.key_value == dek
    assert key.params.ciphertext_segment_size == params.segment_size
    assert key.params.derived_key_size == params.key_size
    assert (
        key.params.hkdf_hash_type == {"sha1": common_pb2.SHA1, "sha256": common_pb2.SHA256}[params.hkdf_hash]
    )


def test_the_json_keyset_shape():
    keyset = json.loads(tink_json_keyset(os.urandom(32), StreamParams(), key_id=42))
    assert keyset["primaryKeyId"] == 42
    [key] = keyset["key"]
    assert key["keyData"]["typeUrl"] == TYPE_URL
    assert (key["status"], key["keyId"], key["outputPrefixType"]) == ("ENABLED", 42, "RAW")
    assert key["keyData"]["keyMaterialType"] == "SYMMETRIC"
    base64.b64decode(key["keyData"]["value"], validate=True)


def test_random_key_ids_fit_a_signed_int():
    ids = {json.loads(tink_json_keyset(os.urandom(32), StreamParams()))["primaryKeyId"] for _ in range(50)}
    assert all(0 < i < 2**31 for i in ids)
    assert len(ids) > 1


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        streaming_key_proto(os.urandom(16), StreamParams())


class _Source(io.BytesIO):
    pass


@pytest.mark.parametrize("size", [0, 1, 71, 72, 73, 1000])
def test_tink_decrypts_our_ciphertext_with_the_exported_keyset(size):
    streaming_aead.register()
    dek, ad = os.urandom(32), os.urandom(16)
    params = StreamParams(segment_size=128)
    plaintext = os.urandom(size)
    ciphertext = encrypt(dek, ad, plaintext, params)
    handle = cleartext_keyset_handle.read(tink.JsonKeysetReader(tink_json_keyset(dek, params)))
    assert handle.keyset_info().key_info[0].output_prefix_type == tink_pb2.RAW
    primitive = handle.primitive(streaming_aead.StreamingAead)
    with primitive.new_decrypting_stream(_Source(ciphertext), ad) as stream:
        assert stream.read() == plaintext
    with (
        pytest.raises(tink.TinkError),
        primitive.new_decrypting_stream(_Source(ciphertext), os.urandom(16)) as s,
    ):
        s.read()
