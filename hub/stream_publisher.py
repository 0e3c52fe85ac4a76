"""JetStream publishes with their acks, pipelined over one reply subscription.

nats-py's `publish_async` costs more per message than the publish itself: a semaphore behind
`asyncio.wait_for`, a NUID and an `os.urandom` token per message, a done-callback per future and a
`PubAck` dataclass per reply. Every webhook and every domain event pays that, so this module does
the same protocol with less: the reply subject is a counter under one subscription, and a reply is
read for the only things a caller needs — an error, or whether the stream already had the message id.
A reply that does not come in `timeout` seconds fails its publish with TimeoutError; one timer sweeps
the overdue replies four times a second, where `asyncio.timeout` around each publish cost a timer per
webhook (~5% of an accept's CPU). The frames themselves go out through hub/nats_frames.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from leadhub.hub.nats_frames import FrameSender, message_size
from leadhub.queue_errors import ItemTooLarge

EXPECTED_STREAM = "Nats-Expected-Stream"
NO_RESPONDERS = "503"
SWEEP_EVERY = 0.25  # seconds between looks for overdue replies: a timeout fires up to this much late


class StreamPublisher:
    """Publishes on `client`; each call waits until JetStream has stored (or deduplicated) every message."""

    def __init__(self, client: Client, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self._prefix = ""
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._deadlines: deque[tuple[float, str, asyncio.Future[bool]]] = deque()  # in publish order
        self._sweep: asyncio.TimerHandle | None = None
        self._frames = FrameSender.for_client(client)

    async def start(self) -> None:
        """Subscribe to the replies; nats-py renews the subscription after a reconnect."""
        self._prefix = f"{self.client.new_inbox()}."  # a valid subject: reply subjects are not checked again
        await self.client.subscribe(f"{self._prefix}*", cb=self._on_reply)

    async def publish(self, messages: list[tuple[str, bytes, dict[str, str]]], stream: str) -> list[bool]:
        """Publish in order without a round trip each; per message, True when it was a duplicate.

        Raises nats errors (no stream, API error); ItemTooLarge instead of sending a message over the server's
        `max_payload` (the ones before it are sent, their acks not waited for; its `position` says which of
        `messages` it is); and TimeoutError for a reply that has not come within `timeout` of its message being
        sent; replies that never come are forgotten.
        """
        loop = asyncio.get_running_loop()
        frames = self._frames
        pending: list[tuple[str, asyncio.Future[bool]]] = []
        try:
            for subject, payload, message_headers in messages:
                token = str(next(self._tokens))
                future: asyncio.Future[bool] = loop.create_future()
                self._waiting[token] = future
                self._deadlines.append((loop.time() + self.timeout, token, future))
                if self._sweep is None:
                    self._sweep = loop.call_later(SWEEP_EVERY, self._expire_overdue)
                pending.append((token, future))
                headers = {**message_headers, EXPECTED_STREAM: stream}
                if frames is not None and frames.ready():
                    await frames.publish(subject, payload, self._prefix + token, headers)
                else:
                    size, limit = message_size(payload, headers), self.client.max_payload
                    if size > limit:  # nats-py checks the payload alone: the server would close the connection
                        raise ItemTooLarge(size, limit)
                    await self.client.publish(subject, payload, reply=self._prefix + token, headers=headers)
            return [await future for _, future in pending]
        except ItemTooLarge as exc:
            exc.position = len(pending) - 1  # its future was made before its frame was refused
            raise
        finally:
            for token, future in pending:
                if not future.done():
                    self._waiting.pop(token, None)
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # seen here: no "exception was never retrieved" later

    def _expire_overdue(self) -> None:
        """Drop answered entries from the front and fail the overdue ones; look again while any wait."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][2].done() or deadlines[0][0] <= now):
            _, token, future = deadlines.popleft()
            if not future.done():
                self._waiting.pop(token, None)
                future.set_exception(TimeoutError(f"JetStream did not acknowledge within {self.timeout:g}s"))
        self._sweep = loop.call_later(SWEEP_EVERY, self._expire_overdue) if deadlines else None

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        data = msg.data
        if b'"seq":' in data and b"error" not in data and b"duplicate" not in data:
            future.set_result(False)  # the usual ack, {"stream":"INBOUND","seq":42}: stored, not a duplicate; no parse
            return
        try:
            reply = json.loads(data)
        except ValueError:
            future.set_exception(nats.js.errors.Error(f"unreadable publish ack: {msg.data[:200]!r}"))
            return
        if "error" not in reply:
            future.set_result(bool(reply.get("duplicate")))
            return
        try:
            nats.js.errors.APIError.from_error(reply["error"])  # raises the error's own class
        except nats.js.errors.Error as exc:
            future.set_exception(exc)
        except (KeyError, TypeError):
            future.set_exception(nats.js.errors.Error(f"unreadable publish ack: {msg.data[:200]!r}"))
