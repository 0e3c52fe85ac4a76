"""Which failures are worth retrying: the database or network being away is; a bad envelope is not."""

from __future__ import annotations

from enum import Enum

from sqlalchemy import exc as sa_exc

from leadhub.envelope import EnvelopeError
from leadhub.pipelines.errors import PermanentError, TransientError


class Failure(Enum):
    TRANSIENT = "transient"  # retry later, never dead-letter: the item is fine, the world is not
    PERMANENT = "permanent"  # dead-letter now: retrying cannot help
    UNKNOWN = "unknown"  # retry a few times, then dead-letter


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, PermanentError | EnvelopeError | sa_exc.DataError):
        return Failure.PERMANENT
    if isinstance(exc, TransientError | OSError | TimeoutError):
        return Failure.TRANSIENT
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return Failure.TRANSIENT
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return Failure.TRANSIENT
    if type(exc).__module__.startswith("asyncpg") and "Connection" in type(exc).__name__:
        return Failure.TRANSIENT
    return Failure.UNKNOWN
