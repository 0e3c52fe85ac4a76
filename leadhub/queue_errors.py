"""The queue's refusals, as every publisher sees them: connectors, the outbox relay, the publish window;
and JetStream's answer that a stream is missing, as the queue and the pipeline read it."""

from __future__ import annotations

import nats.js.errors

STREAM_NOT_FOUND = 10059  # JetStream's error code for a stream it does not have


class QueueUnavailable(Exception):
    """The queue did not confirm the item is durable; the caller must not answer 2xx."""


class QueueBusy(QueueUnavailable):
    """The stream refused a message because its queue of messages not yet stored is full (`429 too many
    requests`, nats-server's `max_buffered_msgs`/`max_buffered_size`): fewer in flight at a time will go in."""


class ItemTooLarge(Exception):
    """The queue's server takes no message this large (its `max_payload`, headers included): sending it again
    cannot help, so it is not QueueUnavailable (a webhook answers 413, not 503). Sent anyway, nats-server would close
    the connection, and nats-py would not open it again: the process's queue gone until a restart."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the item is {size} bytes with its headers; the queue takes at most {limit} bytes per item")
        self.size = size
        self.limit = limit
        self.position: int | None = None  # which message of a run published at once, where the publisher knows


def stream_missing(exc: BaseException) -> bool:
    """True for JetStream's answers that a stream is not there: a publish no stream took, a stream not found."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == STREAM_NOT_FOUND
