"""Which failures are worth retrying: the database or network being away is; a bad envelope is not."""

from __future__ import annotations

from enum import Enum

from sqlalchemy import exc as sa_exc

from leadhub.envelope import EnvelopeError
from leadhub.pipelines.errors import PermanentError, TransientError

# PostgreSQL's error codes (its docs' errcodes appendix), read instead of the message (which the server may translate):
# SQLAlchemy has no class for asyncpg's deadlock, serialization and lock errors, which arrive as a plain DBAPIError.
# serialization_failure and deadlock_detected: PostgreSQL ended this transaction because a concurrent one took
# what it needed; the item is fine and the same transaction tried again succeeds.
LOST_TO_ANOTHER = frozenset({"40001", "40P01"})
# unique_violation: on PostgreSQL usually a race, workers creating one new person, order or lead key at once (the
# insert waits for the other transaction and fails when it commits, so a try after it sees the winner's row). It
# can also be the item's own fault (a key written twice), which fails every try: that one ends in dead letters.
UNIQUE_VIOLATION = "23505"
LOCK_NOT_AVAILABLE = "55P03"  # a lock held longer than `lock_timeout` (an administrator's setting), or NOWAIT
# undefined_table and undefined_column: the schema changed under the daemon (a table dropped, a newer release's
# migration). The statements are the code's, so no item is at fault; the envelopes wait in the queue, as SQLite's
# `no such table` (an OperationalError) makes them.
SCHEMA_CHANGED = frozenset({"42P01", "42703"})


class Failure(Enum):
    TRANSIENT = "transient"  # retry later, never dead-letter: the item is fine, the world is not
    PERMANENT = "permanent"  # dead-letter now: retrying cannot help
    CONFLICT = "conflict"  # lost to a concurrent transaction: retry at once, the winner has committed
    UNKNOWN = "unknown"  # retry a few times, then dead-letter


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, PermanentError | EnvelopeError | sa_exc.DataError):
        return Failure.PERMANENT
    if sqlstate(exc) in LOST_TO_ANOTHER or _unique_race(exc):
        return Failure.CONFLICT
    if _transient(exc):
        return Failure.TRANSIENT
    return Failure.UNKNOWN


def after_conflicts(exc: BaseException) -> Failure:
    """What a conflict that lost every immediate retry is treated as: a deadlock or serialization failure
    takes two transactions, so it is never the item's fault (retried later, never dead-lettered); a unique key
    that failed every try may be the item's own (retried a few times, then dead-lettered)."""
    return Failure.TRANSIENT if sqlstate(exc) in LOST_TO_ANOTHER else Failure.UNKNOWN


def _unique_race(exc: BaseException) -> bool:
    """A unique key PostgreSQL refused. SQLite's writers take the write lock before they read (store/db.py,
    lock_for_writing), so there a unique violation is never a race, and SQLite gives no SQLSTATE anyway."""
    return sqlstate(exc) == UNIQUE_VIOLATION


def _transient(exc: BaseException) -> bool:
    """The store or network is away, a lock another transaction holds was not granted in time, or the schema
    is not the one the code was written for."""
    if isinstance(exc, TransientError | OSError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    if sqlstate(exc) == LOCK_NOT_AVAILABLE or sqlstate(exc) in SCHEMA_CHANGED:
        return True
    return type(exc).__module__.startswith("asyncpg") and "Connection" in type(exc).__name__


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's error code: on the driver's exception SQLAlchemy wraps, or on asyncpg's own (a COPY's errors
    come unwrapped, store/bulk.py). asyncpg names it `sqlstate`, psycopg `pgcode`; SQLite has none."""
    driver = getattr(exc, "orig", None) or exc
    code = getattr(driver, "sqlstate", None) or getattr(driver, "pgcode", None)
    return code if isinstance(code, str) else None
