"""RFC 8785 (JCS): the RFC's examples, ECMAScript number serialization, UTF-16 key order, I-JSON limits."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from audit.canonical import CanonicalizationError, canonical_bytes, canonicalize, serialize_number


def double(bits: str) -> float:
    return struct.unpack(">d", bytes.fromhex(bits))[0]


# RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript serialization.
@pytest.mark.parametrize(
    ("bits", "expected"),
    [
        ("0000000000000000", "0"),
        ("8000000000000000", "0"),  # minus zero
        ("0000000000000001", "5e-324"),
        ("8000000000000001", "-5e-324"),
        ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("ffefffffffffffff", "-1.7976931348623157e+308"),
        ("4340000000000000", "9007199254740992"),
        ("c340000000000000", "-9007199254740992"),
        ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"),
        ("44b52d02c7e14af6", "1e+23"),
        ("44b52d02c7e14af7", "1.0000000000000001e+23"),
        ("444b1ae4d6e2ef4e", "999999999999999700000"),
        ("444b1ae4d6e2ef4f", "999999999999999900000"),
        ("444b1ae4d6e2ef50", "1e+21"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("41b3de4355555553", "333333333.3333332"),
        ("41b3de4355555554", "333333333.33333325"),
        ("41b3de4355555555", "333333333.3333333"),
        ("41b3de4355555556", "333333333.3333334"),
        ("41b3de4355555557", "333333333.33333343"),
        ("43143ff3c1cb0959", "1424953923781206.2"),
    ],
)
def test_number_serialization_matches_the_rfc_table(bits, expected):
    assert serialize_number(double(bits)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (-1.5, "-1.5"),
        (0.1, "0.1"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1.5e-7, "1.5e-7"),
        (123e-20, "1.23e-18"),
        (0.000123, "0.000123"),
        (12345.678, "12345.678"),
    ],
)
def test_layout_rules(value, expected):
    assert serialize_number(value) == expected


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinity_are_refused(bits):
    with pytest.raises(CanonicalizationError):
        serialize_number(double(bits))


def test_the_rfc_main_example():
    # RFC 8785 §3.2.2 input, as a parser would deliver it, and its §3.2.4 output.
    text = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonicalize(json.loads(text)) == expected
    assert canonical_bytes(json.loads(text)) == expected.encode("utf-8")


def test_properties_sort_by_utf16_code_units():
    # RFC 8785 §3.2.3: the emoji (a surrogate pair, 0xD83D...) sorts before U+FB33, unlike code point order.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonicalize(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize(
    "value",
    [
        {"a": {1, 2}},
        {"a": b"bytes"},
        {1: "non-string key"},
        {"a": math.nan},
        {"a": 10**400},
        {"a": "\ud800"},
        {"a": object()},
    ],
)
def test_values_outside_i_json_are_refused(value):
    with pytest.raises(CanonicalizationError):
        canonicalize(value)


def test_integers_are_the_doubles_a_json_parser_reads():
    assert (
        canonicalize([2**53, -(2**53), 0, True, None]) == "[9007199254740992,-9007199254740992,0,true,null]"
    )
    assert canonicalize([2**53 + 1, 10**300]) == "[9007199254740992,1e+300]"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(st.characters(blacklist_categories=("Cs",)), max_size=5), children, max_size=4
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_form_is_valid_json_and_a_fixed_point(value):
    text = canonicalize(value)
    parsed = json.loads(text)
    assert canonicalize(parsed) == text


def _rfc8785_string(value: str) -> str:
    # RFC 8785 §3.2.2.2 read literally, one character at a time: the oracle for the fast encoder.
    short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    out = []
    for char in value:
        if char in short:
            out.append(short[char])
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def test_every_control_character_and_its_neighbours_serialize_as_the_rfc_says():
    chars = [chr(code) for code in range(0x30)] + ["\x7f", "\x80", "\u2028", "\u2029", "\ufeff", "\U0001f600"]
    for char in chars:
        assert canonicalize(char) == _rfc8785_string(char), hex(ord(char))
    assert canonicalize("".join(chars)) == _rfc8785_string("".join(chars))


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_strings_serialize_as_the_rfc_says(value):
    assert canonicalize(value) == _rfc8785_string(value)
    assert canonicalize({value: value}) == "{" + _rfc8785_string(value) + ":" + _rfc8785_string(value) + "}"


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", "\udc00\ud800"])
def test_a_lone_surrogate_anywhere_in_a_string_is_refused(value):
    with pytest.raises(CanonicalizationError, match="surrogate"):
        canonicalize(value)
    with pytest.raises(CanonicalizationError, match="surrogate"):
        canonicalize({value: 1})


@given(st.integers(min_value=-(2**64), max_value=2**64))
@example(2**53)
@example(2**53 + 1)
@example(-(2**53))
@example(-(2**53) - 1)
def test_an_integer_is_the_double_a_json_parser_reads_on_either_side_of_2_to_the_53(value):
    # Up to 2**53 the digits are written directly; beyond, through the double (RFC 8785 §3.2.2.3).
    assert canonicalize(value) == serialize_number(float(value))
    assert canonicalize([value]) == f"[{serialize_number(float(value))}]"


# Keys of every plane: ASCII only (sorted directly), or with characters whose code point order and UTF-16
# order differ (U+E000-U+FFFF against the surrogate pairs of U+10000 and above).
@given(st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",)), max_size=4), st.integers(0, 9)))
def test_properties_sort_by_utf16_code_units_whatever_the_keys(value):
    ordered = sorted(value, key=lambda key: key.encode("utf-16-be"))
    assert list(json.loads(canonicalize(value))) == ordered
