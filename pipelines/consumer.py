"""The inbound consumer: pull envelopes in batches, store each batch in one transaction, ack after commit.

It pulls with nats-py's `fetch` on the FastStream broker's JetStream context: `fetch`
returns as soon as messages are there (a batch under load, one at a time when quiet),
which a fill-the-batch-or-time-out loop would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from leadhub.envelope import Envelope
from leadhub.pipelines.dead_letters import DeadLetterSink
from leadhub.pipelines.failures import Failure, classify
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pulling import fetch_unless_stopped
from leadhub.store.intake import BatchResult, InquiryRow

log = structlog.get_logger("leadhub.pipeline")

DURABLE = "pipeline"
# Short, so a crashed worker's batch is redelivered within seconds; a slow batch sends
# in-progress heartbeats instead of being redelivered while it is still being stored.
ACK_WAIT = 10.0
FETCH_TIMEOUT = 1.0
MAX_BACKOFF = 10.0


class Stats:
    """Hooks for metrics, kept as callables so this module does not depend on the hub."""

    def __init__(self) -> None:
        self.on_batch: Callable[[int, int, float], None] = lambda stored, duplicates, lag: None
        self.on_outcome: Callable[[str, int], None] = lambda outcome, n: None
        self.on_events: Callable[[int], None] = lambda n: None  # domain events written to the outbox
        self.on_pending: Callable[[int], None] = lambda n: None
        self.on_store_error: Callable[[str], None] = lambda kind: None


class InboundConsumer:
    """Runs until stopped; a stop lets the batch in hand finish and be acked."""

    def __init__(
        self,
        jetstream: Callable[[], JetStreamContext],
        pipeline: IntakePipeline,
        dead: DeadLetterSink,
        *,
        batch_size: int = 500,
        max_deliveries: int = 5,
        on_committed: Callable[[], None] = lambda: None,
        stats: Stats | None = None,
    ) -> None:
        self.jetstream = jetstream
        self.pipeline = pipeline
        self.dead = dead
        self.batch_size = batch_size
        self.max_deliveries = max_deliveries
        self.on_committed = on_committed
        self.stats = stats or Stats()
        self._stopping = asyncio.Event()
        self._backoff = 0.0
        self.healthy = True
        self.last_error: str | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _next_backoff(self) -> float:
        self._backoff = min(MAX_BACKOFF, max(0.25, self._backoff * 2))
        return self._backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT,
            max_deliver=-1,
            max_ack_pending=20_000,
            filter_subject="inbound.>",
        )
        return await self.jetstream().pull_subscribe("inbound.>", durable=DURABLE, stream="INBOUND", config=config)

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        return await fetch_unless_stopped(subscription, self.batch_size, FETCH_TIMEOUT, self._stopping)

    async def run(self) -> None:
        subscription = None
        try:
            await self._loop(subscription)
        finally:
            if self._subscription is not None:
                with contextlib.suppress(Exception):
                    await self._subscription.unsubscribe()

    async def _loop(self, subscription: JetStreamContext.PullSubscription | None) -> None:
        last_pending_check = 0.0
        while not self._stopping.is_set():
            try:
                if subscription is None:
                    subscription = self._subscription = await self._subscribe()
                messages = await self._fetch(subscription)
            except TimeoutError:
                messages = []
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                log.warning("inbound fetch failed; retrying", error=f"{type(exc).__name__}: {exc}")
                subscription = None
                await self._pause(self._next_backoff())
                continue
            if messages:
                await self.handle(messages)
            if subscription is not None and time.monotonic() - last_pending_check > 5:
                last_pending_check = time.monotonic()
                with contextlib.suppress(Exception):
                    info = await subscription.consumer_info()
                    self.stats.on_pending(info.num_pending + info.num_ack_pending)

    async def handle(self, messages: list[Msg]) -> None:
        """Store a batch while telling JetStream it is in progress, so it is not redelivered meanwhile."""
        heartbeat = asyncio.create_task(self._heartbeat(messages))
        try:
            await self._handle(messages)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, messages: list[Msg]) -> None:
        while True:
            await asyncio.sleep(ACK_WAIT / 3)
            for msg in messages:
                if not msg._ackd:
                    with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                        await msg.in_progress()

    async def _handle(self, messages: list[Msg]) -> None:
        """Store a batch; if it fails, isolate the bad envelope by storing one at a time."""
        prepared: list[tuple[Msg, InquiryRow]] = []
        for msg in messages:
            row = await self._prepare(msg)
            if row is not None:
                prepared.append((msg, row))
        if not prepared:
            return
        try:
            result = await self.pipeline.store([row for _, row in prepared])
        except Exception as exc:
            kind = classify(exc)
            self.stats.on_store_error(kind.value)
            if kind is Failure.TRANSIENT:
                await self._retry_later([m for m, _ in prepared], exc)
                return
            log.info("batch failed; storing its envelopes one by one", size=len(prepared), error=str(exc)[:300])
            for msg, row in prepared:
                await self._store_one(msg, row)
            return
        await self._ack_all([m for m, _ in prepared])
        self._committed(result, [row for _, row in prepared])

    def _committed(self, result: BatchResult, rows: list[InquiryRow]) -> None:
        self._backoff = 0.0
        self.healthy = True
        self.last_error = None
        newest = max(row.received_at for row in rows)
        self.stats.on_batch(result.stored, result.duplicates, (datetime.now(UTC) - newest).total_seconds())
        self.stats.on_events(result.events)
        self.on_committed()

    async def _prepare(self, msg: Msg) -> InquiryRow | None:
        try:
            return self.pipeline.prepare(Envelope.from_message(msg.headers, msg.data))
        except Exception as exc:  # a parser crash is the envelope's problem: dead-letter it whole
            await self._dead_letter(msg, exc)
            return None

    async def _store_one(self, msg: Msg, row: InquiryRow) -> None:
        try:
            result = await self.pipeline.store([row])
        except Exception as exc:
            kind = classify(exc)
            deliveries = msg.metadata.num_delivered if msg.metadata else 1
            if kind is Failure.TRANSIENT:
                await self._retry_later([msg], exc)
            elif kind is Failure.PERMANENT or deliveries >= self.max_deliveries:
                await self._dead_letter(msg, exc)
            else:
                log.warning("envelope failed; will retry", key=row.key, deliveries=deliveries, error=str(exc)[:300])
                await self._nak(msg, delay=min(MAX_BACKOFF, 0.5 * 2**deliveries))
            return
        await self._ack_all([msg])
        self._committed(result, [row])

    async def _dead_letter(self, msg: Msg, exc: BaseException) -> None:
        headers = dict(msg.headers or {})
        try:
            await self.dead.send(
                source="inbound",
                subject=msg.subject,
                headers=headers,
                payload=msg.data,
                key=headers.get("Leadhub-Key"),
                reason=str(exc) or type(exc).__name__,
                error=type(exc).__name__,
                deliveries=msg.metadata.num_delivered if msg.metadata else 1,
            )
        except Exception as store_exc:
            self.stats.on_store_error("dead_letter")
            await self._retry_later([msg], store_exc)
            return
        self.stats.on_outcome("dead_letter", 1)
        await self._ack_all([msg])

    async def _retry_later(self, messages: list[Msg], exc: BaseException) -> None:
        """The store is unavailable: hand the messages back and wait before fetching more."""
        delay = self._next_backoff()
        self.healthy = False
        self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        log.warning(
            "store unavailable; envelopes will be retried",
            count=len(messages),
            retry_in=round(delay, 2),
            error=self.last_error,
        )
        for msg in messages:
            await self._nak(msg, delay=delay)
        self.stats.on_outcome("retried", len(messages))
        await self._pause(delay)

    async def _nak(self, msg: Msg, delay: float) -> None:
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            await msg.nak(delay=delay)

    async def _ack_all(self, messages: list[Msg]) -> None:
        """Acks after the commit; a lost ack means a redelivery, which the stored key absorbs."""
        for msg in messages:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await msg.ack()
        self.stats.on_outcome("acked", len(messages))
