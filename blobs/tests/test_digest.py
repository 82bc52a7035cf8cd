"""Tests for ``Content-Digest`` (blobs/digest.py, RFC 9530 over RFC 8941 dictionaries). Pure, no Django."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest

from blobs.digest import (
    SUPPORTED,
    DigestError,
    DigestingReader,
    digests_match,
    format_content_digest,
    parse_content_digest,
)

DATA = b"hello world"
SHA256 = hashlib.sha256(DATA).digest()
SHA512 = hashlib.sha512(DATA).digest()
B256 = base64.b64encode(SHA256).decode()
B512 = base64.b64encode(SHA512).decode()
OTHER256 = hashlib.sha256(b"other").digest()
BOTHER256 = base64.b64encode(OTHER256).decode()


# --- parsing: accepted ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"sha-256=:{B256}:", {"sha-256": SHA256}),
        (f"sha-512=:{B512}:", {"sha-512": SHA512}),
        (f"sha-256=:{B256}:, sha-512=:{B512}:", {"sha-256": SHA256, "sha-512": SHA512}),
        (f"sha-512=:{B512}:,sha-256=:{B256}:", {"sha-256": SHA256, "sha-512": SHA512}),  # no space needed
        (f"  sha-256=:{B256}:  ", {"sha-256": SHA256}),  # surrounding whitespace
        (f"sha-256=:{B256}:  ,  sha-512=:{B512}:", {"sha-256": SHA256, "sha-512": SHA512}),  # OWS at comma
        # RFC 9530 §2: parameters are allowed and carry nothing we use.
        (f"sha-256=:{B256}:;foo=bar", {"sha-256": SHA256}),
        (f"sha-256=:{B256}:;a=1;b", {"sha-256": SHA256}),
        # Algorithms we do not verify are skipped, whatever their value (RFC 9530 §2 lets a recipient
        # ignore them; the deprecated md5, sha, unixsum... carry no integrity we would trust).
        (f"md5=:{base64.b64encode(bytes(16)).decode()}:, sha-256=:{B256}:", {"sha-256": SHA256}),
        (f"sha=:AAAA:, unixsum=1234, sha-256=:{B256}:", {"sha-256": SHA256}),
        (f"id-sha-256=:{B256}:, sha-256=:{B256}:", {"sha-256": SHA256}),
        (f"foo, sha-256=:{B256}:", {"sha-256": SHA256}),  # a bare (boolean) unknown key
        (f"foo=?1, bar=(1 2), baz=1.5, sha-256=:{B256}:", {"sha-256": SHA256}),  # other RFC 8941 values
        (f"*x=:AA==:, sha-256=:{B256}:", {"sha-256": SHA256}),  # a key may start with "*"
        # Only unsupported algorithms: nothing to verify (the middleware treats it as absent).
        ("md5=:AAAAAAAAAAAAAAAAAAAAAA==:", {}),
        ("unixsum=42, unixcksum=7", {}),
        # RFC 8941 §3.2: a later member with the same key overrides the earlier one.
        (f"sha-256=:{BOTHER256}:, sha-256=:{B256}:", {"sha-256": SHA256}),
    ],
)
def test_parse_valid(header, expected):
    assert parse_content_digest(header) == expected


# --- parsing: refused -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (f"SHA-256=:{B256}:", "keys are lowercase (RFC 8941 §3.2)"),
        (f"Sha-256=:{B256}:", "keys are lowercase (RFC 8941 §3.2)"),
        (f"1sha=:{B256}:", "a key starts with a letter or *"),
        (f"=:{B256}:", "no key"),
        (",", "no member"),
        (f", sha-256=:{B256}:", "leading comma"),
        (f"sha-256=:{B256}:,, sha-512=:{B512}:", "empty member"),
        ("sha-256", "a supported algorithm without a value (boolean true)"),
        (f"sha-256={B256}", "a token, not a byte sequence"),
        (f'sha-256="{B256}"', "a string, not a byte sequence"),
        ("sha-256=1234", "an integer, not a byte sequence"),
        (f"sha-256=:{B256}", "an unterminated byte sequence"),
        (f"sha-256=:{B256}: sha-512=:{B512}:", "members not separated by a comma"),
        ("sha-256=:!!!!:", "base64 with characters outside its alphabet"),
        (f"sha-256=:{B256[:-1]}:", "base64 with bad padding"),
        (f"sha-256=:{B256.rstrip('=')}:", "base64 without its padding"),
        (
            f"sha-256=:{base64.b64encode(SHA256[:1]).decode()}{base64.b64encode(SHA256[1:]).decode()}:",
            "base64 with padding in the middle",
        ),
        ("sha-256=::", "an empty digest"),
        (f"sha-256=:{base64.b64encode(SHA256[:31]).decode()}:", "a sha-256 digest one byte short"),
        (f"sha-256=:{base64.b64encode(SHA256 + b'x').decode()}:", "a sha-256 digest one byte long"),
        (f"sha-512=:{B256}:", "a sha-256-sized digest for sha-512"),
        (f"sha-256=:{B512}:", "a sha-512-sized digest for sha-256"),
        (f"md5=:AAAA:, sha-256=:{B256[:-1]}:", "a bad supported member beside an unsupported one"),
        (f"sha-256=:{B256}:, sha-512=:{B256}:", "one bad member among good ones"),
    ],
)
def test_parse_invalid(header, why):
    with pytest.raises(DigestError):
        parse_content_digest(header)


@pytest.mark.xfail(
    strict=True,
    reason="RFC 8941 §4.2.2 fails a dictionary that ends in a comma; parse_content_digest accepts it",
)
def test_a_trailing_comma_is_refused():
    with pytest.raises(DigestError):
        parse_content_digest(f"sha-256=:{B256}:,")


def test_digest_error_is_a_value_error():
    assert issubclass(DigestError, ValueError)


# --- formatting -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "data", "expected"),
    [
        ("sha-256", DATA, f"sha-256=:{B256}:"),
        ("sha-512", DATA, f"sha-512=:{B512}:"),
        # RFC 9530 appendix D's example body {"hello": "world"}
        ("sha-256", b'{"hello": "world"}', "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
        ("sha-256", b"", f"sha-256=:{base64.b64encode(hashlib.sha256(b'').digest()).decode()}:"),
    ],
)
def test_format(algorithm, data, expected):
    assert format_content_digest(data, algorithm) == expected


@pytest.mark.parametrize("algorithm", sorted(SUPPORTED))
@pytest.mark.parametrize("data", [b"", b"x", bytes(range(256)) * 100])
def test_format_then_parse_round_trips(algorithm, data):
    digest = hashlib.new(algorithm.replace("-", ""), data).digest()
    assert len(digest) == SUPPORTED[algorithm]
    assert parse_content_digest(format_content_digest(data, algorithm)) == {algorithm: digest}


def test_supported_algorithms():
    assert dict(SUPPORTED) == {"sha-256": 32, "sha-512": 64}


# --- hashing as the body is read --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithms", [("sha-256",), ("sha-512",), ("sha-256", "sha-512"), ()])
@pytest.mark.parametrize("sizes", [[-1], [1, 2, 3, -1], [4, 0, 100]])
def test_digesting_reader_hashes_exactly_what_was_read(algorithms, sizes):
    body = bytes(range(256)) * 4
    reader = DigestingReader(io.BytesIO(body), algorithms)
    read = b"".join(reader.read(n) for n in sizes)
    assert body.startswith(read)
    expected = {name: hashlib.new(name.replace("-", ""), read).digest() for name in algorithms}
    assert reader.digests() == expected


def test_digesting_reader_hashes_lines_too():
    body = b"line one\nline two\nrest"
    reader = DigestingReader(io.BytesIO(body), ("sha-256",))
    assert reader.readline() == b"line one\n"
    assert reader.readline(4) == b"line"
    assert reader.read() == b" two\nrest"
    assert reader.digests() == {"sha-256": hashlib.sha256(body).digest()}


# --- comparing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "actual", "match"),
    [
        ({"sha-256": SHA256}, {"sha-256": SHA256}, True),
        ({"sha-256": SHA256}, {"sha-256": SHA256, "sha-512": SHA512}, True),
        ({"sha-256": SHA256, "sha-512": SHA512}, {"sha-256": SHA256, "sha-512": SHA512}, True),
        ({"sha-256": SHA256}, {"sha-256": OTHER256}, False),
        ({"sha-256": SHA256, "sha-512": SHA512}, {"sha-256": SHA256, "sha-512": bytes(64)}, False),
        ({"sha-256": SHA256, "sha-512": SHA512}, {"sha-256": SHA256}, False),  # one not computed
        ({"sha-512": SHA512}, {"sha-256": SHA256}, False),
        ({"sha-256": SHA256[:16]}, {"sha-256": SHA256}, False),  # a prefix is not a match
        ({}, {"sha-256": SHA256}, True),  # nothing expected: the caller decides whether that is allowed
    ],
)
def test_digests_match(expected, actual, match):
    assert digests_match(expected, actual) is match


def test_a_parsed_header_matches_the_reader_of_its_body():
    header = f"{format_content_digest(DATA)}, {format_content_digest(DATA, 'sha-512')}"
    expected = parse_content_digest(header)
    reader = DigestingReader(io.BytesIO(DATA), tuple(expected))
    reader.read()
    assert digests_match(expected, reader.digests())
    tampered = DigestingReader(io.BytesIO(DATA + b"!"), tuple(expected))
    tampered.read()
    assert not digests_match(expected, tampered.digests())
