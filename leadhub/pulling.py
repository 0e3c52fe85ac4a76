"""Pulling from a JetStream consumer so a stop never waits for an idle fetch (unacked messages are redelivered)."""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.msg import Msg
from nats.js import JetStreamContext


async def fetch_unless_stopped(
    subscription: JetStreamContext.PullSubscription, batch: int, wait: float, stopping: asyncio.Event
) -> list[Msg]:
    """Up to `batch` messages, or nothing if `stopping` is set first."""
    fetch = asyncio.ensure_future(subscription.fetch(batch, timeout=wait))
    stopped = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not fetch.done():
        fetch.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await fetch
        return []
    return fetch.result()
