"""The outbox relay: publishes committed domain events to the EVENTS stream, each exactly once by id."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _string
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from leadhub.error_text import brief
from leadhub.publish_window import PublishWindow, send
from leadhub.queue_errors import ItemTooLarge, QueueBusy
from leadhub.store import dead_letters, outbox

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
# full; the relay then sends fewer at a time), NATS could not be reached or did not ack, the store failed, an event
# was larger than NATS takes (`max_payload`; it goes to dead letters, the events behind it go on).
FAILURE_REASONS = ("queue_busy", "queue_unavailable", "store", "too_large")

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
        on_dead: Callable[[str], None] = lambda error: None,
    ) -> None:
        self.engine = engine
        self.publish = publish
        self.on_published = on_published
        self.on_pending = on_pending  # events still waiting (the `leadhub_outbox_pending` gauge)
        self._pending_counted = 0.0
        self.share = share  # (index, count): with worker processes each relays its own share of the outbox
        self.on_failure = on_failure  # one of FAILURE_REASONS per failed publish or failed claim
        self.on_dead = on_dead  # per event sent to dead letters (`leadhub_dead_letters_total{reason}`)
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
        """Relay one claim; when publishing stops part-way, what the stream acked is marked before the error.

        An event NATS can never take (over its `max_payload`) is written to dead letters in the same transaction
        that marks it done, so it neither blocks the events behind it nor is lost.
        """
        async with self.engine.begin() as conn:
            rows = await outbox.claim_unpublished(conn, BATCH, self.share)
            if not rows:
                self.on_pending(0)
                return 0
            messages = [event_message(row) for row in rows]
            settled, too_large, error = await self._publish_claim(messages)
            now = datetime.now(UTC)
            for position, exc in too_large:
                await self._dead_letter(conn, messages[position], exc, now)
            if settled:
                await outbox.mark_published(conn, [row.id for row in rows[:settled]], now)
        for _, exc in too_large:
            self.on_failure("too_large")
            self.on_dead(type(exc).__name__)
        if acked := settled - len(too_large):
            self.on_published(acked)
        if error is not None:
            raise error
        await self._report_pending(len(rows))
        return len(rows)

    async def _publish_claim(
        self, messages: list[Message]
    ) -> tuple[int, list[tuple[int, ItemTooLarge]], Exception | None]:
        """How many of `messages` (from the first) are done with, which of those were too large for the stream (by
        position), and the error that stopped the rest.

        One publish of the whole claim unless NATS refuses some; then parts of the window's size, retried
        smaller after each refusal (leadhub/publish_window.py). A message too large is passed over: the part it
        stopped is sent again without it (the messages sent before it in that part were not confirmed).
        """
        too_large: dict[int, ItemTooLarge] = {}
        start = 0
        while True:
            positions = range(start, len(messages)) if not too_large else [
                i for i in range(start, len(messages)) if i not in too_large
            ]  # fmt: skip
            rest = messages if start == 0 and not too_large else [messages[i] for i in positions]
            sent = await send(rest, self._publish_part, self.window, on_refused=self._refused)
            error = sent.error
            if isinstance(error, ItemTooLarge) and error.position is not None:
                too_large[positions[sent.acked + error.position]] = error  # its part began after the acked ones
                start = positions[sent.acked]
                continue
            settled = positions[sent.acked] if sent.acked < len(positions) else len(messages)
            if error is not None:
                if not isinstance(error, QueueBusy):  # a refusal was counted as it came
                    self.on_failure("queue_unavailable")
                self._publish_error = error
            return settled, sorted((i, e) for i, e in too_large.items() if i < settled), error

    async def _dead_letter(self, conn: AsyncConnection, message: Message, exc: ItemTooLarge, now: datetime) -> None:
        """Record the event whole; one that failed so again after a replay opens its dead letter again."""
        subject, payload, headers = message
        event_id = headers["Nats-Msg-Id"]
        reason = f"the event is too large for the queue: {exc}"
        origin = f"{outbox.DEAD_LETTER_SOURCE}:{event_id}"
        dead_id = await dead_letters.recorded_from(conn, origin, headers, payload)
        if dead_id is not None:
            await dead_letters.reopen(conn, dead_id, reason)
        else:
            dead_id = await dead_letters.add(
                conn,
                source=outbox.DEAD_LETTER_SOURCE,
                subject=subject,
                key=event_id,
                reason=reason,
                error=type(exc).__name__,
                deliveries=1,
                headers=headers,
                payload=payload,
                now=now,
                queue_message=origin,
            )
        log.error("event too large for the queue; dead-lettered", id=dead_id, event_id=event_id, size=exc.size,
                  limit=exc.limit)  # fmt: skip

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
