"""Publishing a run of messages in parts NATS takes: the whole run at once, fewer in flight while it refuses some.

Shared by every publisher that sends many messages and keeps a checkpoint over them (the outbox relay, the IMAP
folder): each needs to know how many of its messages, from the first, the stream acknowledged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from leadhub.queue_errors import QueueBusy

T = TypeVar("T")


class PublishWindow:
    """Halved at each refusal, down to 1; doubled after each full part that went through, up to `largest`.

    A stream may bound its queue of messages not yet stored (nats-server's `max_buffered_msgs`) and refuse
    the rest with `429 too many requests`. Retried whole, a run overflows that queue at the same place each
    time and never gets in; in parts under the bound it does. Without refusals the size stays `largest`.
    """

    def __init__(self, largest: int) -> None:
        self.largest = largest
        self.size = largest

    def shrink(self) -> bool:
        """Half as many in flight; False when one at a time was already refused."""
        if self.size <= 1:
            return False
        self.size //= 2
        return True

    def grow(self) -> None:
        if self.size < self.largest:
            self.size = min(self.largest, self.size * 2)


@dataclass(frozen=True, slots=True)
class Sent:
    """How many messages, from the first, the stream acknowledged; and the error that stopped the rest."""

    acked: int
    error: Exception | None = None


async def send(
    items: list[T],
    publish: Callable[[list[T]], Awaitable[object]],
    window: PublishWindow,
    *,
    on_refused: Callable[[int], None] = lambda size: None,
) -> Sent:
    """Publish `items` in order, in parts of the window's size; stop at the first failure that is not a refusal.

    `publish(part)` returns once the stream acknowledged every message of the part, and raises otherwise. One
    call with all of `items` unless the stream refuses some (QueueBusy); then the part is sent again, halved per
    refusal (the part's messages the stream did take come back as duplicates, stored once). `on_refused(size)`
    hears of each refusal with the part size refused. A part is counted only when all of it was acknowledged,
    so `acked` never covers a message the stream did not confirm.
    """
    done = 0
    while done < len(items):
        size = window.size
        part = items if done == 0 and size >= len(items) else items[done : done + size]
        try:
            await publish(part)
        except QueueBusy as exc:
            on_refused(size)
            if not window.shrink():
                return Sent(done, exc)
            continue
        except Exception as exc:  # NATS away or slow: the caller keeps what was acked and reports the error
            return Sent(done, exc)
        done += len(part)
        if len(part) == size:  # a short last part says nothing about a larger one
            window.grow()
    return Sent(done)
