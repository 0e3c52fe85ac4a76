"""The trigger consumer: a durable pull consumer on the EVENTS stream feeding the matcher, acking after commit.

It takes only the event types the loaded rules listen to (`filter_subjects`): events no rule listens to are
never delivered, which was most of the consumer's work (BENCHMARKS.md). When a reload adds a type, events of
that type already in the stream at that moment are acked unseen, as they were when every event was
delivered and none had a listener: a new rule acts on events from its load on, even where NATS would
otherwise deliver older ones (after a server restart its position falls back to the last delivered event).

Replicas share the durable consumer, so its filter is the union of what every live replica's rules listen to, which
each replica says in a NATS KV bucket (triggers/listeners.py) and checks against the consumer every few seconds. A
filter of one replica's rules (the last to subscribe) left out the types only the others' rules listen to, and NATS
moved the consumer past their events. While their rules differ (a hot reload a moment apart, a rules change rolled
out host by host), a replica is handed types only the others' rules listen to: it gives the event back (`nak`) for
a replica whose rules do, rather than ack it unhandled.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from leadhub.error_text import brief
from leadhub.pulling import fetch_unless_stopped
from leadhub.triggers.listeners import REFRESH, Listeners
from leadhub.triggers.matcher import Matcher, event_from_message

log = structlog.get_logger("leadhub.triggers")

DURABLE = "triggers"
STREAM = "EVENTS"
ACK_WAIT = 30.0
FETCH_TIMEOUT = 1.0
BATCH = 100
EVERYTHING = "events.>"
NOTHING = "events._no_rule_listens_"  # no event has this subject: the filter while no rule listens to events
PLAIN_TYPE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
GIVE_BACK_DELAY = 1.0  # seconds before an event given back is delivered again, to any replica
AGREEMENT_PASSES = 3  # tries at a filter that stays the union of the entries read after it was set (see `_agree`)
GIVE_BACK_LIMIT = 30  # deliveries after which an event no replica took is acked: none listens to it any more


def event_subjects(types: Iterable[str]) -> list[str]:
    """The EVENTS subjects for the listened event types; all of them when a type is not a plain subject."""
    kinds = sorted(set(types))
    if not kinds:
        return [NOTHING]
    if not all(PLAIN_TYPE.match(kind) for kind in kinds):
        return [EVERYTHING]  # e.g. a typo with a space: delivered and matched by name, as before
    return [f"events.{kind}" for kind in kinds]


def union_of(replicas: Iterable[list[str]]) -> list[str]:
    """The filter that delivers what any of the replicas' subjects (each from `event_subjects`) name."""
    subjects = {subject for listened in replicas for subject in listened}
    if EVERYTHING in subjects:
        return [EVERYTHING]
    subjects.discard(NOTHING)
    return sorted(subjects) or [NOTHING]


def covered(subject: str, filters: Iterable[str]) -> bool:
    """True when a NATS filter (`*` one token, `>` the rest) already delivers `subject`."""
    tokens = subject.split(".")
    for pattern in filters:
        parts = pattern.split(".")
        for i, part in enumerate(parts):
            if part == ">":
                if len(tokens) > i:
                    return True
                break
            if i >= len(tokens) or (part not in ("*", tokens[i])):
                break
        else:
            if len(parts) == len(tokens):
                return True
    return False


class EventConsumer:
    def __init__(
        self,
        jetstream: Callable[[], JetStreamContext],
        matcher: Matcher,
        on_scheduled: Callable[[], None],
        listened: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.jetstream = jetstream
        self.matcher = matcher
        self.on_scheduled = on_scheduled
        self.listened = listened  # the event types the loaded rules listen to; None: every event
        self._stopping = asyncio.Event()
        self.last_error: str | None = None
        self.listeners = Listeners(jetstream)  # this replica's entry and the others'
        self.filter: list[str] = []  # the subjects the durable consumer takes now: every live replica's
        self.listening: list[str] = []  # this replica's, when it last agreed the filter with the others
        self._next_agreement = 0.0  # time.monotonic() at which the filter is checked against the others' again
        self._everything = listened is None  # also set when the server cannot filter by several subjects
        self._unseen_until: dict[str, int] = {}  # subject -> stream sequence: older events came before a listener

    def stop(self) -> None:
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _wanted(self) -> list[str]:
        return [EVERYTHING] if self._everything or self.listened is None else event_subjects(self.listened())

    async def _subscribe(self, wanted: list[str]) -> JetStreamContext.PullSubscription:
        """Bind the durable consumer, first making its filter cover what every live replica listens to."""
        await self._agree(wanted)
        return await self.jetstream().pull_subscribe_bind(DURABLE, STREAM)

    async def _agree(self, wanted: list[str]) -> None:
        """Say which subjects this replica's rules listen to, and set the consumer's filter to the union of every
        live replica's if it has another one (another replica, or a replica gone, changed it).

        After a change the entries are read again: two replicas changing it at the same moment may each have read
        the entries before the other wrote its own, and the second to write the filter would leave the other's out."""
        jetstream = self.jetstream()
        for _ in range(AGREEMENT_PASSES):
            union = union_of(await self.listeners.everyone(wanted))
            before = await self._filter_on_server(jetstream)
            if before is not None and set(before) == set(union):
                break
            added = [subject for subject in union if before is not None and not covered(subject, before)]
            if added:
                last = (await jetstream.stream_info(STREAM)).state.last_seq
                self._unseen_until |= dict.fromkeys(added, last)
            union = await self._configure(jetstream, union)
            if self._everything:  # the server cannot filter by several subjects: neither can the other replicas
                wanted = [EVERYTHING]
        if union != self.filter or wanted != self.listening:
            log.info("listening for events", subjects=",".join(union), own=",".join(wanted))
        self.filter, self.listening = union, wanted
        self._next_agreement = time.monotonic() + REFRESH

    async def _filter_on_server(self, jetstream: JetStreamContext) -> list[str] | None:
        """The durable consumer's filter; None before it exists (a first start: it begins at the stream's start)."""
        try:
            config = (await jetstream.consumer_info(STREAM, DURABLE)).config
        except nats.js.errors.NotFoundError:
            return None
        return config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])

    async def _configure(self, jetstream: JetStreamContext, wanted: list[str]) -> list[str]:
        """Create the durable consumer or update its filter; the subjects it takes in the end."""
        config = ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT,
            max_deliver=-1,
            filter_subjects=wanted,
        )
        try:
            await jetstream.add_consumer(STREAM, config)  # creates it, or updates its filter
        except nats.js.errors.BadRequestError as exc:
            if wanted == [EVERYTHING] or self._everything:
                raise
            log.warning("NATS cannot filter by these subjects; taking every event", error=str(exc)[:200])
            self._everything = True
            return await self._configure(jetstream, [EVERYTHING])
        return wanted

    async def run(self) -> None:
        subscription: JetStreamContext.PullSubscription | None = None
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                wanted = self._wanted()
                if subscription is None:
                    subscription = await self._subscribe(wanted)
                elif wanted != self.listening or time.monotonic() >= self._next_agreement:  # a reload, or a refresh
                    await self._agree(wanted)
                messages = await self._fetch(subscription)
            except TimeoutError:  # nothing to fetch: the server answered, so the consumer is healthy
                self.last_error = None
                continue
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                self.last_error = brief(exc)
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
        await self.listeners.leave()

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        return await fetch_unless_stopped(subscription, BATCH, FETCH_TIMEOUT, self._stopping)

    async def _handle(self, msg: Msg) -> None:
        if msg.metadata and msg.metadata.sequence.stream <= self._unseen_until.get(msg.subject, 0):
            await self._ack(msg)  # in the stream before a rule listened to its type (see the module docstring)
            return
        if not self._mine(msg.subject):
            await self._give_back(msg)
            return
        try:
            event = event_from_message(msg.data)
        except (ValueError, RecursionError) as exc:  # not an event at all (or nested past json's stack): for good
            log.error("unreadable event skipped", subject=msg.subject, error=str(exc)[:200])
            await self._ack(msg)
            return
        try:
            scheduled = await self.matcher.handle(event)
        except Exception as exc:
            deliveries = msg.metadata.num_delivered if msg.metadata else 1
            self.last_error = brief(exc)
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

    def _mine(self, subject: str) -> bool:
        """Whether this replica's rules listen to the subject: when it last agreed the filter, or as loaded now."""
        return covered(subject, self.listening) or covered(subject, self._wanted())

    async def _give_back(self, msg: Msg) -> None:
        """An event only other replicas' rules listen to (see the module docstring): for a replica whose rules do."""
        deliveries = msg.metadata.num_delivered if msg.metadata else GIVE_BACK_LIMIT
        if deliveries >= GIVE_BACK_LIMIT:
            log.warning("event no loaded rule listens to skipped", subject=msg.subject, deliveries=deliveries)
            await self._ack(msg)
            return
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            await msg.nak(delay=GIVE_BACK_DELAY)

    async def _ack(self, msg: Msg) -> None:
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            await msg.ack()
