"""``Content-Digest`` (RFC 9530): parse the header and hash the content as it is read. Pure, no Django.

The field is an RFC 8941 Dictionary whose members are Byte Sequences (``sha-256=:<base64>:``). We verify
``sha-256`` (and ``sha-512`` when sent); RFC 9530 §2 lets a recipient ignore algorithms it does not support,
and the deprecated ones of its §5 registry (``md5``, ``sha``, ``unixsum``...) carry no integrity we would
trust, so a header with only those is treated as absent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Protocol

#: Algorithms we verify, and the digest length each must have.
SUPPORTED: Mapping[str, int] = {"sha-256": 32, "sha-512": 64}

# RFC 8941 §3.2 key and §3.3.5 byte sequence; parameters (";a=b") are allowed and ignored (§2 of 9530).
_MEMBER = re.compile(
    r"\s*(?P<key>[a-z*][a-z0-9_.*-]*)"
    r"(?:=(?::(?P<bytes>[A-Za-z0-9+/=]*):|(?P<other>[^,;]*)))?"
    r"(?P<params>(?:\s*;[^,]*)?)\s*(?:,|$)"
)


class DigestError(ValueError):
    """The header is not a valid RFC 9530 Content-Digest."""


def parse_content_digest(value: str) -> dict[str, bytes]:
    """``{algorithm: digest}`` for the supported algorithms in ``value``; unknown ones are skipped."""
    out: dict[str, bytes] = {}
    pos = 0
    value = value.strip()
    if not value:
        raise DigestError("Content-Digest is empty.")
    while pos < len(value):
        match = _MEMBER.match(value, pos)
        if match is None or match.end() == pos:
            raise DigestError("Content-Digest is not an RFC 8941 dictionary of byte sequences.")
        pos = match.end()
        algorithm = match["key"]
        if algorithm not in SUPPORTED:
            continue
        if match["bytes"] is None:
            raise DigestError(f"Content-Digest {algorithm} must be a byte sequence (:base64:).")
        try:
            digest = base64.b64decode(match["bytes"], validate=True)
        except binascii.Error:
            raise DigestError(f"Content-Digest {algorithm} is not valid base64.") from None
        if len(digest) != SUPPORTED[algorithm]:
            raise DigestError(f"Content-Digest {algorithm} has the wrong length.")
        out[algorithm] = digest  # RFC 8941 §3.2: a later duplicate key overrides an earlier one
    return out


def format_content_digest(data: bytes, algorithm: str = "sha-256") -> str:
    """The header value for ``data`` (for clients and tests)."""
    digest = hashlib.new(algorithm.replace("-", ""), data).digest()
    return f"{algorithm}=:{base64.b64encode(digest).decode()}:"


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class DigestingReader:
    """Wraps a byte stream and hashes everything read through it, for every expected algorithm."""

    def __init__(self, stream: _Readable, algorithms: tuple[str, ...]) -> None:
        self._stream = stream
        self._hashes = {name: hashlib.new(name.replace("-", "")) for name in algorithms}

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        for h in self._hashes.values():
            h.update(data)
        return data

    def readline(self, size: int = -1, /) -> bytes:
        data: bytes = self._stream.readline(size)  # type: ignore[attr-defined]  # Django reads lines too
        for h in self._hashes.values():
            h.update(data)
        return data

    def digests(self) -> dict[str, bytes]:
        return {name: h.digest() for name, h in self._hashes.items()}


def digests_match(expected: Mapping[str, bytes], actual: Mapping[str, bytes]) -> bool:
    """Every expected digest equals the actual one (constant-time per comparison)."""
    return all(
        name in actual and hmac.compare_digest(actual[name], value) for name, value in expected.items()
    )
