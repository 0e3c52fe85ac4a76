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


def stream_missing(exc: BaseException) -> bool:
    """True for JetStream's answers that a stream is not there: a publish no stream took, a stream not found."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == STREAM_NOT_FOUND
