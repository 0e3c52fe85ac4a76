"""The outbox relay: publishes committed domain events to the EVENTS stream, each exactly once by id."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _string
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.error_text import brief
from leadhub.publish_window import PublishWindow, send
from leadhub.queue_errors import QueueBusy
from leadhub.store import outbox

log = structlog.get_logger("leadhub.relay")

Message = tuple[str, bytes, dict[str, str]]
PublishMany = Callable[[list[Message], str], Awaitable[None]]
POLL_INTERVAL = 1.0
# Events per claim. A pipeline batch of 500 new people writes ~1,500 events, and on SQLite a claim waits for
# the pipeline's write lock to mark its rows: a claim of 500 kept a third of the pace. Claims of 5,000 kept it,
# but building that many messages at once held the event loop (webhooks) and grew NATS's peak (BENCHMARKS.md).
BATCH = 2000
PENDING_EVERY = 2.0  # seconds between counts of what is still waiting while the relay is behind


# Why a relay attempt failed (`leadhub_relay_failures_total{reason}`): NATS refused events (its ingest queue is
# full; the relay then sends fewer at a time), NATS could not be reached or did not ack, the store failed.
FAILURE_REASONS = ("queue_busy", "queue_unavailable", "store")

OCCURRED_KEPT = 4096  # formatted times remembered: a claim's events share a handful of batch times


def event_message(row: Sequence[Any]) -> Message:
    """The EVENTS message of an outbox row: `{"id","type","subject_id","occurred_at","data"}`.

    `row` is `(id, type, subject_id, data_json, created_at)`, as `outbox.claim_unpublished` selects it. Written
    directly (each string through the json module's C escaper, the stored data JSON spliced in as it is): the
    same bytes as `json.dumps` of the whole, at a third of its cost per event. The row is unpacked rather than
    read by attribute (a SQLAlchemy Row's attribute access was half the cost), and each UTC time is formatted
    once: a batch's events share its `now`.
    """
    event_id, kind, subject_id, data_json, created = row
    occurred = _occurred_at(created)
    subject = "null" if subject_id is None else _string(subject_id)
    body = (
        f'{{"id":{_string(event_id)},"type":{_string(kind)},"subject_id":{subject},'
        f'"occurred_at":{occurred},"data":{data_json}}}'
    )
    return f"events.{kind}", body.encode(), {"Nats-Msg-Id": event_id, "Leadhub-Event-Type": kind}


_occurred: dict[datetime, str] = {}


def _occurred_at(created: datetime) -> str:
    """`created` as a JSON string in ISO form; naive means UTC (SQLite gives stored times back naive)."""
    if created.tzinfo is not None and created.tzinfo is not UTC:  # another zone: equal instants differ in writing
        return _string(created.isoformat())
    text = _occurred.get(created)
    if text is None:
        if len(_occurred) >= OCCURRED_KEPT:
            _occurred.clear()
        text = _occurred[created] = _string(created.replace(tzinfo=UTC).isoformat())
    return text


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        publish: PublishMany,
        on_published: Callable[[int], None],
        on_pending: Callable[[int], None] = lambda n: None,
        share: tuple[int, int] = (0, 1),
        *,
        on_failure: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.engine = engine
        self.publish = publish
        self.on_published = on_published
        self.on_pending = on_pending  # events still waiting (the `leadhub_outbox_pending` gauge)
        self._pending_counted = 0.0
        self.share = share  # (index, count): with worker processes each relays its own share of the outbox
        self.on_failure = on_failure  # one of FAILURE_REASONS per failed publish or failed claim
        self._publish_error: Exception | None = None  # the last publish failure, already counted
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.last_error: str | None = None
        self.window = PublishWindow(BATCH)  # events in flight: a whole claim unless NATS refuses some

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        delay = POLL_INTERVAL
        while not self._stopping.is_set():
            self._wake.clear()  # before the claim: a wake or stop() while it is in hand is not lost
            try:
                relayed = await self.relay_once()
                self.last_error = None
                delay = POLL_INTERVAL
            except Exception as exc:  # NATS or the store away: keep the events, try again later
                if exc is not self._publish_error:
                    self.on_failure("store")
                self.last_error = brief(exc)
                log.warning("outbox relay failed; will retry", error=self.last_error)
                relayed = 0
                delay = min(10.0, delay * 2)
            if relayed >= BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
        with contextlib.suppress(Exception):
            await self.relay_once()  # flush what the last batches committed

    async def relay_once(self) -> int:
        """Relay one claim; when publishing stops part-way, what the stream acked is marked before the error."""
        async with self.engine.begin() as conn:
            rows = await outbox.claim_unpublished(conn, BATCH, self.share)
            if not rows:
                self.on_pending(0)
                return 0
            acked, error = await self._publish_claim([event_message(row) for row in rows])
            if acked:
                await outbox.mark_published(conn, [row.id for row in rows[:acked]], datetime.now(UTC))
        if acked:
            self.on_published(acked)
        if error is not None:
            raise error
        await self._report_pending(len(rows))
        return len(rows)

    async def _publish_claim(self, messages: list[Message]) -> tuple[int, Exception | None]:
        """How many of `messages` (from the first) the stream acked, and the error that stopped the rest.

        One publish of the whole claim unless NATS refuses some; then parts of the window's size, retried
        smaller after each refusal (leadhub/publish_window.py).
        """
        sent = await send(messages, self._publish_part, self.window, on_refused=self._refused)
        if sent.error is not None:
            if not isinstance(sent.error, QueueBusy):  # a refusal was counted as it came
                self.on_failure("queue_unavailable")
            self._publish_error = sent.error
        return sent.acked, sent.error

    async def _publish_part(self, part: list[Message]) -> None:
        await self.publish(part, "EVENTS")

    def _refused(self, size: int) -> None:
        self.on_failure("queue_busy")
        if size == self.window.largest:
            log.warning("NATS refused events (the stream's ingest queue is full); relaying fewer at a time")

    async def _report_pending(self, claimed: int) -> None:
        """Caught up when a claim was not full; while behind, count what waits now and then (a count costs a scan)."""
        if claimed < BATCH:
            self.on_pending(0)
            return
        now = asyncio.get_running_loop().time()
        if now - self._pending_counted >= PENDING_EVERY:
            self._pending_counted = now
            async with self.engine.connect() as conn:
                self.on_pending(await outbox.count_unpublished(conn))
