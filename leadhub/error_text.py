"""One short line about an exception, for the places operators read: /readyz detail and retry warnings.

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
