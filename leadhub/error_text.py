"""Error texts operators read: one short line about an exception, and an error text as the store can keep it.

`brief` is for /readyz detail and retry warnings, `storable` for a run's recorded error (`last_error`).

A SQLAlchemy error's text carries the statement and a documentation link over several lines; the driver's
own first line (`OperationalError: database is locked`) is what says what went wrong.
"""

from __future__ import annotations

LIMIT = 200


def brief(exc: BaseException, limit: int = LIMIT) -> str:
    """`Type: first line of the message`, at most `limit` characters; the driver's error for a statement's."""
    cause = getattr(exc, "orig", None)
    inner = cause if isinstance(cause, BaseException) else exc
    lines = str(inner).strip().splitlines()
    name = type(inner).__name__
    text = f"{name}: {lines[0].strip()}" if lines else name
    return text[:limit]


STORED_LIMIT = 2000  # characters of an error text kept with a run (`scheduled_action.last_error`)


def storable(text: str, limit: int = STORED_LIMIT) -> str:
    """`text` as both stores take it, cut to `limit` characters. Errors quote what servers answered: a NUL
    (a webhook receiver's body, a Bot API description), which PostgreSQL's text refuses, is dropped; a lone
    surrogate (the non-UTF-8 bytes of an SMTP reply, as aiosmtplib decodes them), which cannot be encoded to
    UTF-8 for either store, becomes its escape (`\\udce9`, the byte 0xe9)."""
    text = text.replace("\x00", "").encode("utf-8", "backslashreplace").decode("utf-8")
    return text[:limit]
