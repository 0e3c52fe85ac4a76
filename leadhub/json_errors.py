"""What `json.loads` raises for input from outside, and how to say it; `loads` bounds how deep it may nest.

Malformed JSON is a JSONDecodeError and bytes that are not UTF-8 a UnicodeDecodeError, both ValueErrors. Two
more come without a position: a plain ValueError when int() refuses a number of more digits than Python allows
(4,300: its guard against quadratic conversion), and RecursionError for nesting deeper than the stack. Code
that caught only the first two answered such input with a 500, or retried it in the pipeline as unknown.

The parser takes nesting (~940 levels) deeper than the pipeline can write back out (json.dumps from deeper in the
stack fails from ~920): such a body was answered 202 and then dead-lettered for good. `loads` refuses JSON nested
deeper than MAX_JSON_DEPTH, which no form, order or provider event comes near, with JsonTooDeep, a ValueError.
"""

from __future__ import annotations

import json
import sys
from typing import Any

JSON_ERRORS = (ValueError, RecursionError)
MAX_JSON_DEPTH = 64  # objects and arrays inside each other; a Shopify order nests 5 deep, a flat form 1


class JsonTooDeep(ValueError):
    """JSON nested deeper than MAX_JSON_DEPTH (or than the parser's stack)."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def loads(data: bytes | str) -> Any:
    """`json.loads(data)`, refusing nesting deeper than MAX_JSON_DEPTH with JsonTooDeep.

    On the intake's hot path: only a body with more than MAX_JSON_DEPTH brackets (two counts at C speed) can nest
    that deep, so an ordinary form's JSON costs no walk at all; a larger one gets a walk of its containers that
    stops at the first one too deep.
    """
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonTooDeep from None
    if _brackets(data) > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise JsonTooDeep
    return value


def _brackets(data: bytes | str) -> int:
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def _deeper_than(value: Any, limit: int) -> bool:
    """True when objects and arrays nest more than `limit` deep in `value`: one level at a time, never recursion."""
    level = [value] if type(value) is dict or type(value) is list else []
    for _ in range(limit):
        below = [
            child
            for container in level
            for child in (container.values() if type(container) is dict else container)
            if type(child) is dict or type(child) is list
        ]
        if not below:
            return False
        level = below
    return True


def read_in(data: bytes | str) -> str:
    """The encoding `loads` reads `data` in, for a message: UTF-8 (RFC 8259), unless a byte order mark or the zero
    bytes of the first characters say UTF-16 or UTF-32, told apart as RFC 4627 did (json.detect_encoding)."""
    if isinstance(data, str):
        return "UTF-8"
    name = json.detect_encoding(data)
    return "UTF-8" if name.startswith("utf-8") else name.upper()


def encoding_note(data: bytes | str) -> str:
    """` (read as UTF-16: ...)` when `data` is not read as UTF-8, for a JSON error that would otherwise not say so."""
    encoding = read_in(data)
    if encoding == "UTF-8":
        return ""
    return f" (read as {encoding}: the body starts with its byte order mark or zero bytes)"


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words, for an error message."""
    if isinstance(value, bool):
        return "true or false"
    kinds = {str: "a string", int: "a whole number", float: "a number with a fraction", list: "an array"}
    return "null" if value is None else kinds.get(type(value), "an object")


def json_error_text(exc: ValueError | RecursionError) -> str:
    """The problem in a few words: the json module's own for malformed JSON, a plain one for the others."""
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, JsonTooDeep | json.JSONDecodeError | UnicodeDecodeError):
        return str(exc)
    return f"a number has more than {sys.get_int_max_str_digits()} digits"
