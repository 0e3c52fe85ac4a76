"""The queue's refusals, as every publisher sees them: connectors, the outbox relay, the publish window."""

from __future__ import annotations


class QueueUnavailable(Exception):
    """The queue did not confirm the item is durable; the caller must not answer 2xx."""


class QueueBusy(QueueUnavailable):
    """The stream refused a message because its queue of messages not yet stored is full (`429 too many
    requests`, nats-server's `max_buffered_msgs`/`max_buffered_size`): fewer in flight at a time will go in."""
