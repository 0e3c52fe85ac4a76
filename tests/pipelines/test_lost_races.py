"""The consumer and transactions that lose to concurrent ones, against real NATS and the real database: a lost
race is tried again at once and never counts towards the dead-letter limit, while an item that fails the same
way on every try is still dead-lettered."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.envelope import Envelope
from leadhub.pipelines.consumer import InboundConsumer
from leadhub.pipelines.dead_letters import DeadLetterSink
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store import identity
from leadhub.store.intake import BatchResult, InquiryRow, write_batch
from leadhub.store.models import Contact, DeadLetter
from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for
from tests.pipelines.contention import create_fought, deadlock, postgresql_only

FORM = {"name": "site-form", "type": "form", "rate_limit": None}
SOURCES = {"site-form": SourceSpec("form", {"name": "site-form"})}


class LosingPipeline(IntakePipeline):
    """Stands for a worker whose transactions keep losing to other workers': its first `losses` stores fail with
    `lost`, an error the real database raised, instead of storing."""

    def __init__(self, *args: Any, lost: Exception, losses: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = lost
        self.losses = losses

    async def store(self, rows: Sequence[InquiryRow]) -> BatchResult:
        if self.losses:
            self.losses -= 1
            raise self.lost
        return await super().store(rows)


async def _dead_letters(hub: RunningHub) -> list[Any]:
    async with hub.engine.connect() as conn:
        return list((await conn.execute(select(DeadLetter.__table__))).all())


async def stored_none_dead(hub: RunningHub, count: int) -> list[dict[str, Any]]:
    """The inquiries once `count` are stored; fails at once if an envelope is dead-lettered meanwhile."""

    async def probe() -> list[dict[str, Any]] | None:
        dead = await _dead_letters(hub)
        assert dead == [], f"a good envelope was dead-lettered: {dead[0].reason}"
        items = (await hub.api("/api/inquiries", limit=1000))["items"]
        return items if len(items) == count else None

    return await wait_for(probe, timeout=20, what=f"{count} inquiries stored")


async def _accepted(hub: RunningHub, *bodies: dict[str, str]) -> None:
    for body in bodies:
        async with await hub.post("/hooks/site-form", json=body) as response:
            assert response.status == 202, await response.text()


@asynccontextmanager
async def consuming(hub: RunningHub, pipeline: IntakePipeline, max_deliveries: int) -> AsyncIterator[None]:
    """The inbound consumer of `hub`'s queue, storing with `pipeline`, for the block's duration."""
    dead = DeadLetterSink(hub.engine, hub.hub.queue.publish, lambda reason: None)
    consumer = InboundConsumer(
        lambda: hub.hub.queue.jetstream, pipeline, dead, batch_size=100, max_deliveries=max_deliveries
    )
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        consumer.stop()
        await task


async def test_an_envelope_whose_transactions_keep_deadlocking_is_stored_not_dead_lettered(
    make_hub: HubFactory,
) -> None:
    """Six deadlocks in a row, one delivery allowed: the batch, every immediate retry and the first try of the
    redelivery lose; a deadlock takes two transactions, so the envelope is retried until it is stored."""
    hub = await make_hub([FORM], roles="http,relay")  # accepts, does not consume: the test's consumer does
    postgresql_only(hub.engine)
    await create_fought(hub.engine)
    lost = await deadlock(hub.engine)
    await _accepted(hub, {"name": "Ivan", "email": "ivan@x.example"})
    pipeline = LosingPipeline(hub.engine, SOURCES, lost=lost, losses=6)
    async with consuming(hub, pipeline, max_deliveries=1):
        (inquiry,) = await stored_none_dead(hub, 1)
    assert inquiry["email"] == "ivan@x.example"
    assert pipeline.losses == 0
    assert await _dead_letters(hub) == []


def _form(key: str, **fields: str) -> Envelope:
    return Envelope(
        key=f"form:{key}", channel="form", connector="site-form", payload=json.dumps(fields).encode(),
        content_type="application/json",
    )  # fmt: skip


def rivals_commit_after_each_read(monkeypatch: pytest.MonkeyPatch, hub: RunningHub, rivals: list[Envelope]) -> None:
    """Other workers win the consumer's next races: after each of its transactions has read which identifiers are
    known, one rival stores its envelope (its own transaction, committed), so the consumer's insert of an
    identifier the rival just stored fails on the unique key."""
    read = identity.known_identifiers
    rival = IntakePipeline(hub.engine, SOURCES)
    racing = False

    async def read_then_lose(conn: AsyncConnection, idents: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        nonlocal racing
        found = await read(conn, idents)
        if rivals and not racing:
            racing = True  # the rival's own read passes straight through
            try:
                await rival.store([rival.prepare(rivals.pop(0))])
            finally:
                racing = False
        return found

    monkeypatch.setattr(identity, "known_identifiers", read_then_lose)


async def test_an_envelope_losing_two_races_for_one_new_person_is_stored_not_dead_lettered(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three workers, one person: the envelope names a new email and a new phone; one rival stores the email
    while the batch is in flight, another the phone while the one-by-one retry is. With one delivery allowed, the
    lost races alone used to dead-letter it; tried again at once, it finds both and unites them."""
    hub = await make_hub([FORM], roles="http,relay")
    postgresql_only(hub.engine)  # SQLite's writers take the write lock before they read: no such race there
    await _accepted(hub, {"name": "Ivan", "email": "ivan.race@x.example", "phone": "+7 916 555 77 11"})
    rivals = [_form("rival-email", email="ivan.race@x.example"), _form("rival-phone", phone="+7 (916) 555-77-11")]
    rivals_commit_after_each_read(monkeypatch, hub, rivals)
    async with consuming(hub, IntakePipeline(hub.engine, SOURCES), max_deliveries=1):
        await stored_none_dead(hub, 3)
    assert rivals == []  # both races were run
    async with hub.engine.connect() as conn:
        contacts = (await conn.execute(select(Contact.__table__))).all()
    assert len([c for c in contacts if c.merged_into is None]) == 1


class WritesItsInquiryTwice(IntakePipeline):
    """Stands for a bug in a step: storing the row named "Twice" writes its inquiry a second time in the same
    transaction, a unique violation on every try, with no other worker involved."""

    async def store(self, rows: Sequence[InquiryRow]) -> BatchResult:
        twice = [dataclasses.replace(row, key=row.key + ":again") for row in rows if row.name == "Twice"]
        if not twice:
            return await super().store(rows)
        async with self.engine.begin() as conn:
            result = await write_batch(conn, rows, self.clock(), self.policy)
            await write_batch(conn, twice, self.clock(), self.policy)
            return result


async def test_an_envelope_that_violates_a_unique_key_on_every_try_is_still_dead_lettered(
    make_hub: HubFactory,
) -> None:
    """Immediate retries are for races: a violation that no other worker caused fails each of them the same way
    and the envelope is dead-lettered after the allowed deliveries, while its batch's good envelopes are stored."""
    hub = await make_hub([FORM], roles="http,relay")
    await _accepted(hub, *({"name": "Twice" if n == 2 else f"Good {n}"} for n in range(5)))
    async with consuming(hub, WritesItsInquiryTwice(hub.engine, SOURCES), max_deliveries=2):
        dead = await wait_for(lambda: _dead_letters(hub), timeout=30, what="the dead letter")
    assert len(dead) == 1 and dead[0].deliveries == 2 and dead[0].error == "IntegrityError", dead
    names = {item["name"] for item in (await hub.api("/api/inquiries", limit=1000))["items"]}
    assert names == {f"Good {n}" for n in (0, 1, 3, 4)}
