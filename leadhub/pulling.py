"""Pulling batches from a JetStream consumer: cheap per message, and a stop never waits for an idle fetch.

nats-py's `PullSubscription.fetch` waits for each message of a batch with `next_msg`, which makes a
task, an `asyncio.wait_for` and a `uuid4` per message: more than the rest of the pull costs. This is
the same pull protocol (what is buffered, then a `no_wait` request, then a lingering one that expires
before the timeout) with one deadline for the whole batch and the subscription's queue read directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

STATUS = "Status"
HEARTBEAT = "100"
END_OF_REQUEST = frozenset({"404", "408", "409"})  # no messages, request expired, request replaced or too big


async def fetch_unless_stopped(
    subscription: JetStreamContext.PullSubscription, batch: int, wait: float, stopping: asyncio.Event
) -> list[Msg]:
    """Up to `batch` messages, or nothing if `stopping` is set first."""
    fetch = asyncio.ensure_future(fetch_batch(subscription, batch, wait))
    stopped = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not fetch.done():
        fetch.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await fetch
        return []
    return fetch.result()


async def fetch_batch(subscription: JetStreamContext.PullSubscription, batch: int, timeout: float) -> list[Msg]:  # noqa: ASYNC109 - the pull request needs the deadline
    """Up to `batch` messages as soon as some are there; TimeoutError when none came within `timeout`."""
    sub = subscription._sub
    queue: asyncio.Queue[Msg] = sub._pending_queue
    messages: list[Msg] = []
    while not queue.empty() and len(messages) < batch:  # left over from an earlier request
        msg = _taken(sub, queue.get_nowait())
        if not _status(msg):
            messages.append(msg)
    if len(messages) == batch:
        return messages
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            # What the server has now; `expires` only when nothing is in hand, as the server
            # ignores `no_wait` with it and would linger.
            request: dict[str, object] = {"batch": batch - len(messages), "no_wait": True}
            if not messages:
                request["expires"] = _nanoseconds(timeout - 0.0001)
            await _request(subscription, request)
            await _collect(sub, queue, messages, batch)
            if messages:
                return messages
            # Nothing yet: one request that waits for messages, expiring before our deadline.
            remaining = timeout - (time.monotonic() - started) - 0.0001
            if remaining <= 0:
                raise TimeoutError
            await _request(subscription, {"batch": batch, "expires": _nanoseconds(remaining)})
            await _collect(sub, queue, messages, batch)
    except TimeoutError:
        if not messages:
            raise
    if not messages:
        raise TimeoutError
    return messages


async def _request(subscription: JetStreamContext.PullSubscription, request: dict[str, object]) -> None:
    await subscription._nc.publish(subscription._nms, json.dumps(request).encode(), subscription._deliver)


async def _collect(sub, queue: asyncio.Queue[Msg], messages: list[Msg], batch: int) -> None:  # type: ignore[no-untyped-def]
    """Take messages until the batch is full or the server ends the request."""
    while len(messages) < batch:
        msg = _taken(sub, await queue.get())
        status = _status(msg)
        if not status:
            messages.append(msg)
        elif status in END_OF_REQUEST:
            return
        elif status != HEARTBEAT:
            nats.js.errors.APIError.from_msg(msg)  # raises the status as an error


def _taken(sub, msg: Msg) -> Msg:  # type: ignore[no-untyped-def]
    """The subscription's own bookkeeping, as nats-py's `next_msg` does it (slow-consumer limits)."""
    sub._pending_size -= len(msg.data)
    sub._pending_queue.task_done()
    return msg


def _status(msg: Msg) -> str | None:
    return msg.headers.get(STATUS) if msg.headers else None


def _nanoseconds(seconds: float) -> int:
    return max(1, int(seconds * 1_000_000_000))
