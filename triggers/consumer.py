"""The trigger consumer: a durable pull consumer on the EVENTS stream feeding the matcher, acking after commit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from leadhub.pulling import fetch_unless_stopped
from leadhub.triggers.matcher import Matcher, event_from_message

log = structlog.get_logger("leadhub.triggers")

DURABLE = "triggers"
ACK_WAIT = 30.0
FETCH_TIMEOUT = 1.0
BATCH = 100


class EventConsumer:
    def __init__(
        self, jetstream: Callable[[], JetStreamContext], matcher: Matcher, on_scheduled: Callable[[], None]
    ) -> None:
        self.jetstream = jetstream
        self.matcher = matcher
        self.on_scheduled = on_scheduled
        self._stopping = asyncio.Event()
        self.last_error: str | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT,
            max_deliver=-1,
            filter_subject="events.>",
        )
        return await self.jetstream().pull_subscribe("events.>", durable=DURABLE, stream="EVENTS", config=config)

    async def run(self) -> None:
        subscription: JetStreamContext.PullSubscription | None = None
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                if subscription is None:
                    subscription = await self._subscribe()
                messages = await self._fetch(subscription)
            except TimeoutError:  # nothing to fetch: the server answered, so the consumer is healthy
                self.last_error = None
                continue
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("event fetch failed; retrying", error=self.last_error)
                subscription = None
                await self._pause(backoff)
                backoff = min(10.0, backoff * 2)
                continue
            backoff = 0.5
            self.last_error = None
            for msg in messages:
                await self._handle(msg)
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        return await fetch_unless_stopped(subscription, BATCH, FETCH_TIMEOUT, self._stopping)

    async def _handle(self, msg: Msg) -> None:
        try:
            event = event_from_message(msg.data)
        except ValueError as exc:  # not an event at all: nothing a retry could change
            log.error("unreadable event skipped", subject=msg.subject, error=str(exc)[:200])
            await self._ack(msg)
            return
        try:
            scheduled = await self.matcher.handle(event)
        except Exception as exc:
            deliveries = msg.metadata.num_delivered if msg.metadata else 1
            self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning(
                "event not evaluated; will retry", event=event["id"], deliveries=deliveries, error=self.last_error
            )
            delay = min(30.0, 0.5 * 2 ** min(deliveries, 6))
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await msg.nak(delay=delay)
            await self._pause(min(delay, 2.0))
            return
        self.last_error = None
        await self._ack(msg)
        if scheduled:
            self.on_scheduled()

    async def _ack(self, msg: Msg) -> None:
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            await msg.ack()
