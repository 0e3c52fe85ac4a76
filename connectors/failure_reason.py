"""Why a pull connector's attempt failed, in the few words `leadhub_connector_failures_total{reason}` uses.

An admin alerts on the reason: `auth` needs a person (a revoked password or key), `queue_*` and `store` are
leadhub's own side, `source` is the mailbox's or the shop's server (away, slow, answering nonsense).
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from leadhub.connectors.imap_session import AuthFailed
from leadhub.connectors.woocommerce_api import PollError
from leadhub.queue_errors import QueueBusy, QueueUnavailable

FAILURE_REASONS = ("auth", "queue_busy", "queue_unavailable", "store", "source")
REFUSED_CREDENTIALS = frozenset({401, 403})  # the shop's statuses for a key it does not accept


def failure_reason(exc: BaseException) -> str:
    """One of FAILURE_REASONS for an exception a connector's attempt ended with."""
    if isinstance(exc, AuthFailed) or (isinstance(exc, PollError) and exc.status in REFUSED_CREDENTIALS):
        return "auth"
    if isinstance(exc, QueueBusy):  # a subclass of QueueUnavailable: first
        return "queue_busy"
    if isinstance(exc, QueueUnavailable):
        return "queue_unavailable"
    if isinstance(exc, SQLAlchemyError):
        return "store"
    return "source"
