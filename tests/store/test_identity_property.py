"""Property: any interleaving, duplication and batching of a stream of inquiries (the same people across form,
Telegram and shop, their phones and emails written in varied formats) ends in the same contacts, leads and orders
as processing it once, in time order, one inquiry at a time. Against the real database, with real parsers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.envelope import Envelope
from leadhub.pipelines.intake import IntakePipeline
from leadhub.store.models import Base
from leadhub.store.policy import IdentityPolicy
from tests.store.envelopes import SOURCES, canonical_state, form, shopify_order, store_retrying, telegram

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
PHONE_FORMATS = ("+7 {a} {b}-{c}-{d}", "8 ({a}) {b}-{c}-{d}", "+7-{a}-{b}-{c}-{d}", "8{a}{b}{c}{d}", "7 {a} {b}{c}{d}")
KINDS = ("form_email", "form_phone", "form_both", "tg_text", "tg_phone", "order_email", "order_both")


@dataclass(frozen=True)
class Person:
    n: int

    @property
    def digits(self) -> tuple[str, str, str, str]:
        return "916", f"{500 + self.n:03d}", f"{10 + self.n:02d}", "42"

    def phone(self, style: int) -> str:
        a, b, c, d = self.digits
        return PHONE_FORMATS[style % len(PHONE_FORMATS)].format(a=a, b=b, c=c, d=d)

    def email(self, style: int) -> str:
        first, last = f"anna{self.n}", "smirnova"
        return (
            f"{first}.{last}@gmail.com",
            f"{first}{last}@gmail.com",
            f"{first.upper()}.{last.capitalize()}@GMAIL.COM",
            f"{first}.{last}+shop@gmail.com",
            f"{first}.{last}@googlemail.com",
        )[style % 5]


def envelopes_for(person: Person, touch: int, kind: str, style: int, at: datetime) -> list[Envelope]:
    key = f"p{person.n}-t{touch}"
    tg_id = 7_000_000 + person.n
    if kind == "form_email":
        return [form(key, at, name=f"anna {person.n}", email=person.email(style))]
    if kind == "form_phone":
        return [form(key, at, phone=person.phone(style))]
    if kind == "form_both":
        return [form(key, at, email=person.email(style), phone=person.phone(style + 1), utm_source=f"s{touch}")]
    if kind == "tg_text":
        return [telegram(key, at, tg_id, text="hello")]
    if kind == "tg_phone":
        return [telegram(key, at, tg_id, phone=person.phone(0).replace("8 (", "+7 ("))]
    order_id = 100_000 + person.n * 100 + touch
    phone = person.phone(style) if kind == "order_both" else None
    created = shopify_order(key, at, order_id, email=person.email(style), phone=phone)
    paid = shopify_order(
        f"{key}-paid", at + timedelta(minutes=30), order_id, email=person.email(style), phone=phone,
        status="paid", updated_at=at + timedelta(minutes=30),
    )  # fmt: skip
    return [created, paid]


@st.composite
def streams(draw: st.DrawFn) -> list[Envelope]:
    """Up to four people, each with one or two episodes (ten days apart) of one to four touches within a day."""
    out: list[Envelope] = []
    for n in range(draw(st.integers(1, 4))):
        person = Person(n)
        touch = 0
        for episode in range(draw(st.integers(1, 2))):
            start = T0 + timedelta(days=10 * episode, minutes=7 * n)
            for _ in range(draw(st.integers(1, 4))):
                kind = draw(st.sampled_from(KINDS))
                at = start + timedelta(minutes=draw(st.integers(0, 1440)), seconds=touch)
                out += envelopes_for(person, touch, kind, draw(st.integers(0, 9)), at)
                touch += 1
    return out


async def reset(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())


def pipeline(engine: AsyncEngine) -> IntakePipeline:
    return IntakePipeline(
        engine, SOURCES, default_region="RU", policy=IdentityPolicy(), clock=lambda: T0 + timedelta(days=40)
    )


async def process_in_order(engine: AsyncEngine, stream: list[Envelope]) -> dict[str, Any]:
    await reset(engine)
    worker = pipeline(engine)
    for envelope in sorted(stream, key=lambda e: (e.received_at, e.key)):
        await store_retrying(worker, [envelope])
    return await canonical_state(engine)


async def process_shuffled(
    engine: AsyncEngine, deliveries: list[Envelope], cuts: list[int], two: bool
) -> dict[str, Any]:
    await reset(engine)
    batches, start = [], 0
    for cut in [*sorted(set(cuts)), len(deliveries)]:
        if cut > start:
            batches.append(deliveries[start:cut])
            start = cut
    workers = [pipeline(engine), pipeline(engine)]
    if two:  # two workers share the batches, concurrently
        queues = [batches[0::2], batches[1::2]]

        async def run(worker: IntakePipeline, mine: list[list[Envelope]]) -> None:
            for batch in mine:
                await store_retrying(worker, batch)

        await asyncio.gather(*(run(w, q) for w, q in zip(workers, queues, strict=True)))
    else:
        for batch in batches:
            await store_retrying(workers[0], batch)
    return await canonical_state(engine)


async def test_any_interleaving_and_duplication_ends_in_the_same_contacts_leads_and_orders(engine: AsyncEngine) -> None:
    loop = asyncio.get_running_loop()
    seen: list[int] = []

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(stream=streams(), data=st.data())
    def property_(stream: list[Envelope], data: st.DataObject) -> None:
        deliveries = data.draw(st.permutations(stream), label="order")
        deliveries += data.draw(st.lists(st.sampled_from(stream), max_size=4), label="redelivered")
        deliveries = data.draw(st.permutations(deliveries), label="with redeliveries")
        cuts = data.draw(st.lists(st.integers(0, len(deliveries)), max_size=5), label="batch cuts")
        two = data.draw(st.booleans(), label="two workers")
        expected = asyncio.run_coroutine_threadsafe(process_in_order(engine, stream), loop).result()
        got = asyncio.run_coroutine_threadsafe(process_shuffled(engine, deliveries, cuts, two), loop).result()
        assert got == expected
        seen.append(len(expected["contacts"]))

    await asyncio.to_thread(property_)
    assert max(seen) >= 3
