"""The bounded-depth JSON parser (erphub/parsers.py): deep nesting is a 400, never a RecursionError."""

from __future__ import annotations

import io
import json

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.exceptions import ParseError

from erphub.parsers import MAX_DEPTH, BoundedJSONParser, nesting_depth

JSON_ENDPOINTS = ["token-obtain", "token-refresh", "token-blacklist"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", JSON_ENDPOINTS)
@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_deeply_nested_json_is_400_on_every_anonymous_endpoint(name, opening):
    closing = "]" if opening == "[" else "}"
    body = opening * 1000 + "1" + closing * 1000  # issue 15, item 3: RecursionError, a 500
    response = Client(raise_request_exception=False).post(
        reverse(name), body, content_type="application/json"
    )
    assert response.status_code == 400, response.content[:300]
    assert response.json()["code"] == "parse_error"


@pytest.mark.django_db
def test_nesting_up_to_the_limit_is_parsed():
    # Parsed, then refused for its content (no username): the parser let it through.
    body = {
        "username": "x",
        "password": "y",
        "deep": json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)),
    }
    response = Client().post(reverse("token-obtain"), body, content_type="application/json")
    assert response.status_code == 401


def parse(text: str | bytes) -> object:
    raw = text.encode() if isinstance(text, str) else text
    return BoundedJSONParser().parse(io.BytesIO(raw), "application/json", {})


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"[[[["', 0),
        ('"\\"[["', 0),
        ("[]", 1),
        ('{"a": [1, {"b": "]]]"}]}', 3),
        ("[[], [[]], []]", 3),
        ("[" * 40, 40),  # unclosed: counted, then refused by the decoder
    ],
)
def test_nesting_depth(text, depth):
    assert nesting_depth(text) == depth


def test_the_limit_is_exact():
    assert parse("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(ParseError, match="levels deep"):
        parse("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


@pytest.mark.parametrize("text", [b"{", b'{"a": NaN}', b"\xff\xfe", b'{"a": 1}}'])
def test_malformed_json_is_a_parse_error(text):
    with pytest.raises(ParseError):
        parse(text)


def test_the_scan_stops_early_on_a_hostile_body():
    assert nesting_depth("[" * 1_000_000, stop_above=MAX_DEPTH) == MAX_DEPTH + 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\ab'), children, max_size=3)
    ),
    max_leaves=20,
)


def true_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((true_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((true_depth(item) for item in value.values()), default=0)
    return 0


@given(json_values)
def test_the_scan_agrees_with_the_decoded_value(value):
    text = json.dumps(value)
    assert nesting_depth(text) == true_depth(value)
    assert parse(text) == value
