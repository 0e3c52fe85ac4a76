"""How many outbox events the relay keeps in flight: a whole claim, fewer while NATS refuses some."""

from __future__ import annotations


class PublishWindow:
    """Halved at each refusal, down to 1; doubled after each full part that went through, up to `largest`.

    A stream may bound its queue of messages not yet stored (nats-server's `max_buffered_msgs`) and refuse
    the rest with `429 too many requests`. Retried whole, a claim overflows that queue at the same place each
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
