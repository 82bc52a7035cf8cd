"""DRF's JSON parser with a nesting limit (``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``).

Python's ``json`` recurses once per array or object level, so a body nested ~1,000 deep (a few KiB, sent
anonymously to ``/api/token/``) raised ``RecursionError``: a 500 (issue 15, item 3). Nothing this API
accepts is nested more than a few levels, so the depth is bounded before anything is decoded and a deeper
body is an ordinary 400 ``parse_error``. RFC 8259 §9: "An implementation may set limits on the maximum
depth of nesting."
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json

#: The deepest nesting a request body may have: a top-level object is depth 1.
MAX_DEPTH = 32

# A JSON string, unrolled (no backtracking per character): brackets inside strings are not nesting.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str, *, stop_above: int | None = None) -> int:
    """How deeply the arrays and objects of a JSON text nest (0 for a scalar). Stops counting once the
    depth exceeds ``stop_above``, so a hostile body costs no more than its first levels. Malformed text
    gets a number too: the decoder refuses it later."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if nesting_depth(text, stop_above=MAX_DEPTH) > MAX_DEPTH:
            raise ParseError(f"JSON parse error - nested more than {MAX_DEPTH} levels deep.")
        try:
            return json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
