"""Compact JSON text through the json module's C encoder, built once instead of on every call.

`JSONEncoder.encode` makes a new C encoder object for each value it encodes; for the small dicts an envelope's
meta and every JSON column hold, that setup was about half the cost (a five-key dict: 4.9 -> 2.1 µs on a slow
machine, BENCHMARKS.md). `compact_encoder` makes the C encoder once and calls it directly. It has no check for
circular references (values come from parsed JSON and our own dicts; a cycle would raise RecursionError rather
than ValueError). Where the C encoder is missing or has another signature, `JSONEncoder.encode` is used.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

ITEM_SEPARATOR, KEY_SEPARATOR = ",", ":"


def compact_encoder(*, ensure_ascii: bool, allow_nan: bool) -> Callable[[Any], str]:
    """`json.dumps(value, separators=(",", ":"), ensure_ascii=..., allow_nan=...)` as a reusable function."""
    fallback = json.JSONEncoder(
        ensure_ascii=ensure_ascii, allow_nan=allow_nan, separators=(ITEM_SEPARATOR, KEY_SEPARATOR)
    ).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    strings = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    if make is None:
        return fallback
    try:  # CPython 3.11-3.14: (markers, default, encoder, indent, key_sep, item_sep, sort_keys, skipkeys, allow_nan)
        chunks = make(None, _not_serializable, strings, None, KEY_SEPARATOR, ITEM_SEPARATOR, False, False, allow_nan)
        if "".join(chunks({"k": [1, 2.5, None, True, "é"]}, 0)) != fallback({"k": [1, 2.5, None, True, "é"]}):
            return fallback
    except TypeError:
        return fallback

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
