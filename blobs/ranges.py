"""Byte ranges (RFC 9110 §14): Range parsing, If-Range, and multipart/byteranges framing.

Pure Python, stdlib only: the stream view and services wrap this, it imports nothing from Django.
The behaviour table it meets is architecture.md §6 (rows 2-15 and 17 concern this module).

How the caller uses it, for a GET (HEAD ignores Range, RFC 9110 §14.2):

1. ``blobs.conditional.evaluate_preconditions`` first (412/304 win over Range, §13.2.2 steps 1-4);
2. ``if_range_allows(...)`` false -> ignore Range, 200 full (§13.1.5);
3. ``parse_range(...)``: ``None`` -> 200 full; ``RangeNotSatisfiable`` -> 416 with
   ``Content-Range: bytes */size`` (§15.5.17); one range -> plain 206 with ``Content-Range`` (§15.3.7);
   several -> 206 ``multipart/byteranges`` framed by ``plan_multipart`` (§14.6).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from blobs.conditional import is_entity_tag, parse_http_date, strong_match, truncate_to_seconds

__all__ = [
    "MAX_HEADER_LENGTH",
    "MAX_OVERLAPPING",
    "MAX_RANGES",
    "ByteRange",
    "MultipartPlan",
    "RangeNotSatisfiable",
    "if_range_allows",
    "iter_multipart",
    "parse_range",
    "plan_multipart",
]

#: More range-specs than this in one header and the whole header is ignored (200 full). RFC 9110 §14.3
#: lets a server ignore "many small ranges"; real clients (browsers, players, curl, wget, aria2c) send one.
MAX_RANGES = 16
#: More than this many satisfiable ranges overlapping an earlier one -> ignore the header (RFC 9110 §14.3
#: names "more than two overlapping ranges" as a denial-of-service pattern).
MAX_OVERLAPPING = 2
#: A Range field value longer than this (characters) is ignored rather than parsed.
MAX_HEADER_LENGTH = 1024

_OWS = " \t"
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


@dataclass(frozen=True, order=True)
class ByteRange:
    """A non-empty, resolved byte range ``[start, stop)`` of a representation (``stop`` is exclusive)."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise ValueError(f"invalid byte range [{self.start}, {self.stop})")

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` value of a 206 for this range (RFC 9110 §14.4): ``bytes 0-99/1000``."""
        if self.stop > size:
            raise ValueError(f"range {self} exceeds representation size {size}")
        return f"bytes {self.start}-{self.stop - 1}/{size}"


class RangeNotSatisfiable(Exception):
    """A syntactically valid Range of which no range-spec is satisfiable: 416 (RFC 9110 §15.5.17).

    The response carries ``Content-Range: bytes */<size>`` (``content_range``) so that the client learns
    the current length.
    """

    def __init__(self, size: int) -> None:
        super().__init__(f"no satisfiable range in a representation of {size} bytes")
        self.size = size

    @property
    def content_range(self) -> str:
        return f"bytes */{self.size}"


# --------------------------------------------------------------------------------------------------------
# Range (RFC 9110 §14.1.1, §14.2)
# --------------------------------------------------------------------------------------------------------


def _parse_spec(spec: str, size: int) -> ByteRange | bool | None:
    """One range-spec -> its satisfiable ``ByteRange``, ``None`` if valid but unsatisfiable, or ``False``
    if syntactically invalid (which voids the whole header)."""
    first, dash, last = spec.partition("-")
    if not dash:
        return False
    if first:
        # int-range = first-pos "-" [ last-pos ]
        if not _DIGITS.fullmatch(first) or (last and not _DIGITS.fullmatch(last)):
            return False
        first_pos = int(first)
        if last:
            last_pos = int(last)
            if last_pos < first_pos:  # RFC 9110 §14.1.1: invalid, e.g. bytes=5-3
                return False
        else:
            last_pos = size - 1
        if first_pos >= size:  # satisfiable only if first-pos < length (§14.1.1)
            return None
        # A last-pos at or beyond the length is clipped to length-1 (no overflow: Python ints).
        return ByteRange(first_pos, min(last_pos, size - 1) + 1)
    # suffix-range = "-" suffix-length
    if not _DIGITS.fullmatch(last):  # also rejects "-" alone and "-1-2"
        return False
    suffix_length = int(last)
    if suffix_length == 0 or size == 0:  # satisfiable only if suffix-length > 0 on a non-empty one (§14.1.1)
        return None
    return ByteRange(max(0, size - suffix_length), size)


def parse_range(
    header: str | None,
    size: int,
    *,
    max_ranges: int = MAX_RANGES,
    max_overlapping: int = MAX_OVERLAPPING,
) -> list[ByteRange] | None:
    """Resolve a ``Range`` field value against a representation of ``size`` bytes.

    Returns ``None`` when the header must be ignored and the full representation served with 200:
    absent or blank; longer than ``MAX_HEADER_LENGTH``; a unit other than ``bytes`` (compared
    case-insensitively, §14.1); any syntactically invalid range-spec; more than ``max_ranges``
    range-specs; more than ``max_overlapping`` satisfiable ranges overlapping an earlier one (sorted by
    start); or an empty representation (``size == 0``: 200 with an empty body is simpler for clients
    than ``416 */0``, and reference row 17 allows it).

    Raises ``RangeNotSatisfiable(size)`` when the set is valid but no range-spec is satisfiable
    (``bytes=1000-`` or ``bytes=-0`` on 1000 bytes): 416.

    Otherwise returns the satisfiable ranges, sorted and coalesced (overlapping or adjacent ranges merged,
    which RFC 9110 §14.3 allows and which bounds the work any header can cause). A list of one range means
    a plain 206 - never multipart; two or more mean ``multipart/byteranges``. Sorting departs from the
    SHOULD of §14.6 (parts in request order) on purpose: encrypted segments are read forward-only, and
    clients match parts by their ``Content-Range``.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if header is None:
        return None
    value = header.strip(_OWS)
    if not value or len(value) > MAX_HEADER_LENGTH:
        return None
    unit, equals, range_set = value.partition("=")
    unit = unit.strip(_OWS)
    if not equals or not unit.isascii() or unit.lower() != "bytes":
        return None

    # range-set = 1#range-spec; recipients accept empty list elements and OWS around commas (§5.6.1).
    specs = [element.strip(_OWS) for element in range_set.split(",")]
    specs = [spec for spec in specs if spec]
    if not specs or len(specs) > max_ranges:
        return None

    satisfiable: list[ByteRange] = []
    for spec in specs:
        parsed = _parse_spec(spec, size)
        if parsed is False:
            return None
        if isinstance(parsed, ByteRange):
            satisfiable.append(parsed)

    # An empty representation has no ranges to speak of: serve 200 with the empty body.
    if size == 0:
        return None
    if not satisfiable:
        raise RangeNotSatisfiable(size)

    satisfiable.sort()
    merged: list[ByteRange] = [satisfiable[0]]
    overlapping = 0
    for current in satisfiable[1:]:
        previous = merged[-1]
        if current.start < previous.stop:
            overlapping += 1
        if current.start <= previous.stop:  # overlapping or adjacent: coalesce
            if current.stop > previous.stop:
                merged[-1] = ByteRange(previous.start, current.stop)
        else:
            merged.append(current)
    if overlapping > max_overlapping:
        return None
    return merged


# --------------------------------------------------------------------------------------------------------
# If-Range (RFC 9110 §13.1.5)
# --------------------------------------------------------------------------------------------------------


def if_range_allows(if_range: str | None, *, etag: str, last_modified: datetime) -> bool:
    """Whether the Range header may be honoured given ``If-Range`` (RFC 9110 §13.1.5).

    ``None`` (field absent) -> True. An entity-tag -> True only on a *strong* match with ``etag`` (the
    full quoted current tag; a ``W/`` tag on either side never matches). An HTTP-date -> True only if it
    equals ``last_modified`` exactly, at one-second resolution in UTC. Anything else, including an empty
    or unparsable value, is a false condition: ignore Range and send 200 with the full representation.
    """
    if if_range is None:
        return True
    value = if_range.strip(" \t")
    # §13.1.5: an entity-tag is told from an HTTP-date by a DQUOTE within the first three characters.
    if '"' in value[:3]:
        return is_entity_tag(value) and strong_match(value, etag)
    date = parse_http_date(value)
    return date is not None and date == truncate_to_seconds(last_modified)


# --------------------------------------------------------------------------------------------------------
# multipart/byteranges (RFC 9110 §14.6, RFC 2046 §5.1)
# --------------------------------------------------------------------------------------------------------

# RFC 2046 §5.1.1: boundary := 0*69<bchars> bcharsnospace
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]", re.ASCII)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+", re.ASCII)


@dataclass(frozen=True)
class MultipartPlan:
    """The framing of a ``multipart/byteranges`` body, computed before any byte is read.

    The body is, for each ``(preamble, range)`` in ``parts``, the preamble followed by the range's bytes,
    then ``epilogue``. ``content_length`` is its exact total length, so the response can commit
    ``Content-Length`` up front.
    """

    boundary: str
    content_type: str
    parts: tuple[tuple[bytes, ByteRange], ...]
    epilogue: bytes
    content_length: int


def plan_multipart(
    ranges: Sequence[ByteRange],
    *,
    size: int,
    content_type: str,
    boundary: str | None = None,
) -> MultipartPlan:
    """Frame ``ranges`` of a ``size``-byte representation of type ``content_type`` as multipart/byteranges.

    Each part is ``CRLF --boundary CRLF`` + ``Content-Type`` + ``Content-Range`` + ``CRLF CRLF`` (the CRLF
    before a delimiter belongs to the delimiter, RFC 2046 §5.1.1, so the body may start with it), and the
    body ends with ``CRLF --boundary-- CRLF``. The boundary is random (``secrets.token_hex``) unless given:
    an uploader who cannot predict it cannot forge part boundaries inside the content.

    At least two ranges are required: a single range is always a plain 206 (RFC 9110 §14.6).
    """
    if len(ranges) < 2:
        raise ValueError("multipart/byteranges needs at least two ranges; send a single range as plain 206")
    for byte_range in ranges:
        if byte_range.stop > size:
            raise ValueError(f"range {byte_range} exceeds representation size {size}")
    if not _HEADER_VALUE.fullmatch(content_type):
        raise ValueError("content_type must be printable ASCII (no CR/LF)")
    if boundary is None:
        boundary = secrets.token_hex(16)
    elif not _BOUNDARY.fullmatch(boundary):
        raise ValueError("invalid multipart boundary (RFC 2046 §5.1.1)")

    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    parts = tuple(
        (
            delimiter
            + (
                f"Content-Type: {content_type}\r\nContent-Range: {byte_range.content_range(size)}\r\n\r\n"
            ).encode("ascii"),
            byte_range,
        )
        for byte_range in ranges
    )
    epilogue = f"\r\n--{boundary}--\r\n".encode("ascii")
    content_length = sum(len(preamble) + byte_range.length for preamble, byte_range in parts) + len(epilogue)
    parameter = boundary if _TOKEN.fullmatch(boundary) else f'"{boundary}"'
    return MultipartPlan(
        boundary=boundary,
        content_type=f"multipart/byteranges; boundary={parameter}",
        parts=parts,
        epilogue=epilogue,
        content_length=content_length,
    )


def iter_multipart(
    plan: MultipartPlan, read: Callable[[ByteRange], Iterable[bytes]]
) -> Generator[bytes, None, None]:
    """Yield the body of ``plan``, taking each part's bytes from ``read(range)`` (e.g. a decrypting reader).

    Raises ``ValueError`` if ``read`` yields a different number of bytes than the range holds: the
    Content-Length is already committed, so the caller must abort the connection rather than pad.
    """
    for preamble, byte_range in plan.parts:
        yield preamble
        produced = 0
        for chunk in read(byte_range):
            produced += len(chunk)
            if produced > byte_range.length:
                raise ValueError(f"reader produced more than the {byte_range.length} bytes of {byte_range}")
            if chunk:
                yield chunk
        if produced != byte_range.length:
            raise ValueError(f"reader produced {produced} of the {byte_range.length} bytes of {byte_range}")
    yield plan.epilogue
