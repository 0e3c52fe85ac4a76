"""What no stored text can hold: a NUL character (PostgreSQL's text refuses it) or a lone UTF-16 surrogate (JSON's
`"\\ud800"`, which no UTF-8 encoder takes). The /api and the form connector refuse such strings with a 400."""

from __future__ import annotations

from typing import Any


def unstorable(text: str) -> str | None:
    """What in `text` no stored value can hold, described for the sender; None when it is fine.

    The driver fails on either, or the value is stored mangled (`?`).
    """
    if "\x00" in text:
        return "a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "a lone surrogate (half of a UTF-16 pair), which is not text"
    return None


def first_unstorable(value: Any) -> str | None:
    """The problem of the first string (key or value) in decoded JSON `value` no store can hold; None when none.

    A loop, not recursion: the parser takes nesting deeper than a recursive walk could follow.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            problem = unstorable(item)
            if problem is not None:
                return problem
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None
