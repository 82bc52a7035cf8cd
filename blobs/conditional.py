"""Conditional requests (RFC 9110 §13): entity-tags, HTTP-dates and precondition precedence.

Pure Python, stdlib only: the stream view wraps this, it imports nothing from Django.

Header values are passed as the ``str`` a WSGI/ASGI server hands over (bytes decoded as latin-1), and
``None`` means "the field is absent". A field that is present but empty is *not* the same as absent:
``If-Match:`` with no entity-tags is a (valid, RFC 9110 §5.6.1) empty list that matches nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

__all__ = [
    "evaluate_preconditions",
    "http_date",
    "is_entity_tag",
    "parse_entity_tags",
    "parse_http_date",
    "strong_match",
    "truncate_to_seconds",
    "weak_match",
]

# RFC 9110 §8.8.3: entity-tag = [ weakness ] opaque-tag; weakness = %s"W/" (case-sensitive);
# opaque-tag = DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text (%x80-FF).
# Note that "," is a legal etagc, so a list cannot simply be split on commas.
_ENTITY_TAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')
_OWS = " \t"

_SAFE_METHODS = frozenset({"GET", "HEAD"})


# --------------------------------------------------------------------------------------------------------
# Entity-tags (RFC 9110 §8.8.3)
# --------------------------------------------------------------------------------------------------------


def is_entity_tag(value: str) -> bool:
    """True if ``value`` is exactly one syntactically valid entity-tag (strong or weak)."""
    return _ENTITY_TAG.fullmatch(value) is not None


def parse_entity_tags(header: str) -> list[str] | Literal["*"]:
    """Parse an If-Match / If-None-Match field value (RFC 9110 §13.1.1, §13.1.2).

    Returns ``"*"`` when the whole value is the wildcard, otherwise the entity-tags as written
    (``['"a"', 'W/"b"']``). Tolerant of optional whitespace and empty list elements (RFC 9110 §5.6.1);
    a malformed element is dropped up to the next comma rather than spoiling the whole list.
    """
    value = header.strip(_OWS)
    if value == "*":
        return "*"
    tags: list[str] = []
    pos, end = 0, len(value)
    while pos < end:
        char = value[pos]
        if char in _OWS or char == ",":
            pos += 1
            continue
        match = _ENTITY_TAG.match(value, pos)
        if match is not None:
            after = match.end()
            while after < end and value[after] in _OWS:
                after += 1
            if after == end or value[after] == ",":
                tags.append(match.group())
                pos = after
                continue
        # Malformed element (e.g. an unquoted tag, an unterminated quote, junk after the tag):
        # skip it up to the next comma.
        comma = value.find(",", pos)
        pos = end if comma == -1 else comma + 1
    return tags


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def strong_match(a: str, b: str) -> bool:
    """Strong comparison (RFC 9110 §8.8.3.2): both tags strong and their opaque-tags identical."""
    return not a.startswith("W/") and not b.startswith("W/") and a == b


def weak_match(a: str, b: str) -> bool:
    """Weak comparison (RFC 9110 §8.8.3.2): opaque-tags identical, either or both may be weak."""
    return _opaque(a) == _opaque(b)


# --------------------------------------------------------------------------------------------------------
# HTTP-date (RFC 9110 §5.6.7)
# --------------------------------------------------------------------------------------------------------

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_DAY = "|".join(_DAY_NAMES)
_LONG_DAY = "|".join(_LONG_DAY_NAMES)
_MONTH = "|".join(_MONTHS)
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"

# The grammar is case-sensitive ("GMT", day and month names), hence no re.IGNORECASE.
# IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT   e.g. Sun, 06 Nov 1994 08:49:37 GMT
_IMF_FIXDATE = re.compile(
    rf"(?:{_DAY}), (?P<day>[0-9]{{2}}) (?P<month>{_MONTH}) (?P<year>[0-9]{{4}}) {_TIME} GMT", re.ASCII
)
# rfc850-date = day-name-l "," SP date2 SP time-of-day SP GMT   e.g. Sunday, 06-Nov-94 08:49:37 GMT
_RFC850_DATE = re.compile(
    rf"(?:{_LONG_DAY}), (?P<day>[0-9]{{2}})-(?P<month>{_MONTH})-(?P<year>[0-9]{{2}}) {_TIME} GMT", re.ASCII
)
# asctime-date = day-name SP date3 SP time-of-day SP year   e.g. Sun Nov  6 08:49:37 1994
_ASCTIME_DATE = re.compile(
    rf"(?:{_DAY}) (?P<month>{_MONTH}) (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})", re.ASCII
)


def truncate_to_seconds(dt: datetime) -> datetime:
    """``dt`` in UTC with sub-second precision dropped: HTTP-dates have one-second resolution.

    A naive datetime is taken to be UTC already.
    """
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.replace(microsecond=0)


def http_date(dt: datetime) -> str:
    """Format ``dt`` as an IMF-fixdate (RFC 9110 §5.6.7), e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``.

    Locale-independent (no strftime ``%a``/``%b``). A naive datetime is taken to be UTC.
    """
    dt = truncate_to_seconds(dt)
    return (
        f"{_DAY_NAMES[dt.weekday()]}, {dt.day:02d} {_MONTHS[dt.month - 1]} {dt.year:04d} "
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} GMT"
    )


def parse_http_date(value: str, *, now: datetime | None = None) -> datetime | None:
    """Parse an HTTP-date in any of the three formats of RFC 9110 §5.6.7; ``None`` if invalid.

    The result is timezone-aware UTC. ``now`` (injectable for tests) resolves the two-digit year of the
    obsolete rfc850-date: a year that would be more than 50 years in the future is the most recent past
    year with the same last two digits. A leap second (``:60``) is read as ``:59``. The day-name is not
    checked against the date (recipients are not required to, and some clients get it wrong).
    """
    value = value.strip(_OWS)
    for pattern in (_IMF_FIXDATE, _ASCTIME_DATE, _RFC850_DATE):
        match = pattern.fullmatch(value)
        if match is not None:
            break
    else:
        return None

    year = int(match["year"])
    if pattern is _RFC850_DATE:
        current_year = (now or datetime.now(UTC)).year
        year += current_year - current_year % 100
        if year > current_year + 50:
            year -= 100
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    if second == 60:
        second = 59
    try:
        return datetime(
            year, _MONTHS.index(match["month"]) + 1, int(match["day"]), hour, minute, second, tzinfo=UTC
        )
    except ValueError:  # 31 Feb, 25:00:00, year 0000 ...
        return None


# --------------------------------------------------------------------------------------------------------
# Precondition evaluation (RFC 9110 §13.2.2)
# --------------------------------------------------------------------------------------------------------


def _if_match_passes(header: str, etag: str) -> bool:
    # RFC 9110 §13.1.1: "*" is true when a current representation exists (it does: we have its ETag);
    # otherwise true only if some listed tag strongly matches.
    tags = parse_entity_tags(header)
    if tags == "*":
        return True
    return any(strong_match(tag, etag) for tag in tags)


def _if_none_match_passes(header: str, etag: str) -> bool:
    # RFC 9110 §13.1.2: "*" is false when a current representation exists; otherwise false if any listed
    # tag weakly matches.
    tags = parse_entity_tags(header)
    if tags == "*":
        return False
    return not any(weak_match(tag, etag) for tag in tags)


def evaluate_preconditions(
    *,
    method: str,
    etag: str,
    last_modified: datetime,
    if_match: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
    if_unmodified_since: str | None = None,
) -> int | None:
    """Evaluate the preconditions of a request on an existing representation, in RFC 9110 §13.2.2 order.

    Returns ``None`` to proceed (then Range/If-Range, step 5, is the caller's business), ``412`` or ``304``.
    ``etag`` is the current entity-tag in full quoted form (``'"abc"'``); ``last_modified`` is compared
    at one-second resolution. ``method`` is matched case-sensitively (RFC 9110 §9.1). Unparsable dates
    are ignored, as §13.1.3 and §13.1.4 require.
    """
    is_get_or_head = method in _SAFE_METHODS
    modified = truncate_to_seconds(last_modified)

    # Step 1: If-Match (strong comparison) -> false: 412.
    if if_match is not None:
        if not _if_match_passes(if_match, etag):
            return 412
    # Step 2: only without If-Match, If-Unmodified-Since -> modified after the date: 412.
    elif if_unmodified_since is not None:
        date = parse_http_date(if_unmodified_since)
        if date is not None and modified > date:
            return 412

    # Step 3: If-None-Match (weak comparison) -> false: 304 for GET/HEAD, 412 otherwise.
    if if_none_match is not None:
        if not _if_none_match_passes(if_none_match, etag):
            return 304 if is_get_or_head else 412
    # Step 4: only without If-None-Match and only for GET/HEAD, If-Modified-Since -> not modified: 304.
    elif is_get_or_head and if_modified_since is not None:
        date = parse_http_date(if_modified_since)
        if date is not None and modified <= date:
            return 304

    # Steps 5-6: proceed (Range and If-Range are evaluated by blobs.ranges).
    return None
