"""blobs.conditional: entity-tags, HTTP-dates and RFC 9110 §13.2.2 precondition precedence."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobs.conditional import (
    evaluate_preconditions,
    http_date,
    parse_entity_tags,
    parse_http_date,
    strong_match,
    weak_match,
)

# --------------------------------------------------------------------------------------------------------
# Entity-tags
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("*", "*"),
        ("  *  ", "*"),
        ('"a"', ['"a"']),
        ('W/"b"', ['W/"b"']),
        ('"a", W/"b"', ['"a"', 'W/"b"']),
        ('"a",W/"b"', ['"a"', 'W/"b"']),
        (' \t"a" ,\t W/"b" ', ['"a"', 'W/"b"']),
        ('"a",,, "b",', ['"a"', '"b"']),  # empty list elements (RFC 9110 §5.6.1)
        ('""', ['""']),  # the empty opaque-tag is valid
        ('"a,b", "c"', ['"a,b"', '"c"']),  # "," is an etagc: do not split inside quotes
        ('"\xe9t\xe9"', ['"\xe9t\xe9"']),  # obs-text, as decoded from latin-1
        ("", []),
        ("   ", []),
        # malformed elements dropped
        ("abc", []),
        ('abc, "ok"', ['"ok"']),
        ('"unterminated, "ok"', ['"ok"']),  # '"unterminated' is dropped up to the comma
        ('"a" junk, "b"', ['"b"']),
        ('w/"lower", "b"', ['"b"']),  # weakness is case-sensitive
        ('W/ "space"', []),
        ('"has space", "b"', ['"b"']),
        ('"has"quote", "b"', ['"b"']),
        ('*, "a"', ['"a"']),  # "*" is only the wildcard when it is the whole value
        ('"a\x7f", "b"', ['"b"']),  # DEL is not an etagc
    ],
)
def test_parse_entity_tags(header, expected):
    assert parse_entity_tags(header) == expected


@given(st.lists(st.tuples(st.booleans(), st.text(alphabet="abcXYZ019-_,!#", max_size=8)), max_size=6))
@settings(max_examples=100)
def test_parse_entity_tags_round_trips_lists(tags):
    written = [("W/" if weak else "") + f'"{opaque}"' for weak, opaque in tags]
    assert parse_entity_tags(" , ".join(written)) == written


@given(st.text(max_size=40))
def test_parse_entity_tags_never_crashes(header):
    result = parse_entity_tags(header)
    assert result == "*" or all(tag.endswith('"') for tag in result)


@pytest.mark.parametrize(
    # RFC 9110 §8.8.3.2, the comparison table.
    ("a", "b", "strong", "weak"),
    [
        ('W/"1"', 'W/"1"', False, True),
        ('W/"1"', 'W/"2"', False, False),
        ('W/"1"', '"1"', False, True),
        ('"1"', '"1"', True, True),
        ('"1"', '"2"', False, False),
        ('"a"', '"A"', False, False),
    ],
)
def test_entity_tag_comparison(a, b, strong, weak):
    assert strong_match(a, b) is strong
    assert strong_match(b, a) is strong
    assert weak_match(a, b) is weak
    assert weak_match(b, a) is weak


# --------------------------------------------------------------------------------------------------------
# HTTP-date
# --------------------------------------------------------------------------------------------------------

NOV_6_1994 = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # ANSI C asctime()
        "  Sun, 06 Nov 1994 08:49:37 GMT\t",
    ],
)
def test_parse_http_date_three_formats(value):
    assert parse_http_date(value, now=datetime(2024, 1, 1, tzinfo=UTC)) == NOV_6_1994


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 06 Nov 1994 08:49:37",
        "sun, 06 nov 1994 08:49:37 gmt",  # the grammar is case-sensitive
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 0000 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",  # more than one member
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",  # non-ASCII digits
        "1994-11-06T08:49:37Z",
    ],
)
def test_parse_http_date_invalid(value):
    assert parse_http_date(value) is None


def test_parse_http_date_leap_second():
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") == datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("two_digit", "now_year", "year"),
    [
        ("94", 2024, 1994),
        ("24", 2024, 2024),
        ("74", 2024, 2074),  # exactly 50 years ahead: not *more* than 50
        ("75", 2024, 1975),  # 51 years ahead -> the most recent past year ending in 75
        ("99", 2001, 1999),
        ("00", 2099, 2000),  # counted from the current century, only ever moved back
    ],
)
def test_parse_http_date_rfc850_two_digit_year(two_digit, now_year, year):
    parsed = parse_http_date(
        f"Sunday, 06-Nov-{two_digit} 08:49:37 GMT", now=datetime(now_year, 6, 1, tzinfo=UTC)
    )
    assert parsed is not None
    assert parsed.year == year


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (NOV_6_1994, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (NOV_6_1994.replace(microsecond=999999), "Sun, 06 Nov 1994 08:49:37 GMT"),
        (NOV_6_1994.astimezone(timezone(timedelta(hours=-5))), "Sun, 06 Nov 1994 08:49:37 GMT"),
        (NOV_6_1994.replace(tzinfo=None), "Sun, 06 Nov 1994 08:49:37 GMT"),  # naive is UTC
        (datetime(2024, 2, 29, 0, 0, 0, tzinfo=UTC), "Thu, 29 Feb 2024 00:00:00 GMT"),
    ],
)
def test_http_date(dt, expected):
    assert http_date(dt) == expected


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)))
def test_http_date_round_trips(dt):
    formatted = http_date(dt)
    assert parse_http_date(formatted) == dt.replace(microsecond=0)
    assert formatted == email.utils.format_datetime(dt.replace(microsecond=0), usegmt=True)


# --------------------------------------------------------------------------------------------------------
# evaluate_preconditions: RFC 9110 §13.2.2
# --------------------------------------------------------------------------------------------------------

ETAG = '"v2"'
LAST_MODIFIED = datetime(2024, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)  # sub-second part must not matter
AT = "Fri, 01 Mar 2024 12:00:00 GMT"  # == Last-Modified
BEFORE = "Fri, 01 Mar 2024 11:59:59 GMT"
AFTER = "Fri, 01 Mar 2024 12:00:01 GMT"


def evaluate(method="GET", **headers):
    return evaluate_preconditions(method=method, etag=ETAG, last_modified=LAST_MODIFIED, **headers)


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        # no preconditions
        ("GET", {}, None),
        ("PUT", {}, None),
        # step 1: If-Match, strong comparison
        ("GET", {"if_match": ETAG}, None),
        ("GET", {"if_match": '"v1", "v2"'}, None),
        ("GET", {"if_match": "*"}, None),
        ("GET", {"if_match": '"v1"'}, 412),
        ("GET", {"if_match": f"W/{ETAG}"}, 412),  # weak tag never matches strongly
        ("DELETE", {"if_match": '"v1"'}, 412),
        ("GET", {"if_match": "garbage"}, 412),  # no valid tag: nothing matches
        ("GET", {"if_match": ""}, 412),  # an empty list matches nothing
        # step 2: If-Unmodified-Since, only without If-Match
        ("GET", {"if_unmodified_since": AT}, None),
        ("GET", {"if_unmodified_since": AFTER}, None),
        ("GET", {"if_unmodified_since": BEFORE}, 412),
        ("PUT", {"if_unmodified_since": BEFORE}, 412),
        ("GET", {"if_unmodified_since": "not a date"}, None),  # invalid: ignored
        ("GET", {"if_match": ETAG, "if_unmodified_since": BEFORE}, None),  # If-Match wins: IUS ignored
        ("GET", {"if_match": '"v1"', "if_unmodified_since": AFTER}, 412),
        # step 3: If-None-Match, weak comparison
        ("GET", {"if_none_match": ETAG}, 304),
        ("HEAD", {"if_none_match": ETAG}, 304),
        ("GET", {"if_none_match": f"W/{ETAG}"}, 304),  # weak comparison
        ("GET", {"if_none_match": '"v1", W/"v2"'}, 304),
        ("GET", {"if_none_match": "*"}, 304),
        ("GET", {"if_none_match": '"v1"'}, None),
        ("GET", {"if_none_match": ""}, None),
        ("PUT", {"if_none_match": ETAG}, 412),
        ("POST", {"if_none_match": "*"}, 412),
        ("DELETE", {"if_none_match": '"v1"'}, None),
        ("get", {"if_none_match": ETAG}, 412),  # methods are case-sensitive (RFC 9110 §9.1)
        # step 4: If-Modified-Since, only without If-None-Match and only for GET/HEAD
        ("GET", {"if_modified_since": AT}, 304),
        ("HEAD", {"if_modified_since": AFTER}, 304),
        ("GET", {"if_modified_since": BEFORE}, None),
        ("GET", {"if_modified_since": "not a date"}, None),
        ("PUT", {"if_modified_since": AT}, None),
        ("POST", {"if_modified_since": AT}, None),
        ("GET", {"if_none_match": '"v1"', "if_modified_since": AT}, None),  # INM present: IMS ignored
        ("GET", {"if_none_match": ETAG, "if_modified_since": BEFORE}, 304),
        # ordering across steps
        ("GET", {"if_match": '"v1"', "if_none_match": ETAG}, 412),  # step 1 before step 3
        ("GET", {"if_match": ETAG, "if_none_match": ETAG}, 304),
        ("PUT", {"if_match": ETAG, "if_none_match": ETAG}, 412),
        ("GET", {"if_unmodified_since": BEFORE, "if_none_match": ETAG}, 412),  # step 2 before step 3
        ("GET", {"if_unmodified_since": BEFORE, "if_modified_since": AT}, 412),  # step 2 before step 4
        ("GET", {"if_unmodified_since": AT, "if_modified_since": AT}, 304),
        ("GET", {"if_match": "*", "if_unmodified_since": BEFORE, "if_modified_since": BEFORE}, None),
        (
            "GET",
            {
                "if_match": ETAG,
                "if_unmodified_since": BEFORE,
                "if_none_match": '"v1"',
                "if_modified_since": AT,
            },
            None,
        ),
    ],
)
def test_precedence(method, headers, expected):
    assert evaluate(method, **headers) == expected


def test_last_modified_in_another_timezone():
    elsewhere = LAST_MODIFIED.astimezone(timezone(timedelta(hours=9)))
    assert (
        evaluate_preconditions(method="GET", etag=ETAG, last_modified=elsewhere, if_modified_since=AT) == 304
    )
    assert (
        evaluate_preconditions(method="GET", etag=ETAG, last_modified=elsewhere, if_unmodified_since=BEFORE)
        == 412
    )


def test_obsolete_date_formats_are_honoured():
    assert evaluate(if_modified_since="Fri Mar  1 12:00:00 2024") == 304
    assert evaluate(if_modified_since="Friday, 01-Mar-24 12:00:00 GMT") == 304
