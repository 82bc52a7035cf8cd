"""The blob format (blobs/crypto.py, architecture §3): Tink AES-GCM-HKDF-Streaming, read strictly."""

from __future__ import annotations

import io
import itertools
import os
import tracemalloc
from pathlib import Path

import pytest
import tink
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tink import secret_key_access, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

from blobs import crypto
from blobs.crypto import (
    DEFAULT_PARAMS,
    NONCE_PREFIX_SIZE,
    TAG_SIZE,
    Decryptor,
    Encryptor,
    FormatError,
    IntegrityError,
    ParameterError,
    StreamParams,
    decrypt,
    encrypt,
)


class PinnedEncryptor(Encryptor):
    """Test-only: an :class:`Encryptor` whose salt and nonce prefix are given, for the known-answer vector and
    for comparing two encryptions byte for byte. Production has no such knob: the same salt and nonce
    prefix under the same key and associated data reuse GCM nonces."""

    __slots__ = ("_pinned",)

    def __init__(
        self,
        ikm: bytes,
        associated_data: bytes,
        params: StreamParams = DEFAULT_PARAMS,
        *,
        salt: bytes,
        nonce_prefix: bytes,
    ) -> None:
        self._pinned = (salt, nonce_prefix)
        super().__init__(ikm, associated_data, params)

    def _salt_and_nonce_prefix(self, params: StreamParams) -> tuple[bytes, bytes]:
        return self._pinned


def pinned_encrypt(
    ikm: bytes,
    associated_data: bytes,
    plaintext: bytes,
    params: StreamParams = DEFAULT_PARAMS,
    *,
    salt: bytes,
    nonce_prefix: bytes,
) -> bytes:
    """:func:`blobs.crypto.encrypt` under a given salt and nonce prefix (one shot, as ``encrypt`` does)."""
    enc = PinnedEncryptor(ikm, associated_data, params, salt=salt, nonce_prefix=nonce_prefix)
    return enc.seal_all(plaintext)


# --- Known-answer vector (from Tink's cross-language streaming AEAD tests; architecture.md §3) ------

KAT_IKM = bytes.fromhex("6eb56cdc726dfbe5d57f2fcdc6e9345b")
KAT_AD = b"aad"
KAT_PARAMS = StreamParams(segment_size=64, key_size=16, hkdf_hash="sha1")
KAT_SALT = bytes.fromhex("93b3af5e14ab378d065addfc8484da64")
KAT_NONCE_PREFIX = bytes.fromhex("2c0862877baea8")
KAT_PLAINTEXT = b"This is a fairly long plaintext. It is of the exact length to create three output blocks. "
KAT_CIPHERTEXT = bytes.fromhex(
    "18" "93b3af5e14ab378d065addfc8484da64" "2c0862877baea8"
    "db92d9c77406a406168478821c4298eab3e6d531277f4c1a051714faebcaefcbca7b7be05e9445ea"
    "a0bb2904153398a25084dd80ae0edcd1c3079fcea2cd3770630ee36f7539207b8ec9d754956d486b"
    "71cdf989f0ed6fba6779b63558be0a66e668df14e1603cd2"
    "af8944844078345286d0b292e772e7190775c51a0f83e40c0b75821027e7e538e111"
)  # fmt: skip
# header 24 | C_0 40 (24 plaintext) | C_1 64 (48) | C_2 34 (18, last)
KAT_SEGMENTS = [(24, 40), (64, 64), (128, 34)]

DEK = bytes(range(32))
AD = bytes.fromhex("6f1c2a3b4c5d4e6f8a9b0c1d2e3f4051")  # a blob UUID's 16 raw bytes
SMALL = StreamParams(segment_size=256)  # production key size and hash, small segments: 200 | 240 | ...


def _data(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking plaintext (cheaper than os.urandom for big sizes)."""
    block = bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(4096))
    return (block * (n // len(block) + 1))[:n]


def _decryptor(ct: bytes, size: int, params: StreamParams = SMALL, *, ikm: bytes = DEK, ad: bytes = AD):
    return Decryptor(ikm, ad, ct[: params.header_size], plaintext_size=size, params=params)


def _iter_all(ct: bytes, size: int, params: StreamParams = SMALL, **kw) -> bytes:
    dec = _decryptor(ct, size, params, **kw)
    return b"".join(dec.iter_all(io.BytesIO(ct[params.header_size :])))


# --- Parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "header_size", "first", "ps"),
    [
        ({}, 40, (1 << 20) - 56, (1 << 20) - 16),
        ({"segment_size": 4096, "key_size": 16, "hkdf_hash": "sha1"}, 24, 4096 - 40, 4080),
        ({"segment_size": 57}, 40, 1, 41),  # smallest Tink accepts for a 32-byte key
        ({"segment_size": 41, "key_size": 16, "hkdf_hash": "sha512"}, 24, 1, 25),  # ... and a 16-byte key
        ({"segment_size": (1 << 31) - 1}, 40, (1 << 31) - 57, (1 << 31) - 17),
    ],
)
def test_params_valid(kwargs, header_size, first, ps):
    params = StreamParams(**kwargs)
    assert (params.header_size, params.first_segment_plaintext, params.segment_plaintext) == (
        header_size,
        first,
        ps,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"segment_size": 56},  # == header + tag: Tink's "ciphertext_segment_size too small"
        {"segment_size": 40, "key_size": 16},
        {"segment_size": 0},
        {"segment_size": -1},
        {"segment_size": 1 << 31},  # beyond Tink-Java's int
        {"segment_size": 4096.0},
        {"segment_size": True},
        {"key_size": 24},
        {"key_size": 0},
        {"key_size": "32"},
        {"hkdf_hash": "md5"},
        {"hkdf_hash": "SHA256"},
    ],
)
def test_params_invalid(kwargs):
    with pytest.raises(ParameterError):
        StreamParams(**kwargs)


def test_parameter_error_is_value_error_and_format_error():
    assert issubclass(ParameterError, ValueError)
    assert issubclass(ParameterError, FormatError)
    assert issubclass(IntegrityError, FormatError)
    assert not issubclass(IntegrityError, ValueError)


@pytest.mark.parametrize(
    ("params", "plaintext_size", "segments", "ciphertext_size"),
    [
        (DEFAULT_PARAMS, 0, 1, 56),  # architecture.md §3: the empty blob is 56 bytes
        (DEFAULT_PARAMS, 1, 1, 57),
        (DEFAULT_PARAMS, (1 << 20) - 56, 1, 1 << 20),
        (DEFAULT_PARAMS, (1 << 20) - 55, 2, (1 << 20) + 17),
        (DEFAULT_PARAMS, 2 * (1 << 20) - 72, 2, 2 << 20),  # boundary: full last segment, no empty one
        (KAT_PARAMS, 90, 3, 162),
        (KAT_PARAMS, 24, 1, 64),
        (KAT_PARAMS, 25, 2, 81),
        (KAT_PARAMS, 72, 2, 128),
        (KAT_PARAMS, 73, 3, 145),
        (SMALL, 0, 1, 56),
        (SMALL, 200, 1, 256),
        (SMALL, 440, 2, 512),
        (SMALL, 441, 3, 529),
    ],
)
def test_sizes(params, plaintext_size, segments, ciphertext_size):
    assert params.segment_count(plaintext_size) == segments
    assert params.ciphertext_size(plaintext_size) == ciphertext_size
    assert params.plaintext_size(ciphertext_size) == plaintext_size


@pytest.mark.parametrize("params", [KAT_PARAMS, SMALL, StreamParams(segment_size=57)])
def test_plaintext_size_is_exact_inverse(params):
    image = {params.ciphertext_size(n): n for n in range(6 * params.segment_size)}
    for ct_size in range(max(image)):
        if ct_size in image:
            assert params.plaintext_size(ct_size) == image[ct_size]
        else:
            with pytest.raises(IntegrityError):
                params.plaintext_size(ct_size)


def test_size_limits():
    params = KAT_PARAMS
    top = params.max_plaintext_size
    assert params.segment_count(top) == 1 << 32
    with pytest.raises(ParameterError):
        params.segment_count(top + 1)
    with pytest.raises(ParameterError):
        params.segment_count(-1)
    assert params.plaintext_size(params.ciphertext_size(top)) == top
    with pytest.raises(IntegrityError):
        params.plaintext_size(params.ciphertext_size(top) + params.segment_size)
    with pytest.raises(ParameterError):
        params.locate(top + 1)
    with pytest.raises(ParameterError):
        params.locate(-1)


@pytest.mark.parametrize("params", [KAT_PARAMS, SMALL])
def test_locate_and_segment_span_match_layout(params):
    size = 5 * params.segment_size + 7
    ct = encrypt(DEK, AD, _data(size), params)
    count = params.segment_count(size)
    # Walk the layout the slow way: segment i holds plaintext [pt_start, pt_start + pt_len).
    pt_start, ct_start = 0, params.header_size
    for index in range(count):
        offset, length = params.segment_span(index, size)
        assert offset == ct_start
        pt_len = length - TAG_SIZE
        dec = _decryptor(ct, size, params)
        assert (
            dec.decrypt_segment(index, ct[offset : offset + length])
            == _data(size)[pt_start : pt_start + pt_len]
        )
        for within in range(pt_len):
            assert params.locate(pt_start + within) == (index, within)
        pt_start += pt_len
        ct_start += length
    assert (pt_start, ct_start) == (size, len(ct))
    with pytest.raises(ParameterError):
        params.segment_span(count, size)


# --- Known-answer vector --------------------------------------------------------------------------


def _kat_encryptor() -> Encryptor:
    return PinnedEncryptor(KAT_IKM, KAT_AD, KAT_PARAMS, salt=KAT_SALT, nonce_prefix=KAT_NONCE_PREFIX)


def test_kat_encrypt():
    ct = pinned_encrypt(
        KAT_IKM, KAT_AD, KAT_PLAINTEXT, KAT_PARAMS, salt=KAT_SALT, nonce_prefix=KAT_NONCE_PREFIX
    )
    assert ct.hex() == KAT_CIPHERTEXT.hex()


@pytest.mark.parametrize("chunk", [1, 7, 24, 48, 89, 90, 1000])
def test_kat_encrypt_streaming(chunk):
    enc = _kat_encryptor()
    parts = [enc.update(KAT_PLAINTEXT[i : i + chunk]) for i in range(0, len(KAT_PLAINTEXT), chunk)]
    parts.append(enc.finalize())
    assert b"".join(parts) == KAT_CIPHERTEXT
    assert next(p for p in parts if p).startswith(enc.header)
    assert (enc.plaintext_size, enc.ciphertext_size) == (90, 162)


def test_kat_decrypt():
    assert decrypt(KAT_IKM, KAT_AD, KAT_CIPHERTEXT, KAT_PARAMS) == KAT_PLAINTEXT
    assert _iter_all(KAT_CIPHERTEXT, 90, KAT_PARAMS, ikm=KAT_IKM, ad=KAT_AD) == KAT_PLAINTEXT
    dec = _decryptor(KAT_CIPHERTEXT, 90, KAT_PARAMS, ikm=KAT_IKM, ad=KAT_AD)
    assert dec.ciphertext_size == len(KAT_CIPHERTEXT)
    assert [KAT_PARAMS.segment_span(i, 90) for i in range(3)] == KAT_SEGMENTS
    for start in range(91):
        for stop in range(start, 91):
            offset, length = dec.span(start, stop)
            raw = io.BytesIO(KAT_CIPHERTEXT[offset : offset + length])
            assert b"".join(dec.iter_range(raw, start, stop)) == KAT_PLAINTEXT[start:stop]
            assert raw.tell() == length


# --- Interoperability with Tink itself ------------------------------------------------------------


class _KeepOpen(io.BytesIO):
    """Tink's streams close the file objects they are given; keep the buffer readable afterwards."""

    def close(self) -> None:
        self.close_called = True


def _tink_primitive(dek: bytes, params: StreamParams):
    streaming_aead.register()
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(
        version=0,
        key_value=dek,
        params=aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
            ciphertext_segment_size=params.segment_size,
            derived_key_size=params.key_size,
            hkdf_hash_type={
                "sha1": common_pb2.SHA1,
                "sha256": common_pb2.SHA256,
                "sha512": common_pb2.SHA512,
            }[params.hkdf_hash],
        ),
    )
    keyset = tink_pb2.Keyset(
        primary_key_id=1,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url="type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey",
                    value=key.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=1,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return handle.primitive(streaming_aead.StreamingAead)


def _tink_encrypt(params: StreamParams, plaintext: bytes) -> bytes:
    sink = _KeepOpen()
    with _tink_primitive(DEK, params).new_encrypting_stream(sink, AD) as stream:
        stream.write(plaintext)
    return sink.getvalue()


def _tink_decrypt(params: StreamParams, ciphertext: bytes) -> bytes:
    with _tink_primitive(DEK, params).new_decrypting_stream(_KeepOpen(ciphertext), AD) as stream:
        return stream.read()


def _boundary_sizes(params: StreamParams, segments: int = 3) -> list[int]:
    sizes = {0, 1}
    for k in range(segments):
        edge = params.first_segment_plaintext + k * params.segment_plaintext
        sizes |= {edge - 1, edge, edge + 1}
    return sorted(sizes)


INTEROP_CASES = [(SMALL, n) for n in [*_boundary_sizes(SMALL), 5000]] + [
    (StreamParams(segment_size=4096, key_size=16, hkdf_hash="sha1"), 10_000),
    (StreamParams(segment_size=100, hkdf_hash="sha512"), 1000),
    (DEFAULT_PARAMS, 3 * (1 << 20) + 5),
]


@pytest.mark.parametrize(("params", "size"), INTEROP_CASES)
def test_tink_decrypts_ours(params, size):
    plaintext = _data(size)
    ct = encrypt(DEK, AD, plaintext, params)
    assert len(ct) == params.ciphertext_size(size)
    assert _tink_decrypt(params, ct) == plaintext


@pytest.mark.parametrize(("params", "size"), INTEROP_CASES)
def test_we_decrypt_tinks(params, size):
    plaintext = _data(size, seed=1)
    ct = _tink_encrypt(params, plaintext)
    assert len(ct) == params.ciphertext_size(size)
    assert decrypt(DEK, AD, ct, params) == plaintext
    assert _iter_all(ct, size, params) == plaintext
    if size:
        dec = _decryptor(ct, size, params)
        start, stop = size // 3, size - size // 4
        offset, length = dec.span(start, stop)
        raw = io.BytesIO(ct[offset : offset + length])
        assert b"".join(dec.iter_range(raw, start, stop)) == plaintext[start:stop]


@pytest.mark.parametrize("chunk", [1000, 65536, 1 << 20])
def test_tink_decrypts_streamed_output(chunk):
    plaintext = _data(3 * (1 << 20) + 5)
    enc = Encryptor(DEK, AD)
    parts = [enc.update(plaintext[i : i + chunk]) for i in range(0, len(plaintext), chunk)]
    ct = b"".join([*parts, enc.finalize()])
    assert _tink_decrypt(DEFAULT_PARAMS, ct) == plaintext


# --- Properties -----------------------------------------------------------------------------------

params_strategy = st.builds(
    StreamParams,
    segment_size=st.integers(min_value=57, max_value=400),
    key_size=st.just(32),
    hkdf_hash=st.sampled_from(["sha256", "sha1", "sha512"]),
) | st.builds(StreamParams, segment_size=st.integers(min_value=41, max_value=200), key_size=st.just(16))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=params_strategy, size=st.integers(min_value=0, max_value=3000), data=st.data())
def test_iter_range_matches_slice(params, size, data):
    plaintext = _data(size, seed=size)
    ct = encrypt(DEK, AD, plaintext, params)
    dec = _decryptor(ct, size, params)
    start = data.draw(st.integers(min_value=0, max_value=size), label="start")
    stop = data.draw(st.integers(min_value=start, max_value=size), label="stop")
    offset, length = dec.span(start, stop)

    # Positioned in the whole object: reads exactly the span.
    raw = io.BytesIO(ct)
    raw.seek(offset)
    assert b"".join(dec.iter_range(raw, start, stop)) == plaintext[start:stop]
    assert raw.tell() == offset + length

    # Only the span is needed.
    sliced = io.BytesIO(ct[offset : offset + length])
    assert b"".join(dec.iter_range(sliced, start, stop)) == plaintext[start:stop]
    if start < stop:
        first, last = params.locate(start)[0], params.locate(stop - 1)[0]
        assert offset == params.segment_span(first, size)[0]
        assert offset + length == sum(params.segment_span(last, size))
    else:
        assert length == 0


@settings(deadline=None)
@given(
    params=params_strategy,
    size=st.integers(min_value=0, max_value=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
    kinds=st.lists(st.sampled_from([bytes, bytearray, memoryview]), min_size=1, max_size=3),
)
def test_chunked_update_equals_one_shot(params, size, cuts, kinds):
    plaintext = _data(size)
    salt, prefix = os.urandom(params.key_size), os.urandom(7)
    expected = pinned_encrypt(DEK, AD, plaintext, params, salt=salt, nonce_prefix=prefix)
    enc = PinnedEncryptor(DEK, AD, params, salt=salt, nonce_prefix=prefix)
    bounds = sorted({0, size, *(c for c in cuts if c <= size)})
    out = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        part = enc.update(kinds[i % len(kinds)](plaintext[lo:hi]))
        assert isinstance(part, bytes)
        out.append(part)
        assert enc.plaintext_size == hi
        assert enc.ciphertext_size == sum(map(len, out))
        # Held back: at most one segment's worth of ciphertext plus the header is outstanding.
        assert params.ciphertext_size(hi) - enc.ciphertext_size <= params.segment_size + params.header_size
    out.append(enc.finalize())
    assert b"".join(out) == expected
    assert enc.ciphertext_size == len(expected) == params.ciphertext_size(size)
    assert decrypt(DEK, AD, expected, params) == plaintext
    assert _iter_all(expected, size, params) == plaintext


@given(segment_size=st.integers(min_value=57, max_value=(1 << 31) - 1), data=st.data())
def test_size_functions_agree(segment_size, data):
    params = StreamParams(segment_size=segment_size)
    top = params.max_plaintext_size
    size = data.draw(st.integers(min_value=0, max_value=top) | st.sampled_from([0, top]), label="size")
    ct_size = params.ciphertext_size(size)
    assert params.plaintext_size(ct_size) == size
    count = params.segment_count(size)
    last_offset, last_length = params.segment_span(count - 1, size)
    assert last_offset + last_length == ct_size
    assert last_length > TAG_SIZE or size == 0
    if size:
        index, within = params.locate(size - 1)
        assert index == count - 1
        assert within == last_length - TAG_SIZE - 1


# --- Tampering: every change is an IntegrityError -------------------------------------------------


def _rejects(ct: bytes, size: int = 90, params: StreamParams = KAT_PARAMS, **kw) -> None:
    """Assert that both strict whole-object paths refuse `ct` without releasing unauthenticated data."""
    ikm, ad = kw.get("ikm", KAT_IKM), kw.get("ad", KAT_AD)
    with pytest.raises(IntegrityError):
        decrypt(ikm, ad, ct, params)
    yielded = []
    with pytest.raises(IntegrityError):  # noqa: PT012 - the constructor or the iteration may refuse
        dec = Decryptor(ikm, ad, ct[: params.header_size], plaintext_size=size, params=params)
        yielded.extend(dec.iter_all(io.BytesIO(ct[params.header_size :])))
    assert len(b"".join(yielded)) < max(size, 1)


@pytest.mark.parametrize(
    ("region", "start", "length"),
    [("header", 0, 24), *((f"segment {i}", off, n) for i, (off, n) in enumerate(KAT_SEGMENTS))],
)
def test_every_bit_flip_rejected(region, start, length):
    for byte in range(start, start + length):
        for bit in range(8):
            tampered = bytearray(KAT_CIPHERTEXT)
            tampered[byte] ^= 1 << bit
            _rejects(bytes(tampered))
            if region != "header":
                # A range read touching only the damaged segment refuses it too.
                index = next(i for i, (off, n) in enumerate(KAT_SEGMENTS) if off <= byte < off + n)
                dec = _decryptor(KAT_CIPHERTEXT, 90, KAT_PARAMS, ikm=KAT_IKM, ad=KAT_AD)
                offset, n = KAT_SEGMENTS[index]
                with pytest.raises(IntegrityError):
                    dec.decrypt_segment(index, tampered[offset : offset + n])


def test_every_truncation_rejected():
    # Every prefix: at segment boundaries (64, 128) the last-segment flag is missing, between them tags fail.
    for cut in range(len(KAT_CIPHERTEXT)):
        _rejects(KAT_CIPHERTEXT[:cut])


def test_truncated_range_read_rejected():
    dec = _decryptor(KAT_CIPHERTEXT, 90, KAT_PARAMS, ikm=KAT_IKM, ad=KAT_AD)
    offset, length = dec.span(10, 80)
    for cut in range(length):
        with pytest.raises(IntegrityError):
            list(dec.iter_range(io.BytesIO(KAT_CIPHERTEXT[offset : offset + cut]), 10, 80))


@pytest.mark.parametrize("extra", [b"\x00", b"garbage", bytes(16), bytes(64), KAT_CIPHERTEXT[64:128]])
def test_trailing_bytes_rejected(extra):
    _rejects(KAT_CIPHERTEXT + extra)


def test_trailing_bytes_rejected_for_empty_object():
    ct = encrypt(DEK, AD, b"", SMALL)
    assert len(ct) == 56
    assert _iter_all(ct, 0) == b""
    _rejects(ct + b"\x00", size=0, params=SMALL, ikm=DEK, ad=AD)
    _rejects(ct[:-1], size=0, params=SMALL, ikm=DEK, ad=AD)


def test_reordered_segments_rejected():
    size = 200 + 4 * 240 + 10  # segments: 200 | 240 | 240 | 240 | 240 | 10
    ct = encrypt(DEK, AD, _data(size), SMALL)
    segs = [ct[off : off + n] for off, n in (SMALL.segment_span(i, size) for i in range(6))]
    header = ct[:40]
    for order in ([0, 2, 1, 3, 4, 5], [0, 1, 2, 4, 3, 5], [0, 4, 2, 3, 1, 5], [0, 1, 1, 3, 4, 5]):
        _rejects(header + b"".join(segs[i] for i in order), size, SMALL, ikm=DEK, ad=AD)
    # Drop a middle segment; or the last one, leaving a full segment without the last flag.
    _rejects(header + b"".join(segs[:2] + segs[3:]), size - 240, SMALL, ikm=DEK, ad=AD)
    _rejects(header + b"".join(segs[:5]), size - 10, SMALL, ikm=DEK, ad=AD)
    dec = _decryptor(ct, size)
    with pytest.raises(IntegrityError):
        dec.decrypt_segment(1, segs[2])
    with pytest.raises(IntegrityError):
        dec.decrypt_segment(5, segs[4])  # wrong length for the last segment
    with pytest.raises(ParameterError):
        dec.decrypt_segment(6, segs[5])


def test_segments_from_another_object_rejected():
    size = 1000
    a, b = encrypt(DEK, AD, _data(size), SMALL), encrypt(DEK, AD, _data(size), SMALL)
    _rejects(a[:40] + b[40:], size, SMALL, ikm=DEK, ad=AD)
    _rejects(a[:256] + b[256:], size, SMALL, ikm=DEK, ad=AD)


@pytest.mark.parametrize(
    ("ikm", "ad"),
    [
        (DEK, AD[:-1] + b"\x00"),  # another blob's id
        (DEK, b""),
        (bytes(32), AD),  # another key
        (DEK[:16] + bytes(16), AD),
    ],
)
def test_wrong_key_or_associated_data_rejected(ikm, ad):
    size = 500
    ct = encrypt(DEK, AD, _data(size), SMALL)
    _rejects(ct, size, SMALL, ikm=ikm, ad=ad)
    dec = _decryptor(ct, size, ikm=ikm, ad=ad)
    offset, length = dec.span(0, 1)
    with pytest.raises(IntegrityError):
        list(dec.iter_range(io.BytesIO(ct[offset : offset + length]), 0, 1))


@pytest.mark.parametrize("declared", [0, 1, 499, 501, 500 - 240, 500 + 240, 440, 441, 10_000])
def test_wrong_declared_plaintext_size_rejected(declared):
    size = 500
    ct = encrypt(DEK, AD, _data(size), SMALL)
    dec = _decryptor(ct, declared)
    assert dec.ciphertext_size != len(ct)
    with pytest.raises(IntegrityError):
        b"".join(dec.iter_all(io.BytesIO(ct[40:])))
    # A range that ends in the (wrongly) last segment fails too.
    offset = dec.span(declared - 1, declared)[0] if declared else 40
    raw = io.BytesIO(ct)
    raw.seek(offset)
    with pytest.raises(IntegrityError):
        list(dec.iter_range(raw, declared - 1, declared) if declared else dec.iter_all(raw))


@pytest.mark.parametrize(
    "header",
    [
        b"",
        KAT_CIPHERTEXT[:23],
        KAT_CIPHERTEXT[:25],
        b"\x19" + KAT_CIPHERTEXT[1:24],
        b"\x00" + KAT_CIPHERTEXT[1:24],
    ],
)
def test_bad_header_rejected(header):
    with pytest.raises(IntegrityError):
        Decryptor(KAT_IKM, KAT_AD, header, plaintext_size=90, params=KAT_PARAMS)


def test_object_too_short_rejected():
    for n in range(56):
        with pytest.raises(IntegrityError):
            decrypt(DEK, AD, bytes(n))


# --- API contract ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ikm", [bytes(15), bytes(31)])  # Tink: ikm >= 16 and >= the derived key size
def test_encryptor_rejects_short_keys(ikm):
    with pytest.raises(ParameterError):
        Encryptor(ikm, AD)


def test_encryptor_takes_no_salt_or_nonce_prefix():
    # Reusing them reuses GCM nonces: only the test-only PinnedEncryptor above can set them.
    for knob in ("salt", "nonce_prefix"):
        with pytest.raises(TypeError):
            Encryptor(DEK, AD, **{knob: bytes(32)})
        with pytest.raises(TypeError):
            encrypt(DEK, AD, b"x", **{knob: bytes(32)})


@pytest.mark.parametrize(
    ("salt", "nonce_prefix"),
    [(bytes(31), bytes(NONCE_PREFIX_SIZE)), (bytes(32), bytes(NONCE_PREFIX_SIZE + 1)), (bytes(16), bytes(7))],
)
def test_encryptor_checks_the_lengths_of_its_salt_and_nonce_prefix(salt, nonce_prefix):
    with pytest.raises(ParameterError):
        PinnedEncryptor(DEK, AD, salt=salt, nonce_prefix=nonce_prefix)


def test_ikm_of_16_bytes_accepted_for_16_byte_keys():
    assert decrypt(KAT_IKM, b"", encrypt(KAT_IKM, b"", b"x", KAT_PARAMS), KAT_PARAMS) == b"x"


def test_encryptor_lifecycle():
    enc = Encryptor(DEK, AD, SMALL)
    assert len(enc.header) == 40
    assert enc.header[0] == 40
    assert enc.update(b"") == b""
    assert enc.update(b"x" * 200) == b""  # a full first segment is held back: it might be the last
    first = enc.update(b"y")
    assert first.startswith(enc.header)
    assert len(first) == 256
    rest = enc.finalize()
    assert len(rest) == 17
    for call in (lambda: enc.update(b"z"), enc.finalize):
        with pytest.raises(FormatError):
            call()
    assert decrypt(DEK, AD, first + rest, SMALL) == b"x" * 200 + b"y"


def test_empty_plaintext():
    enc = Encryptor(DEK, AD)
    ct = enc.finalize()
    assert ct[:40] == enc.header
    assert len(ct) == 56
    assert decrypt(DEK, AD, ct) == b""
    dec = Decryptor(DEK, AD, ct[:40], plaintext_size=0)
    assert dec.span(0, 0) == (56, 0)
    assert list(dec.iter_range(io.BytesIO(b""), 0, 0)) == []
    assert list(dec.iter_all(io.BytesIO(ct[40:]))) == []


def test_random_salt_and_nonce_prefix():
    a, b = Encryptor(DEK, AD), Encryptor(DEK, AD)
    assert a.header[1:33] != b.header[1:33]
    assert a.header[33:] != b.header[33:]


def test_keys_not_in_repr():
    enc = Encryptor(DEK, AD)
    dec = Decryptor(DEK, AD, enc.header, plaintext_size=0)
    for obj in (enc, dec):
        assert DEK.hex() not in repr(obj)
        assert not hasattr(obj, "__dict__")


@pytest.mark.parametrize(("start", "stop"), [(-1, 5), (5, 4), (0, 501), (501, 501), (1.0, 2)])
def test_span_rejects_bad_ranges(start, stop):
    ct = encrypt(DEK, AD, _data(500), SMALL)
    dec = _decryptor(ct, 500)
    with pytest.raises(ParameterError):
        dec.span(start, stop)
    with pytest.raises(ParameterError):
        dec.iter_range(io.BytesIO(ct), start, stop)


class _TrickleReader:
    """A raw stream without readinto that returns at most 7 bytes per read (sockets, S3 bodies)."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(min(n, 7) if n >= 0 else 7)


def test_short_reads_and_read_only_streams():
    size = 1234
    plaintext = _data(size)
    ct = encrypt(DEK, AD, plaintext, SMALL)
    dec = _decryptor(ct, size)
    assert b"".join(dec.iter_all(_TrickleReader(ct[40:]))) == plaintext
    offset, length = dec.span(300, 900)
    trickle = _TrickleReader(ct[offset : offset + length])
    assert b"".join(dec.iter_range(trickle, 300, 900)) == plaintext[300:900]
    with pytest.raises(IntegrityError):
        b"".join(dec.iter_all(_TrickleReader(ct[40:] + b"!")))


def test_chunks_are_bytes_and_cover_segments():
    size = 2000
    ct = encrypt(DEK, AD, _data(size), SMALL)
    dec = _decryptor(ct, size)
    chunks = list(dec.iter_all(io.BytesIO(ct[40:])))
    assert all(type(c) is bytes for c in chunks)
    assert len(chunks) == dec.segment_count


# --- Memory ---------------------------------------------------------------------------------------


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_flat_in_input_size(tmp_path: Path):
    total, chunk = 64 << 20, 100_000
    block = os.urandom(chunk)
    path = tmp_path / "blob"
    segment = DEFAULT_PARAMS.segment_size

    def encrypt_to_file() -> None:
        enc = Encryptor(DEK, AD)
        with path.open("wb") as sink:
            for _ in range(total // chunk):
                sink.write(enc.update(block))
            sink.write(enc.finalize())

    assert _peak(encrypt_to_file) < 4 * segment
    size = (total // chunk) * chunk
    assert path.stat().st_size == DEFAULT_PARAMS.ciphertext_size(size)

    def decrypt_all() -> None:
        with path.open("rb") as raw:
            dec = Decryptor(DEK, AD, raw.read(40), plaintext_size=size)
            assert sum(len(piece) for piece in dec.iter_all(raw)) == size

    def decrypt_range() -> None:
        with path.open("rb") as raw:
            dec = Decryptor(DEK, AD, raw.read(40), plaintext_size=size)
            raw.seek(dec.span(5, size - 5)[0])
            assert sum(len(piece) for piece in dec.iter_range(raw, 5, size - 5)) == size - 10

    # Held at once: the ciphertext buffer, the chunk being built and the one the caller still holds; a
    # range's partial edge segment adds its scratch plaintext. Flat, whatever the object size.
    assert _peak(decrypt_all) < 4 * segment
    assert _peak(decrypt_range) < 5 * segment


def test_update_with_large_input_returns_all_but_held_back_segment():
    plaintext = _data(10 * 256)
    enc = Encryptor(DEK, AD, SMALL)
    out = enc.update(plaintext)
    assert len(out) == SMALL.ciphertext_size(len(plaintext)) - (len(plaintext) - 200) % 240 - 16
    assert out + enc.finalize() == pinned_encrypt(
        DEK, AD, plaintext, SMALL, salt=enc.header[1:33], nonce_prefix=enc.header[33:]
    )


# --- Whole objects, segment by segment ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 24, 25, 26, 199, 200, 201, 439, 440, 441, 999, 1000, 1001, 3000])
def test_iter_all_yields_one_exact_bytes_chunk_per_segment(size):
    plaintext = _data(size, seed=size)
    ct = encrypt(DEK, AD, plaintext, SMALL)
    dec = _decryptor(ct, size, SMALL)
    raw = io.BytesIO(ct)
    raw.seek(SMALL.header_size)
    chunks = list(dec.iter_all(raw))
    assert b"".join(chunks) == plaintext
    assert all(type(chunk) is bytes for chunk in chunks)  # what gunicorn accepts
    assert len(chunks) == (dec.segment_count if size else 0)


def test_a_tampered_segment_stops_iter_all_at_its_start():
    plaintext = _data(3000, seed=3)
    ct = bytearray(encrypt(DEK, AD, plaintext, SMALL))
    ct[SMALL.segment_size * 3 + 5] ^= 1
    dec = _decryptor(bytes(ct), len(plaintext), SMALL)
    raw = io.BytesIO(bytes(ct))
    raw.seek(SMALL.header_size)
    got: list[bytes] = []
    with pytest.raises(IntegrityError):
        got.extend(dec.iter_all(raw))  # extend keeps what arrived before the error
    assert b"".join(got) == plaintext[: SMALL.first_segment_plaintext + 2 * SMALL.segment_plaintext]


@pytest.mark.parametrize("part", ["whole segment", "partial edge segment"])
def test_a_failed_segment_leaves_no_plaintext_in_the_failing_frame(part):
    """GCM writes plaintext before it checks the tag: the failed segment's buffer is wiped and dropped, so a
    traceback (an error reporter capturing locals, a debugger) shows no unauthenticated plaintext."""
    import sys

    plaintext = _data(3000, seed=5)
    ct = bytearray(encrypt(DEK, AD, plaintext, SMALL))
    ct[SMALL.segment_size * 2 + 9] ^= 1  # segment 2, [440, 680)
    dec = _decryptor(bytes(ct), len(plaintext), SMALL)
    bad = plaintext[SMALL.first_segment_plaintext + SMALL.segment_plaintext :][: SMALL.segment_plaintext]
    try:
        if part == "whole segment":
            raw = io.BytesIO(bytes(ct))
            raw.seek(SMALL.header_size)
            list(dec.iter_all(raw))
        else:
            _range(dec, bytes(ct), 450, 460)
    except IntegrityError:
        tb = sys.exc_info()[2].tb_next  # skip this test's own frame (it holds the plaintext, of course)
    else:
        pytest.fail("tampering went unnoticed")
    seen = []
    while tb is not None:
        seen += [v for v in tb.tb_frame.f_locals.values() if isinstance(v, (bytes, bytearray, memoryview))]
        tb = tb.tb_next
    assert seen  # the walk reached the decryptor's frames
    for value in seen:
        try:
            content = bytes(value)
        except ValueError:  # a released memoryview: nothing to read
            continue
        assert bad[16:48] not in content  # past the flipped byte: what a leak would show verbatim


# --- Reused buffers (issue 14) ----------------------------------------------------------------------------


@pytest.fixture
def pools():
    """Both of the process's free lists, emptied before and after the test."""
    for pool in (crypto._CIPHERTEXT_BUFFERS, crypto._PLAINTEXT_BUFFERS):
        pool.clear()
    yield crypto
    for pool in (crypto._CIPHERTEXT_BUFFERS, crypto._PLAINTEXT_BUFFERS):
        pool.clear()


def _idle(pool) -> list[bytearray]:
    return [buf for bufs in pool._free.values() for buf in bufs]


def _range(dec: Decryptor, ct: bytes, start: int, stop: int) -> bytes:
    raw = io.BytesIO(ct)
    raw.seek(dec.span(start, stop)[0])
    return b"".join(dec.iter_range(raw, start, stop))


def test_a_partial_segment_leaves_its_scratch_wiped_in_the_pool(pools):
    plaintext = _data(3000, seed=11)
    ct = encrypt(DEK, AD, plaintext, SMALL)
    dec = _decryptor(ct, len(plaintext))
    assert _range(dec, ct, 205, 206) == plaintext[205:206]  # inside segment 1, [200, 440)
    (scratch,) = _idle(pools._PLAINTEXT_BUFFERS)
    assert len(scratch) == SMALL.segment_plaintext
    assert scratch == bytes(len(scratch))
    # The next range reuses it (and the ciphertext buffer), and leaves it wiped again.
    (ct_buf,) = _idle(pools._CIPHERTEXT_BUFFERS)
    assert _range(dec, ct, 900, 1000) == plaintext[900:1000]
    assert _idle(pools._PLAINTEXT_BUFFERS) == [scratch]
    assert _idle(pools._PLAINTEXT_BUFFERS)[0] is scratch
    assert _idle(pools._CIPHERTEXT_BUFFERS)[0] is ct_buf
    assert scratch == bytes(len(scratch))


def test_a_failed_tag_leaves_the_pooled_scratch_wiped(pools):
    """GCM writes plaintext before it checks the tag: the scratch goes back zeroed all the same."""
    plaintext = _data(3000, seed=12)
    ct = bytearray(encrypt(DEK, AD, plaintext, SMALL))
    ct[SMALL.segment_size + 250] ^= 1  # segment 1's tag
    dec = _decryptor(bytes(ct), len(plaintext))
    with pytest.raises(IntegrityError):
        _range(dec, bytes(ct), 205, 206)
    (scratch,) = _idle(pools._PLAINTEXT_BUFFERS)
    assert scratch == bytes(len(scratch))
    assert len(_idle(pools._CIPHERTEXT_BUFFERS)) == 1  # the ciphertext buffer came back too


def test_a_short_last_segment_after_long_ones_reads_only_its_own_bytes(pools):
    long_plain = _data(3000, seed=13)
    long_ct = encrypt(DEK, AD, long_plain, SMALL)
    short_plain = _data(205, seed=14)  # segment 0 of 200 bytes, then a last segment of 5
    short_ct = encrypt(bytes(32), AD, short_plain, SMALL)
    long_dec = _decryptor(long_ct, len(long_plain))
    short_dec = _decryptor(short_ct, len(short_plain), ikm=bytes(32))
    for _ in range(2):  # the second time through, every buffer is a reused one
        assert _range(long_dec, long_ct, 250, 260) == long_plain[250:260]
        assert _iter_all(long_ct, len(long_plain)) == long_plain
        assert _range(short_dec, short_ct, 201, 204) == short_plain[201:204]
        assert _range(short_dec, short_ct, 0, 205) == short_plain
        assert _iter_all(short_ct, len(short_plain), ikm=bytes(32)) == short_plain
    assert _idle(pools._PLAINTEXT_BUFFERS) == [bytes(SMALL.segment_plaintext)]


def test_generators_in_flight_each_hold_their_own_buffer(pools):
    a_plain, b_plain = _data(3000, seed=15), _data(3000, seed=16)
    a_ct, b_ct = encrypt(DEK, AD, a_plain, SMALL), encrypt(DEK, AD, b_plain, SMALL)
    a_raw, b_raw = io.BytesIO(a_ct[SMALL.header_size :]), io.BytesIO(b_ct[SMALL.header_size :])
    a = _decryptor(a_ct, 3000).iter_all(a_raw)
    b = _decryptor(b_ct, 3000).iter_all(b_raw)
    got_a, got_b = [], []
    for chunk_a, chunk_b in itertools.zip_longest(a, b, fillvalue=b""):
        got_a.append(chunk_a)
        got_b.append(chunk_b)
    assert b"".join(got_a) == a_plain
    assert b"".join(got_b) == b_plain
    assert len(_idle(pools._CIPHERTEXT_BUFFERS)) == 2


def _tampered(ct: bytes) -> bytes:
    bad = bytearray(ct)
    bad[SMALL.segment_size * 2 + 9] ^= 1
    return bytes(bad)


@pytest.mark.parametrize(
    "ending",
    [
        "exhausted",
        "closed after one chunk",
        "closed before the first chunk",
        "failed tag",
        "partial edge failed tag",
        "truncated",
        "trailing bytes",
    ],
)
def test_buffers_go_back_to_the_pool_however_the_generator_ends(pools, ending):
    plaintext = _data(3000, seed=17)
    ct = encrypt(DEK, AD, plaintext, SMALL)
    dec = _decryptor(ct, len(plaintext))
    if ending == "exhausted":
        assert _range(dec, ct, 5, 2995) == plaintext[5:2995]
    elif ending.startswith("closed"):
        raw = io.BytesIO(ct[SMALL.header_size :])
        gen = dec.iter_all(raw)
        if ending == "closed after one chunk":
            next(gen)
            assert _idle(pools._CIPHERTEXT_BUFFERS) == []  # held by the suspended generator
        gen.close()
    elif ending == "failed tag":
        with pytest.raises(IntegrityError):
            _iter_all(_tampered(ct), len(plaintext))
    elif ending == "partial edge failed tag":
        with pytest.raises(IntegrityError):
            _range(dec, _tampered(ct), 450, 2995)  # segment 2 is the range's partial first segment
    elif ending == "truncated":
        with pytest.raises(IntegrityError):
            list(dec.iter_all(io.BytesIO(ct[SMALL.header_size : -7])))
    else:
        with pytest.raises(IntegrityError):
            list(dec.iter_all(io.BytesIO(ct[SMALL.header_size :] + b"x")))
    expected_ct = 0 if ending == "closed before the first chunk" else 1  # a generator takes on its start
    assert len(_idle(pools._CIPHERTEXT_BUFFERS)) == expected_ct
    for scratch in _idle(pools._PLAINTEXT_BUFFERS):
        assert scratch == bytes(len(scratch))


def test_the_pool_keeps_at_most_its_limit(pools, monkeypatch):
    capacity = SMALL.segment_size + crypto._PAGE
    small = crypto._BufferPool(3 * capacity)
    monkeypatch.setattr(crypto, "_CIPHERTEXT_BUFFERS", small)
    plaintext = _data(3000, seed=18)
    ct = encrypt(DEK, AD, plaintext, SMALL)
    dec = _decryptor(ct, len(plaintext))
    gens = [dec.iter_all(io.BytesIO(ct[SMALL.header_size :])) for _ in range(10)]
    for gen in gens:
        next(gen)  # ten buffers in use at once
    for gen in gens:
        gen.close()
    assert len(_idle(small)) == 3
    assert small.idle_bytes == 3 * capacity
    # Whatever comes back: never past the limit, never a buffer of another length.
    small.give(bytearray(capacity), capacity)
    small.give(bytearray(10), capacity)
    assert small.idle_bytes == 3 * capacity
    small.clear()
    small.give(bytearray(4 * capacity), 4 * capacity)  # more than the limit on its own
    assert small.idle_bytes == 0


def test_with_none_idle_a_small_object_allocates_only_what_it_needs(pools):
    """A 1 KiB object under the default 1 MiB segments: its one segment, not a megabyte per buffer."""
    plaintext = _data(1024, seed=19)
    ct = encrypt(DEK, AD, plaintext)
    dec = _decryptor(ct, len(plaintext), DEFAULT_PARAMS)
    got: list[bytes] = []

    def read() -> None:
        got.append(_range(dec, ct, 3, 4))
        got.append(_range(dec, ct, 0, 1024))

    assert _peak(read) < 16 * 1024
    assert got == [plaintext[3:4], plaintext]
    assert _idle(pools._CIPHERTEXT_BUFFERS) == _idle(pools._PLAINTEXT_BUFFERS) == []  # too small to keep


def test_a_forked_child_starts_with_empty_pools(pools):
    plaintext = _data(3000, seed=20)
    ct = encrypt(DEK, AD, plaintext, SMALL)
    assert _range(_decryptor(ct, 3000), ct, 205, 206) == plaintext[205:206]
    assert pools._CIPHERTEXT_BUFFERS.idle_bytes
    assert pools._PLAINTEXT_BUFFERS.idle_bytes
    with pools._PLAINTEXT_BUFFERS._lock:  # held by this thread while the child is made
        pid = os.fork()
    if pid == 0:  # the child: exit without running pytest's teardown
        ok = pools._CIPHERTEXT_BUFFERS.idle_bytes == pools._PLAINTEXT_BUFFERS.idle_bytes == 0
        try:
            ok = ok and _range(_decryptor(ct, 3000), ct, 205, 206) == plaintext[205:206]  # locks are free
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


class _AddressRecorder(io.BytesIO):
    """For each ``readinto``: the object offset read from, and the destination's offset within its page."""

    def __init__(self, data: bytes, base: int) -> None:
        super().__init__(data)
        self.base = base
        self.reads: list[tuple[int, int]] = []

    def readinto(self, view) -> int:
        import ctypes
        import mmap

        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
        self.reads.append((self.base + self.tell(), address % mmap.PAGESIZE))
        return super().readinto(view)


def test_a_segment_is_read_to_its_own_offset_within_a_page(pools):
    """The kernel's copy from the page cache is over 10x slower when its destination sits a few bytes past
    its source's offset within a page (docs/benchmarks.md, "Reused decryption buffers")."""
    import mmap

    params = StreamParams(segment_size=3 * mmap.PAGESIZE)
    plaintext = _data(10 * params.segment_size, seed=21)
    ct = encrypt(DEK, AD, plaintext, params)
    dec = _decryptor(ct, len(plaintext), params)
    for start, stop in [(0, 1), (5 * params.segment_size, 5 * params.segment_size + 1), (7, len(plaintext))]:
        offset, length = dec.span(start, stop)
        raw = _AddressRecorder(ct[offset : offset + length], offset)
        assert b"".join(dec.iter_range(raw, start, stop)) == plaintext[start:stop]
        assert raw.reads
        assert all(source % mmap.PAGESIZE == within for source, within in raw.reads)
