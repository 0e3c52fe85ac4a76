"""What `json.loads` raises for input from outside, and how to say it.

Malformed JSON is a JSONDecodeError and bytes that are not UTF-8 a UnicodeDecodeError, both ValueErrors. Two
more come without a position: a plain ValueError when int() refuses a number of more digits than Python allows
(4,300: its guard against quadratic conversion), and RecursionError for nesting deeper than the stack. Code
that caught only the first two answered such input with a 500, or retried it in the pipeline as unknown.
"""

from __future__ import annotations

import json
import sys

JSON_ERRORS = (ValueError, RecursionError)


def json_error_text(exc: ValueError | RecursionError) -> str:
    """The problem in a few words: the json module's own for malformed JSON, a plain one for the other two."""
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return str(exc)
    return f"a number has more than {sys.get_int_max_str_digits()} digits"
