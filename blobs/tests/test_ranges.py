"""blobs.ranges: Range parsing, If-Range and multipart/byteranges (architecture.md §6 rows 2-15, 17)."""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobs.ranges import (
    MAX_HEADER_LENGTH,
    MAX_RANGES,
    ByteRange,
    MultipartPlan,
    RangeNotSatisfiable,
    if_range_allows,
    iter_multipart,
    parse_range,
    plan_multipart,
)

SIZE = 1000
HUGE = "9" * 20


def r(start: int, last: int) -> ByteRange:
    """The range written ``start-last`` (inclusive last) in a Range header."""
    return ByteRange(start, last + 1)


# --------------------------------------------------------------------------------------------------------
# ByteRange / RangeNotSatisfiable
# --------------------------------------------------------------------------------------------------------


def test_byte_range_length_and_content_range():
    assert r(0, 99).length == 100
    assert r(0, 99).content_range(1000) == "bytes 0-99/1000"
    assert r(999, 999).content_range(1000) == "bytes 999-999/1000"


@pytest.mark.parametrize(("start", "stop"), [(-1, 5), (5, 5), (6, 5)])
def test_byte_range_rejects_empty_or_negative(start, stop):
    with pytest.raises(ValueError, match="invalid byte range"):
        ByteRange(start, stop)


def test_byte_range_content_range_beyond_size():
    with pytest.raises(ValueError, match="exceeds"):
        r(0, 1000).content_range(1000)


def test_byte_ranges_order_by_start():
    assert sorted([r(5, 6), r(0, 9), r(0, 1)]) == [r(0, 1), r(0, 9), r(5, 6)]


def test_range_not_satisfiable_carries_size():
    error = RangeNotSatisfiable(size=1000)
    assert error.size == 1000
    assert error.content_range == "bytes */1000"
    assert RangeNotSatisfiable(0).content_range == "bytes */0"


# --------------------------------------------------------------------------------------------------------
# parse_range: architecture.md §6, on a 1000-byte representation
# --------------------------------------------------------------------------------------------------------

# (reference row, Range header, expected ranges; None = ignore Range and serve 200 full)
REFERENCE_ROWS = [
    (2, "bytes=0-99", [r(0, 99)]),
    (3, "bytes=0-0", [r(0, 0)]),
    (3, "bytes=-1", [r(999, 999)]),
    (4, "bytes=990-", [r(990, 999)]),
    (5, "bytes=-10", [r(990, 999)]),
    (5, "bytes=-2000", [r(0, 999)]),
    (6, "bytes=900-5000", [r(900, 999)]),
    (6, f"bytes=0-{HUGE}", [r(0, 999)]),
    (9, "bytes=5-3", None),
    (9, "bytes=abc", None),
    (10, "items=0-9", None),
    (11, "Bytes=0-9", [r(0, 9)]),
    (11, "BYTES=0-9", [r(0, 9)]),
    (12, "bytes=0-1,5-6", [r(0, 1), r(5, 6)]),
    (12, "bytes=0-1,1-6", [r(0, 6)]),  # overlap coalesced: single range, plain 206
    (12, "bytes=0-1,2-6", [r(0, 6)]),  # adjacent coalesced
]


@pytest.mark.parametrize(
    ("row", "header", "expected"), REFERENCE_ROWS, ids=[f"row{row}:{h[:20]}" for row, h, _ in REFERENCE_ROWS]
)
def test_reference_rows(row, header, expected):
    assert parse_range(header, SIZE) == expected


def test_reference_row_2_content_range():
    (only,) = parse_range("bytes=0-99", SIZE)
    assert only.content_range(SIZE) == "bytes 0-99/1000"
    assert only.length == 100


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=-0", "bytes=5000-6000", "bytes=1000-,-0"])
def test_reference_rows_7_8_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable) as excinfo:
        parse_range(header, SIZE)
    assert excinfo.value.size == SIZE
    assert excinfo.value.content_range == "bytes */1000"


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=-0", "bytes=-5", "bytes=0-0", "bytes=5-3", None])
def test_reference_row_17_empty_representation_is_served_200(header):
    assert parse_range(header, 0) is None


# --------------------------------------------------------------------------------------------------------
# parse_range: edge cases
# --------------------------------------------------------------------------------------------------------

EDGE_CASES = [
    # absent / blank
    (None, None),
    ("", None),
    ("   ", None),
    # empty sets and bare dashes
    ("bytes=", None),
    ("bytes=,", None),
    ("bytes= , ,", None),
    ("bytes=-", None),
    ("bytes=--1", None),
    ("bytes=-1-", None),
    ("bytes=1-2-3", None),
    ("bytes=1--2", None),
    ("bytes", None),
    ("=0-9", None),
    ("bytes 0-9", None),
    ("bytes=0-9=", None),
    ("bytes=0-9;", None),
    # numbers: signs, spaces inside, non-ASCII digits, underscores, floats, hex
    ("bytes=+1-2", None),
    ("bytes=1-+2", None),
    ("bytes=-+2", None),
    ("bytes=0 - 9", None),
    ("bytes=0 -9", None),
    ("bytes=\u0661-\u0662", None),  # Arabic-Indic digits: int() would accept them
    ("bytes=1_0-2_0", None),  # so would it these
    ("bytes=1.5-2", None),
    ("bytes=0x10-0x20", None),
    # one invalid spec voids the whole set
    ("bytes=0-1,abc", None),
    ("bytes=0-1,5-3", None),
    ("bytes=0-1,-", None),
    # unit
    ("bits=0-9", None),
    ("bytesx=0-9", None),
    ("none", None),
    ("byte\u017f=0-9", None),  # LONG S casefolds to "s" but is no "bytes"
    ("bYtEs=0-9", [r(0, 9)]),
    (" bytes =0-9", [r(0, 9)]),  # tolerated
    # whitespace and empty list elements (RFC 9110 §5.6.1)
    ("bytes= 0-9", [r(0, 9)]),
    ("bytes=0-1 , 5-6", [r(0, 1), r(5, 6)]),
    ("bytes=0-1,\t5-6", [r(0, 1), r(5, 6)]),
    ("bytes=,0-1,,5-6,", [r(0, 1), r(5, 6)]),
    ("  bytes=0-9  ", [r(0, 9)]),
    # leading zeros
    ("bytes=000-0099", [r(0, 99)]),
    ("bytes=-0010", [r(990, 999)]),
    (f"bytes=0000000000000000000000{HUGE}-", "416"),
    # huge numbers clip, never overflow
    (f"bytes={HUGE}-{HUGE}", "416"),
    (f"bytes=-{HUGE}", [r(0, 999)]),
    (f"bytes=999-{HUGE}{HUGE}", [r(999, 999)]),
    # boundaries
    ("bytes=999-999", [r(999, 999)]),
    ("bytes=999-", [r(999, 999)]),
    ("bytes=0-999", [r(0, 999)]),
    ("bytes=-1000", [r(0, 999)]),
    ("bytes=-999", [r(1, 999)]),
    # some unsatisfiable ranges among satisfiable ones: keep the satisfiable
    ("bytes=1000-,0-9", [r(0, 9)]),
    ("bytes=-0,990-", [r(990, 999)]),
    ("bytes=5000-6000,10-19,-0", [r(10, 19)]),
    # sorting and coalescing
    ("bytes=500-599,0-99", [r(0, 99), r(500, 599)]),
    ("bytes=-10,0-9", [r(0, 9), r(990, 999)]),
    ("bytes=0-9,10-19,20-29", [r(0, 29)]),
    ("bytes=0-499,-500", [r(0, 999)]),
    ("bytes=0-0,-1", [r(0, 0), r(999, 999)]),
    ("bytes=0-99,10-19", [r(0, 99)]),  # contained
    ("bytes=0-,0-", [r(0, 999)]),
]


@pytest.mark.parametrize(("header", "expected"), EDGE_CASES, ids=[repr(h)[:30] for h, _ in EDGE_CASES])
def test_edge_cases(header, expected):
    if expected == "416":
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, SIZE)
    else:
        assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", [r(0, 0)]),
        ("bytes=-1", [r(0, 0)]),
        ("bytes=0-", [r(0, 0)]),
        ("bytes=-5", [r(0, 0)]),
        (f"bytes=0-{HUGE}", [r(0, 0)]),
        ("bytes=0-0,-1", [r(0, 0)]),
        ("bytes=1-", "416"),
        ("bytes=-0", "416"),
    ],
)
def test_size_one(header, expected):
    if expected == "416":
        with pytest.raises(RangeNotSatisfiable) as excinfo:
            parse_range(header, 1)
        assert excinfo.value.content_range == "bytes */1"
    else:
        assert parse_range(header, 1) == expected


def test_negative_size_is_a_bug():
    with pytest.raises(ValueError, match="size"):
        parse_range("bytes=0-1", -1)


# --------------------------------------------------------------------------------------------------------
# parse_range: abusive sets (RFC 9110 §14.3)
# --------------------------------------------------------------------------------------------------------


def test_up_to_max_ranges_are_served():
    header = "bytes=" + ",".join(f"{i * 10}-{i * 10}" for i in range(MAX_RANGES))
    assert parse_range(header, SIZE) == [r(i * 10, i * 10) for i in range(MAX_RANGES)]


def test_more_than_max_ranges_is_ignored():
    header = "bytes=" + ",".join(f"{i * 10}-{i * 10}" for i in range(MAX_RANGES + 1))
    assert parse_range(header, SIZE) is None


def test_max_ranges_counts_specs_even_if_they_coalesce():
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(MAX_RANGES + 1))
    assert parse_range(header, SIZE) is None
    assert parse_range(header, SIZE, max_ranges=MAX_RANGES + 1) == [r(0, MAX_RANGES)]


def test_empty_elements_do_not_count_towards_max_ranges():
    header = "bytes=" + ",".join(["0-0"] + [""] * 100)
    assert parse_range(header, SIZE) == [r(0, 0)]


def test_max_ranges_is_configurable():
    assert parse_range("bytes=0-1,5-6", SIZE, max_ranges=1) is None


def test_adjacent_ranges_are_not_overlaps():
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(MAX_RANGES))
    assert parse_range(header, SIZE) == [r(0, MAX_RANGES - 1)]


@pytest.mark.parametrize(
    ("header", "served"),
    [
        ("bytes=0-9,5-14", True),  # one overlap
        ("bytes=0-9,5-14,10-19", True),  # two
        ("bytes=0-9,5-14,10-19,15-24", False),  # three
        ("bytes=0-,0-,0-", True),
        ("bytes=0-,0-,0-,0-", False),
        ("bytes=-1,-1,-1,-1", False),  # the same byte, four times
        ("bytes=0-99,1-1,2-2,3-3", False),  # small ranges inside a large one
        ("bytes=0-0,2-2,4-4,6-6,8-8", True),  # many small, none overlapping
        # overlaps are counted among satisfiable ranges only
        ("bytes=1000-,1000-,1000-,1000-,0-9", True),
    ],
)
def test_many_overlapping_ranges_are_ignored(header, served):
    assert (parse_range(header, SIZE) is not None) is served


def test_max_overlapping_is_configurable():
    assert parse_range("bytes=0-9,5-14", SIZE, max_overlapping=0) is None
    assert parse_range("bytes=0-9,10-14", SIZE, max_overlapping=0) == [r(0, 14)]


def test_long_header_is_ignored():
    header = "bytes=0-0" + "," * (MAX_HEADER_LENGTH - len("bytes=0-0"))
    assert len(header) == MAX_HEADER_LENGTH
    assert parse_range(header, SIZE) == [r(0, 0)]
    assert parse_range(header + ",", SIZE) is None
    assert parse_range("bytes=0-" + "9" * 5000, SIZE) is None  # no int() of thousands of digits


# --------------------------------------------------------------------------------------------------------
# parse_range: properties
# --------------------------------------------------------------------------------------------------------

ows = st.sampled_from(["", " ", "\t", "  "])
specs = st.one_of(
    st.tuples(st.just("int"), st.integers(0, 300), st.none() | st.integers(0, 300)),
    st.tuples(st.just("suffix"), st.integers(0, 300), st.none()),
)


def spec_text(spec: tuple[str, int, int | None]) -> str:
    kind, a, b = spec
    if kind == "suffix":
        return f"-{a}"
    return f"{a}-" if b is None else f"{a}-{b}"


def requested_bytes(spec: tuple[str, int, int | None], size: int) -> set[int]:
    """The bytes a (valid) range-spec selects, straight from RFC 9110 §14.1.2."""
    kind, a, b = spec
    if kind == "suffix":
        return set(range(max(0, size - a), size))
    last = size - 1 if b is None else min(b, size - 1)
    return set(range(a, last + 1))


@st.composite
def range_headers(draw):
    chosen = draw(st.lists(specs.filter(lambda s: s[2] is None or s[2] >= s[1]), min_size=1, max_size=20))
    unit = draw(st.sampled_from(["bytes", "Bytes", "BYTES"]))
    elements = []
    for spec in chosen:
        elements.append(draw(ows) + spec_text(spec) + draw(ows))
        if draw(st.booleans()) and draw(st.booleans()):
            elements.append(draw(ows))  # an empty list element
    return chosen, f"{unit}={','.join(elements)}"


def overlaps_with_earlier(byte_sets: list[set[int]]) -> int:
    ordered = sorted(byte_sets, key=lambda s: (min(s), max(s)))
    return sum(1 for i, current in enumerate(ordered) if any(current & earlier for earlier in ordered[:i]))


@given(range_headers(), st.integers(0, 400))
@settings(max_examples=300)
def test_parse_range_properties(chosen_and_header, size):
    chosen, header = chosen_and_header
    wanted = [requested_bytes(spec, size) for spec in chosen]
    satisfiable = [s for s in wanted if s]
    if size > 0 and not satisfiable:
        with pytest.raises(RangeNotSatisfiable) as excinfo:
            parse_range(header, size)
        assert excinfo.value.size == size
        return
    result = parse_range(header, size)
    if result is None:
        # Only the documented reasons to ignore a valid header.
        assert size == 0 or len(chosen) > MAX_RANGES or overlaps_with_earlier(satisfiable) > 2
        return
    assert size > 0
    assert len(chosen) <= MAX_RANGES
    assert satisfiable
    # Within [0, size), sorted, non-overlapping, non-adjacent.
    for byte_range in result:
        assert 0 <= byte_range.start < byte_range.stop <= size
    for before, after in itertools.pairwise(result):
        assert before.stop < after.start
    # Exactly the requested bytes: each byte requested by a satisfiable spec is covered, and no other.
    covered = set().union(*(set(range(x.start, x.stop)) for x in result))
    assert covered == set().union(*satisfiable)


def check_total(header: str, size: int) -> None:
    """Any input: a list of in-bounds ranges, None or RangeNotSatisfiable - never another exception."""
    try:
        result = parse_range(header, size)
    except RangeNotSatisfiable:
        assert size > 0
        return
    if result is not None:
        assert result
        assert all(0 <= x.start < x.stop <= size for x in result)


@given(st.text(max_size=60), st.integers(0, 2000))
@settings(max_examples=300)
def test_parse_range_never_crashes(header, size):
    check_total(header, size)


@given(st.text(alphabet="bytesBYTES=-0123456789, \t", max_size=40), st.integers(0, 50))
@settings(max_examples=500)
def test_parse_range_never_crashes_on_near_valid_headers(header, size):
    check_total(header, size)


# --------------------------------------------------------------------------------------------------------
# if_range_allows (RFC 9110 §13.1.5; reference rows 13-15)
# --------------------------------------------------------------------------------------------------------

ETAG = '"v1-abc"'
LAST_MODIFIED = datetime(2024, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
IMF = "Fri, 01 Mar 2024 12:30:45 GMT"


@pytest.mark.parametrize(
    ("if_range", "allowed"),
    [
        (None, True),  # absent
        (ETAG, True),  # row 13: current strong ETag
        (f" {ETAG} ", True),
        ('"v0-old"', False),  # row 14: stale
        (f"W/{ETAG}", False),  # row 14: weak form of the current tag
        ('"v1-abc', False),  # unterminated
        ('"v1-abc", "v1-abc"', False),  # a list is no entity-tag
        ('"V1-ABC"', False),  # opaque-tags compare case-sensitively
        (IMF, True),  # row 15: exact Last-Modified
        ("Friday, 01-Mar-24 12:30:45 GMT", True),  # obsolete formats, same instant
        ("Fri Mar  1 12:30:45 2024", True),
        ("Fri, 01 Mar 2024 12:30:44 GMT", False),  # row 14: earlier date
        ("Fri, 01 Mar 2024 12:30:46 GMT", False),  # later date: still not an exact match
        ("Fri, 01 Mar 2024 12:30:45 UTC", False),  # unparsable
        ("yesterday", False),
        ("", False),  # present but empty: neither tag nor date, so the condition is false
    ],
)
def test_if_range(if_range, allowed):
    assert if_range_allows(if_range, etag=ETAG, last_modified=LAST_MODIFIED) is allowed


def test_if_range_with_weak_current_etag_never_matches():
    assert not if_range_allows('W/"x"', etag='W/"x"', last_modified=LAST_MODIFIED)
    assert not if_range_allows('"x"', etag='W/"x"', last_modified=LAST_MODIFIED)


def test_if_range_date_in_other_timezone_and_naive_last_modified():
    plus_two = LAST_MODIFIED.astimezone(timezone(timedelta(hours=2)))
    assert if_range_allows(IMF, etag=ETAG, last_modified=plus_two)
    naive_utc = LAST_MODIFIED.replace(tzinfo=None)
    assert if_range_allows(IMF, etag=ETAG, last_modified=naive_utc)


# --------------------------------------------------------------------------------------------------------
# multipart/byteranges (RFC 9110 §14.6)
# --------------------------------------------------------------------------------------------------------

CONTENT = bytes(range(256)) * 4  # 1024 bytes, including CR, LF and "-"


def assemble(plan: MultipartPlan, content: bytes) -> bytes:
    return b"".join(iter_multipart(plan, lambda x: [content[x.start : x.stop]]))


def test_multipart_rfc_example_layout():
    plan = plan_multipart(
        [r(500, 999), r(7000, 7999)],
        size=8000,
        content_type="application/pdf",
        boundary="THIS_STRING_SEPARATES",
    )
    assert plan.content_type == "multipart/byteranges; boundary=THIS_STRING_SEPARATES"
    assert plan.parts[0][0] == (
        b"\r\n--THIS_STRING_SEPARATES\r\n"
        b"Content-Type: application/pdf\r\n"
        b"Content-Range: bytes 500-999/8000\r\n\r\n"
    )
    assert plan.parts[1][1] == r(7000, 7999)
    assert plan.epilogue == b"\r\n--THIS_STRING_SEPARATES--\r\n"


def test_multipart_content_length_is_exact():
    ranges = parse_range("bytes=0-9,100-199,-24", len(CONTENT))
    plan = plan_multipart(ranges, size=len(CONTENT), content_type="video/mp4")
    body = assemble(plan, CONTENT)
    assert len(body) == plan.content_length
    assert body.startswith(b"\r\n--" + plan.boundary.encode())
    assert body.endswith(plan.epilogue)


def split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """A minimal RFC 2046 parser: the CRLF before each delimiter belongs to the delimiter."""
    delimiter = b"\r\n--" + boundary.encode()
    assert body.startswith(delimiter)
    chunks = body.split(delimiter)
    assert chunks[0] == b""
    assert chunks[-1] == b"--\r\n"
    parts = []
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n")
        head, _, payload = chunk[2:].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode("ascii").split("\r\n"))
        parts.append((headers, payload))
    return parts


@given(
    st.lists(st.tuples(st.integers(0, 1023), st.integers(1, 64)), min_size=2, max_size=6),
)
@settings(max_examples=100)
def test_multipart_parts_recovered_by_simple_parser(starts_and_lengths):
    ranges = [ByteRange(start, min(start + length, len(CONTENT))) for start, length in starts_and_lengths]
    plan = plan_multipart(ranges, size=len(CONTENT), content_type="application/octet-stream")
    body = assemble(plan, CONTENT)
    assert len(body) == plan.content_length
    parts = split_multipart(body, plan.boundary)
    assert len(parts) == len(ranges)
    for (headers, payload), expected in zip(parts, ranges, strict=True):
        assert headers == {
            "Content-Type": "application/octet-stream",
            "Content-Range": expected.content_range(len(CONTENT)),
        }
        assert payload == CONTENT[expected.start : expected.stop]


def test_multipart_parts_recovered_by_email_parser():
    content = b"".join(f"line {i:04d};".encode() for i in range(100))  # no CR/LF for the text parser
    ranges = parse_range("bytes=0-9, 500-519, -11", len(content))
    plan = plan_multipart(ranges, size=len(content), content_type="text/plain; charset=utf-8")
    body = assemble(plan, content)
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        f"Content-Type: {plan.content_type}\r\n\r\n".encode() + body
    )
    assert message.get_content_type() == "multipart/byteranges"
    assert message.get_param("boundary") == plan.boundary
    parts = list(message.iter_parts())
    assert len(parts) == 3
    for part, expected in zip(parts, ranges, strict=True):
        assert part.get_content_type() == "text/plain"
        assert part["Content-Range"] == expected.content_range(len(content))
        assert part.get_payload(decode=True) == content[expected.start : expected.stop]
    assert not message.defects


def test_multipart_random_boundary():
    one = plan_multipart([r(0, 0), r(2, 2)], size=10, content_type="text/plain")
    two = plan_multipart([r(0, 0), r(2, 2)], size=10, content_type="text/plain")
    assert one.boundary != two.boundary
    assert re.fullmatch(r"[0-9a-f]{32}", one.boundary)


def test_multipart_boundary_that_is_not_a_token_is_quoted():
    plan = plan_multipart([r(0, 0), r(2, 2)], size=10, content_type="text/plain", boundary="a b:c")
    assert plan.content_type == 'multipart/byteranges; boundary="a b:c"'


@pytest.mark.parametrize("boundary", ["", "x" * 71, "ends with space ", "bad\r\nboundary", "é"])
def test_multipart_invalid_boundary(boundary):
    with pytest.raises(ValueError, match="boundary"):
        plan_multipart([r(0, 0), r(2, 2)], size=10, content_type="text/plain", boundary=boundary)


@pytest.mark.parametrize("content_type", ["text/plain\r\nX-Evil: 1", "", "text/plain; name=é"])
def test_multipart_content_type_must_be_a_safe_header_value(content_type):
    with pytest.raises(ValueError, match="content_type"):
        plan_multipart([r(0, 0), r(2, 2)], size=10, content_type=content_type)


def test_multipart_needs_two_ranges_within_size():
    with pytest.raises(ValueError, match="at least two"):
        plan_multipart([r(0, 0)], size=10, content_type="text/plain")
    with pytest.raises(ValueError, match="exceeds"):
        plan_multipart([r(0, 0), r(5, 10)], size=10, content_type="text/plain")


def test_iter_multipart_refuses_short_or_long_reads():
    plan = plan_multipart([r(0, 3), r(6, 7)], size=10, content_type="text/plain")
    with pytest.raises(ValueError, match="produced 3 of the 4"):
        b"".join(iter_multipart(plan, lambda x: [b"abc"]))
    with pytest.raises(ValueError, match="more than"):
        b"".join(iter_multipart(plan, lambda x: [b"abcde"]))


def test_iter_multipart_streams_chunks():
    plan = plan_multipart([r(0, 3), r(6, 7)], size=10, content_type="text/plain")
    chunks = list(iter_multipart(plan, lambda x: [b"0123456789"[i : i + 1] for i in range(x.start, x.stop)]))
    assert chunks[0] == plan.parts[0][0]
    assert chunks[1:5] == [b"0", b"1", b"2", b"3"]
    assert chunks[-1] == plan.epilogue
