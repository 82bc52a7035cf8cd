"""One blob's data key as a Tink JSON keyset, for disaster recovery (architecture §3, disaster-recovery.md).

Our objects are exactly Tink AES-GCM-HKDF-Streaming ciphertexts, so any Tink implementation decrypts one
given this keyset and the blob id's 16 raw bytes as associated data. Pure: no Django, no protobuf runtime
(production does not install one): the two small messages are encoded here by hand, following the
protobuf wire format (varint and length-delimited fields) and Tink's ``aes_gcm_hkdf_streaming.proto``:

    AesGcmHkdfStreamingParams { uint32 ciphertext_segment_size = 1; uint32 derived_key_size = 2;
                                HashType hkdf_hash_type = 3; }
    AesGcmHkdfStreamingKey    { uint32 version = 1; AesGcmHkdfStreamingParams params = 2;
                                bytes key_value = 3; }

and ``tink.proto``'s JSON keyset (``primaryKeyId``, ``key[].keyData{typeUrl, value, keyMaterialType}``,
``status``, ``keyId``, ``outputPrefixType``). Streaming AEAD keys are RAW: nothing precedes the ciphertext.
"""

from __future__ import annotations

import base64
import json
import secrets

from .crypto import StreamParams

TYPE_URL = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey"
# common.proto HashType values.
HASH_TYPES = {"sha1": 1, "sha256": 3, "sha512": 4}
KEY_VERSION = 0


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("protobuf varints here are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _uint_field(number: int, value: int) -> bytes:
    # proto3 omits a scalar equal to its default (0); parsers accept either.
    return _varint(number << 3) + _varint(value) if value else b""


def _bytes_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def streaming_key_proto(data_key: bytes, params: StreamParams) -> bytes:
    """The serialized ``AesGcmHkdfStreamingKey`` for ``data_key`` (the HKDF input key) and ``params``."""
    if len(data_key) < params.key_size:
        raise ValueError(f"the data key must be at least {params.key_size} bytes (Tink's rule)")
    encoded_params = (
        _uint_field(1, params.segment_size)
        + _uint_field(2, params.key_size)
        + _uint_field(3, HASH_TYPES[params.hkdf_hash])
    )
    return _uint_field(1, KEY_VERSION) + _bytes_field(2, encoded_params) + _bytes_field(3, data_key)


def tink_json_keyset(data_key: bytes, params: StreamParams, *, key_id: int | None = None) -> str:
    """A cleartext Tink JSON keyset holding one ENABLED, RAW AES-GCM-HKDF-Streaming key."""
    # Tink key ids are uint32; stay below 2**31 for implementations that read them as signed ints.
    key_id = secrets.randbelow(2**31 - 1) + 1 if key_id is None else key_id
    keyset = {
        "primaryKeyId": key_id,
        "key": [
            {
                "keyData": {
                    "typeUrl": TYPE_URL,
                    "value": base64.b64encode(streaming_key_proto(data_key, params)).decode("ascii"),
                    "keyMaterialType": "SYMMETRIC",
                },
                "status": "ENABLED",
                "keyId": key_id,
                "outputPrefixType": "RAW",
            }
        ],
    }
    return json.dumps(keyset, indent=2)
