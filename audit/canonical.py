"""RFC 8785 JSON Canonicalization Scheme (JCS), pure Python, no Django.

The audit chain hashes events in this form, so that any JCS implementation (in any language) recomputes the
same bytes from an export. Values are the JSON data model: dict (str keys), list/tuple, str, int, float,
bool, None. Anything else, a non-finite number, an integer beyond the range of a double or a lone
surrogate (I-JSON, RFC 7493 §2.1) raises ``CanonicalizationError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring as _encode_string
from typing import Any

__all__ = ["CanonicalizationError", "canonical_bytes", "canonicalize", "serialize_number"]


class CanonicalizationError(ValueError):
    """The value is not in the I-JSON subset JCS canonicalizes."""


def serialize_number(value: float) -> str:
    """ECMAScript Number::toString (ECMA-262 §7.1.12.1), which RFC 8785 §3.2.2.3 adopts.

    ``repr`` gives the shortest digit string that round-trips (the same digits ECMAScript asks for);
    only the layout (plain, fraction, exponent) follows ECMAScript's rules here.
    """
    if math.isnan(value) or math.isinf(value):
        raise CanonicalizationError(f"{value!r} has no JSON representation (RFC 8785 §3.2.2.3)")
    if value == 0:
        return "0"  # -0 included
    if value < 0:
        return "-" + serialize_number(-value)
    mantissa, _, exp_text = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    if fraction == "0":
        fraction = ""
    digits = (whole + fraction).lstrip("0")
    # n: the position of the decimal point relative to the first significant digit (value = 0.d1d2... x 10^n).
    n = len(whole) + (int(exp_text) if exp_text else 0)
    if whole == "0":
        n = -(len(fraction) - len(fraction.lstrip("0")))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    exponent = n - 1
    sign = "+" if exponent >= 0 else "-"
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{head}e{sign}{abs(exponent)}"


# A lone surrogate (U+D800..U+DFFF not in a pair: Python strings hold them as single code points).
_SURROGATE = re.compile("[\ud800-\udfff]")


# Integers a double holds exactly: their ECMAScript form is their decimal digits (below 10**21, RFC 8785
# §3.2.2.3), which ``int.__repr__`` writes without the float round trip (issue 14: every event has some).
_EXACT_INT = 2**53


def _serialize_string(value: str) -> str:
    # RFC 8785 §3.2.2.2: only ", \ and the C0 controls are escaped — ", \, \b, \f, \n, \r and \t in their
    # short forms, the other controls as \u00xx in lowercase hex — and everything else is emitted as is.
    # That is exactly what the standard library's C string encoder for ``ensure_ascii=False`` writes
    # (json.encoder.encode_basestring), which costs a fraction of a loop over the characters here; the audit
    # chain hashes a dozen strings per event (issue 14). The test module checks the two agree.
    if not value.isascii() and _SURROGATE.search(value):
        raise CanonicalizationError("lone surrogate in a string (I-JSON, RFC 7493 §2.1)")
    return _encode_string(value)


def _utf16_key(key: str) -> bytes:
    # RFC 8785 §3.2.3: properties sorted by their UTF-16 code units; big-endian bytes compare the same way.
    return key.encode("utf-16-be", "surrogatepass")


def _serialize(value: Any, out: list[str], depth: int) -> None:
    if depth > 100:
        raise CanonicalizationError("nesting deeper than 100 levels")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int) and -_EXACT_INT <= value <= _EXACT_INT:
        out.append(int.__repr__(value))
    elif isinstance(value, int):
        # JCS numbers are IEEE 754 doubles (RFC 8785 §3.2.2.3): an integer means the double a JSON parser
        # reads from it. Callers that must not lose precision check before (audit.recording does).
        try:
            out.append(serialize_number(float(value)))
        except OverflowError:
            raise CanonicalizationError(
                f"integer {value} is beyond the range of an IEEE 754 double"
            ) from None
    elif isinstance(value, float):
        out.append(serialize_number(value))
    elif isinstance(value, str):
        out.append(_serialize_string(value))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalizationError(f"object key {key!r} is not a string")
        out.append("{")
        # ASCII keys sort the same by code point as by UTF-16 code unit: no encoding needed.
        ordered = sorted(value) if "".join(value).isascii() else sorted(value, key=_utf16_key)
        for index, key in enumerate(ordered):
            if index:
                out.append(",")
            out.append(_serialize_string(key))
            out.append(":")
            _serialize(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _serialize(item, out, depth + 1)
        out.append("]")
    else:
        raise CanonicalizationError(f"{type(value).__name__} is not JSON data")


def canonicalize(value: Any) -> str:
    """The JCS text of ``value``."""
    out: list[str] = []
    _serialize(value, out, 0)
    return "".join(out)


def canonical_bytes(value: Any) -> bytes:
    """The JCS form as hashed and signed: UTF-8 (RFC 8785 §3.2.4)."""
    return canonicalize(value).encode("utf-8")
