"""The inbound consumer: pull envelopes in batches, store each batch in one transaction, ack after commit.

It pulls with nats-py's `fetch` on the FastStream broker's JetStream context: `fetch`
returns as soon as messages are there (a batch under load, one at a time when quiet),
which a fill-the-batch-or-time-out loop would not.

With `read_ahead` (a store in another process: PostgreSQL), the next batch is fetched and parsed while
one is being stored: the store's statements wait on the database server, parsing is this process's CPU,
and the two overlap instead of taking turns (PostgreSQL drained 1.17x faster, BENCHMARKS.md). On SQLite
the store runs in this process (aiosqlite's thread, under the same GIL), so reading ahead only made the
two contend; in a process that also answers webhooks it took their CPU (13% fewer accepted/s); the
daemon turns it on for neither. Either way batches are stored one at a time, in the order fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from leadhub.envelope import Envelope
from leadhub.error_text import brief
from leadhub.pipelines.dead_letters import DeadLetterSink
from leadhub.pipelines.failures import Failure, after_conflicts, classify
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pulling import fetch_unless_stopped
from leadhub.queue_errors import stream_missing
from leadhub.store.intake import BatchResult, InquiryRow

log = structlog.get_logger("leadhub.pipeline")

DURABLE = "pipeline"
# Short, so a crashed worker's batch is redelivered within seconds; a slow batch sends
# in-progress heartbeats instead of being redelivered while it is still being stored.
ACK_WAIT = 10.0
FETCH_TIMEOUT = 1.0
CHECK_TIMEOUT = 2.0  # seconds JetStream has to answer the periodic look at the consumer
MAX_BACKOFF = 10.0
PREPARE_CHUNK = 50  # envelopes parsed between yields to the event loop (webhooks, the store's replies)

OUTCOMES = ("stored", "duplicate", "dead_letter", "retried")  # what `Stats` counts an envelope as (below)


class Stats:
    """Hooks for metrics, kept as callables so this module does not depend on the hub.

    Every envelope ends in exactly one of `stored` / `duplicate` (`on_batch`, per committed row) or `dead_letter`
    (`on_outcome`; `duplicate` for a redelivery of one dead-lettered already); `retried` (`on_outcome`) counts each
    time an envelope is handed back for another delivery.
    """

    def __init__(self) -> None:
        self.on_batch: Callable[[int, int, float], None] = lambda stored, duplicates, lag: None
        self.on_outcome: Callable[[str, int], None] = lambda outcome, n: None
        self.on_events: Callable[[int], None] = lambda n: None  # domain events written to the outbox
        self.on_pending: Callable[[int], None] = lambda n: None
        self.on_store_error: Callable[[str], None] = lambda kind: None


@dataclass
class FetchedBatch:
    """Messages fetched together and what parsing made of each: a row to store, or the error to dead-letter."""

    messages: list[Msg]
    heartbeat: asyncio.Task[None]
    prepared: list[tuple[Msg, InquiryRow]] = field(default_factory=list)
    failed: list[tuple[Msg, Exception]] = field(default_factory=list)


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
        on_stream_missing: Callable[[], None] = lambda: None,
        stats: Stats | None = None,
        read_ahead: bool = False,
    ) -> None:
        self.jetstream = jetstream
        self.pipeline = pipeline
        self.dead = dead
        self.batch_size = batch_size
        self.max_deliveries = max_deliveries
        self.on_committed = on_committed
        self.on_stream_missing = on_stream_missing  # the queue declares its streams again (a NATS without its store)
        self.stats = stats or Stats()
        self.read_ahead = read_ahead
        self._stopping = asyncio.Event()
        self._backoff = 0.0
        self._fetch_error: str | None = None  # until a fetch succeeds again
        self._store_error: str | None = None  # until a batch is committed again
        self._subscription: JetStreamContext.PullSubscription | None = None

    def stop(self) -> None:
        self._stopping.set()

    @property
    def last_error(self) -> str | None:
        """Why envelopes are not being stored now: JetStream cannot be read, or the store refuses them."""
        return self._fetch_error or self._store_error

    @property
    def healthy(self) -> bool:
        return self.last_error is None

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
        jetstream = self.jetstream()
        # Created, or brought to this config: one an older release or an admin made keeps its own settings otherwise
        # (a max_deliver that stops delivering an envelope, neither stored nor dead-lettered; a longer ack_wait).
        await jetstream.add_consumer("INBOUND", config)
        return await jetstream.pull_subscribe_bind(durable=DURABLE, stream="INBOUND")

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> FetchedBatch | None:
        """The next batch, parsed, kept in progress at JetStream from the moment it arrives; None if none came."""
        try:
            messages = await fetch_unless_stopped(subscription, self.batch_size, FETCH_TIMEOUT, self._stopping)
        except TimeoutError:
            return None
        if not messages:
            return None
        batch = FetchedBatch(messages, asyncio.create_task(self._heartbeat(messages)))
        try:
            await self._prepare(batch)
        except BaseException:
            await self._end_heartbeat(batch)
            raise
        return batch

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
        ahead: asyncio.Task[FetchedBatch | None] | None = None  # the next batch, fetched while this one is stored
        try:
            while not self._stopping.is_set():
                try:
                    if subscription is None:
                        subscription = self._subscription = await self._subscribe()
                        self._fetch_error = None
                    next_batch, ahead = ahead, None
                    batch = await (next_batch if next_batch is not None else self._fetch(subscription))
                except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                    self._fetch_failed(exc)
                    subscription = None
                    await self._pause(self._next_backoff())
                    continue
                if batch is not None:
                    self._fetch_error = None
                    if self.read_ahead and not self._stopping.is_set():
                        ahead = asyncio.create_task(self._fetch(subscription))
                    await self._handle_or_report(batch)
                if subscription is not None and time.monotonic() - last_pending_check > 5:
                    last_pending_check = time.monotonic()
                    await self._check_consumer(subscription)
        finally:
            await self._finish_ahead(ahead)

    async def _check_consumer(self, subscription: JetStreamContext.PullSubscription) -> None:
        """Count what waits, and find out whether JetStream answers: an empty fetch only times out, and so
        does one while NATS is away, so an idle pipeline learns it here."""
        try:
            info = await asyncio.wait_for(subscription.consumer_info(), CHECK_TIMEOUT)
        except TimeoutError:
            self._fetch_failed(TimeoutError(f"JetStream did not answer within {CHECK_TIMEOUT:g}s"))
            return
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            self._fetch_failed(exc)
            return
        self._fetch_error = None
        self.stats.on_pending(info.num_pending + info.num_ack_pending)

    def _fetch_failed(self, exc: Exception) -> None:
        self._fetch_error = brief(exc)
        log.warning("inbound fetch failed; retrying", error=self._fetch_error)
        if stream_missing(exc):
            self.on_stream_missing()

    async def _handle_or_report(self, batch: FetchedBatch) -> None:
        """Store a batch; an error nothing below expected is logged and reported, and the pipeline goes on.

        The batch's envelopes are left unacked: JetStream delivers them again after ACK_WAIT.
        """
        try:
            await self.handle(batch)
        except Exception as exc:
            self._store_error = brief(exc)
            log.exception("storing a batch failed unexpectedly; its envelopes will be delivered again")
            await self._pause(self._next_backoff())

    async def _finish_ahead(self, ahead: asyncio.Task[FetchedBatch | None] | None) -> None:
        """At a stop, a batch fetched ahead is in hand too: store and ack it (a fetch still waiting ends empty).

        Cancelled rather than stopped, it is left unacked for JetStream to redeliver.
        """
        if ahead is None:
            return
        current = asyncio.current_task()
        cancelled = current is not None and current.cancelling() > 0
        if cancelled:
            ahead.cancel()
        try:
            batch = await ahead
        except (Exception, asyncio.CancelledError):  # a failed or cancelled fetch: nothing is left in hand
            return
        if batch is None:
            return
        if cancelled:
            await self._end_heartbeat(batch)
        else:
            await self.handle(batch)

    async def handle(self, batch: FetchedBatch) -> None:
        """Store a batch; JetStream is told it is in progress until then, so it is not redelivered meanwhile."""
        try:
            await self._handle(batch)
        finally:
            await self._end_heartbeat(batch)

    @staticmethod
    async def _end_heartbeat(batch: FetchedBatch) -> None:
        batch.heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await batch.heartbeat

    async def _heartbeat(self, messages: list[Msg]) -> None:
        while True:
            await asyncio.sleep(ACK_WAIT / 3)
            for msg in messages:
                if not msg._ackd:
                    with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                        await msg.in_progress()

    async def _prepare(self, batch: FetchedBatch) -> None:
        """Parse every envelope (pure CPU), yielding to the event loop between chunks."""
        for start in range(0, len(batch.messages), PREPARE_CHUNK):
            if start:
                await asyncio.sleep(0)
            for msg in batch.messages[start : start + PREPARE_CHUNK]:
                try:
                    batch.prepared.append((msg, self.pipeline.prepare(Envelope.from_message(msg.headers, msg.data))))
                except Exception as exc:  # a parser crash is the envelope's problem: dead-letter it whole
                    batch.failed.append((msg, exc))

    async def _handle(self, batch: FetchedBatch) -> None:
        """Dead-letter what could not be parsed, store the rest; if that fails, store one at a time."""
        for msg, exc in batch.failed:
            await self._dead_letter(msg, exc)
        prepared = batch.prepared
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
        self._store_error = None
        newest = max(row.received_at for row in rows)
        self.stats.on_batch(result.stored, result.duplicates, (datetime.now(UTC) - newest).total_seconds())
        self.stats.on_events(result.events)
        self.on_committed()

    async def _store_one(self, msg: Msg, row: InquiryRow) -> None:
        try:
            result = await self.pipeline.store_one(row, lambda exc: self._lost_a_race(row, exc))
        except Exception as exc:
            kind = classify(exc)
            if kind is Failure.CONFLICT:
                kind = after_conflicts(exc)
            deliveries = msg.metadata.num_delivered if msg.metadata else 1
            if kind is Failure.TRANSIENT:
                await self._retry_later([msg], exc)
            elif kind is Failure.PERMANENT or deliveries >= self.max_deliveries:
                await self._dead_letter(msg, exc)
            else:
                log.warning("envelope failed; will retry", key=row.key, deliveries=deliveries, error=str(exc)[:300])
                await self._nak(msg, delay=min(MAX_BACKOFF, 0.5 * 2**deliveries))
                self.stats.on_outcome("retried", 1)
            return
        await self._ack_all([msg])
        self._committed(result, [row])

    def _lost_a_race(self, row: InquiryRow, exc: BaseException) -> None:
        self.stats.on_store_error(Failure.CONFLICT.value)
        log.info("envelope lost a race; trying again at once", key=row.key, error=brief(exc))

    async def _dead_letter(self, msg: Msg, exc: BaseException) -> None:
        headers = dict(msg.headers or {})
        try:
            recorded = await self.dead.send(
                source="inbound",
                subject=msg.subject,
                headers=headers,
                payload=msg.data,
                key=headers.get("Leadhub-Key"),
                reason=str(exc) or type(exc).__name__,
                error=type(exc).__name__,
                deliveries=msg.metadata.num_delivered if msg.metadata else 1,
                queue_message=_queue_message(msg),
            )
        except Exception as store_exc:
            self.stats.on_store_error("dead_letter")
            await self._retry_later([msg], store_exc)
            return
        self.stats.on_outcome("dead_letter" if recorded else "duplicate", 1)
        await self._ack_all([msg])

    async def _retry_later(self, messages: list[Msg], exc: BaseException) -> None:
        """The store is unavailable: hand the messages back and wait before fetching more."""
        delay = self._next_backoff()
        self._store_error = brief(exc)
        log.warning(
            "store unavailable; envelopes will be retried",
            count=len(messages),
            retry_in=round(delay, 2),
            error=self._store_error,
        )
        for msg in messages:
            await self._nak(msg, delay=delay)
        self.stats.on_outcome("retried", len(messages))
        await self._pause(delay)

    async def _nak(self, msg: Msg, delay: float) -> None:
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            await msg.nak(delay=delay)

    async def _ack_all(self, messages: list[Msg]) -> None:
        """Acks after the commit; a lost ack means a redelivery, which the stored key absorbs.

        Not an outcome of its own: the envelopes acked were counted as stored, duplicate or dead_letter already.
        """
        for msg in messages:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await msg.ack()


def _queue_message(msg: Msg) -> str | None:
    """The message's place in its stream, the same in every delivery of it."""
    meta = msg.metadata
    return f"{meta.stream}:{meta.sequence.stream}" if meta else None
