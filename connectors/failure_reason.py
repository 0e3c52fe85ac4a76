"""Why a pull connector's attempt failed, in the few words `leadhub_connector_failures_total{reason}` uses.

An admin alerts on the reason: `auth` needs a person (a revoked password or key), `queue_*` and `store` are
leadhub's own side, `source` is the mailbox's or the shop's server (away, slow, answering nonsense).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.exc import SQLAlchemyError

from leadhub.error_text import brief
from leadhub.queue_errors import ItemTooLarge, QueueBusy, QueueUnavailable

FAILURE_REASONS = ("auth", "queue_busy", "queue_unavailable", "store", "source")


class CredentialsRefused(Exception):
    """The source refused the connector's credentials: imap_session.AuthFailed, woocommerce_api.KeyRefused. A base
    here rather than those classes imported: the hub imports this module, and a daemon without a mailbox must not
    load imapclient (tests/hub/test_imports.py)."""


class StoreFailed(Exception):
    """A checkpoint call failed; the store's own error is `__cause__`, its first line the message."""


@contextlib.asynccontextmanager
async def in_store() -> AsyncIterator[None]:
    """Around checkpoint calls: whatever fails in them is the store's. The type cannot tell: PostgreSQL away is
    asyncpg's ConnectionRefusedError (SQLAlchemy does not wrap it), a hung database ends in the connector's
    TimeoutError, and both would otherwise count as the mail server's or the shop's (`source`)."""
    try:
        yield
    except Exception as exc:
        raise StoreFailed(brief(exc)) from exc


def failure_reason(exc: BaseException) -> str:
    """One of FAILURE_REASONS for an exception a connector's attempt ended with."""
    if isinstance(exc, CredentialsRefused):
        return "auth"
    if isinstance(exc, QueueBusy):  # a subclass of QueueUnavailable: first
        return "queue_busy"
    if isinstance(exc, QueueUnavailable | ItemTooLarge):  # an item over the queue's max_payload: leadhub's side too
        return "queue_unavailable"
    if isinstance(exc, StoreFailed | SQLAlchemyError):
        return "store"
    return "source"
