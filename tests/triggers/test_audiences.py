"""`for_each: contact` audiences against the real database: read a page of contacts at a time, each live contact
once however pages fall and whatever merges happen while a tick runs, filters applied per page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, insert, update

from leadhub.ids import new_id
from leadhub.store import audiences as store_audiences
from leadhub.store.models import Contact, Inquiry, Order
from leadhub.triggers.audiences import audience, contact_event
from leadhub.triggers.compile import CompiledRule
from leadhub.triggers.loader import load_rules
from leadhub.triggers.sandbox import Templates

TICK = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)  # 10:00 in Moscow
contact_t = Contact.__table__


def _rule(tmp_path: Path, for_each: str) -> CompiledRule:
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - id: each\n    schedule: {cron: '0 10 * * *', timezone: Europe/Moscow}\n"
        f"    for_each: {for_each}\n    do:\n      - create_task: {{title: hello}}\n"
    )
    loaded = load_rules(tmp_path, Templates())
    assert loaded.problems == []
    return loaded.rules[0]


def _contact(contact_id: str, merged_into: str | None = None) -> dict[str, Any]:
    return {
        "id": contact_id, "name": None, "email": None, "phone": None, "company": None, "consent": None,
        "merged_into": merged_into, "review": None, "created_at": TICK, "updated_at": TICK,
    }  # fmt: skip


async def _contacts(engine: Any, count: int) -> list[str]:
    ids = sorted(new_id() for _ in range(count))
    async with engine.begin() as conn:
        for start in range(0, count, 5000):
            await conn.execute(insert(contact_t), [_contact(i) for i in ids[start : start + 5000]])
    return ids


async def _born(engine: Any, contact_id: str, text: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(Inquiry.__table__).values(
                id=new_id(), key=f"form:{new_id()}", channel="form", connector="site-form", received_at=TICK,
                contact_id=contact_id, lead_id=None, name=None, email=None, phone=None, message=None,
                fields={"birthday": text}, dropped=None, content_type="application/json", meta={}, payload=b"{}",
                created_at=TICK,
            )
        )  # fmt: skip


async def _ordered(engine: Any, contact_id: str, at: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(Order.__table__).values(
                id=new_id(), connector="shop", external_id=new_id(), number="1", status="completed",
                provider_status="completed", total="10.00", currency="EUR", items=[], customer={},
                contact_id=contact_id, lead_id=None, placed_at=at, status_changed_at=at, created_at=at, updated_at=at,
            )
        )  # fmt: skip


async def test_a_large_audience_is_read_a_page_at_a_time(engine, tmp_path: Path) -> None:
    """All contacts and their events were built at once (~0.8 KB a contact: 800 MB for a million) and held for
    the hour their events took; now the first contact is handed on once its page is read, and what is held at
    once is one page of them."""
    count = 3 * store_audiences.PAGE + 7
    ids = await _contacts(engine, count)
    rule = _rule(tmp_path, "contact")
    pages: list[int] = []  # contact pages read so far, as each contact is handed on

    def counted(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT CONTACT.ID"):
            pages.append(len(pages) + 1)

    event.listen(engine.sync_engine, "before_cursor_execute", counted)
    read_before: list[int] = []
    handed: list[str] = []
    try:
        async for contact_id, found in audience(engine, rule, TICK):
            read_before.append(len(pages))
            handed.append(contact_event(rule, TICK, contact_id, found)["subject_id"])
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", counted)
    assert handed == ids  # each once, in id order
    assert read_before[0] == 1, "every contact was read before the first was handed on"
    assert read_before[-1] == len(pages) == 4  # three full pages and the seven left


async def test_every_live_contact_once_while_merges_happen_between_pages(
    engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A contact merged into one already handled is not handled again; one merged away before its page is
    left out; the pages do not shift (keyset on the id), so none is skipped."""
    monkeypatch.setattr(store_audiences, "PAGE", 3)
    ids = await _contacts(engine, 8)
    async with engine.begin() as conn:  # merged before the tick
        await conn.execute(update(contact_t).where(contact_t.c.id == ids[1]).values(merged_into=ids[0]))
    rule = _rule(tmp_path, "contact")
    handled = []
    async for contact_id, _found in audience(engine, rule, TICK):
        handled.append(contact_id)
        if contact_id == ids[2]:  # while the first page is handled, two later contacts are merged
            async with engine.begin() as conn:
                await conn.execute(update(contact_t).where(contact_t.c.id == ids[6]).values(merged_into=ids[0]))
                await conn.execute(update(contact_t).where(contact_t.c.id == ids[7]).values(merged_into=ids[5]))
    assert handled == [ids[0], ids[2], ids[3], ids[4], ids[5]]


async def test_filters_select_across_pages(engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Birthdays today in the schedule's zone and lapsed buyers, found on every page; with both keys, both."""
    monkeypatch.setattr(store_audiences, "PAGE", 2)
    ids = await _contacts(engine, 7)
    for contact_id in ids[1], ids[4], ids[6]:
        await _born(engine, contact_id, "03.03.1990")
    await _born(engine, ids[2], "1990-03-02")  # yesterday in Moscow
    long_ago = TICK - timedelta(days=120)
    for contact_id in ids[3], ids[4], ids[5]:
        await _ordered(engine, contact_id, long_ago)
    await _ordered(engine, ids[6], TICK - timedelta(days=3))

    async def selected(for_each: str) -> dict[str, dict[str, Any]]:
        return {cid: found async for cid, found in audience(engine, _rule(tmp_path, for_each), TICK)}

    assert list(await selected("{contact: {birthday_field: birthday}}")) == [ids[1], ids[4], ids[6]]
    assert list(await selected("{contact: {no_orders_for: 90d}}")) == [ids[3], ids[4], ids[5]]
    both = await selected("{contact: {no_orders_for: 90d, birthday_field: birthday}}")
    assert both == {ids[4]: {"last_order_at": long_ago.isoformat(), "birthday": "03.03.1990"}}


async def test_no_orders_for_counts_from_the_tick_as_an_instant(engine, tmp_path: Path) -> None:
    """Ticks carry the schedule's zone (10:00 in Moscow). On SQLite, which stores UTC wall times, the bound `before`
    was written as Moscow wall time: an order placed 89 days and 23 hours before the tick counted as 90 days old."""
    moscow_tick = TICK.astimezone(ZoneInfo("Europe/Moscow"))
    ids = await _contacts(engine, 2)
    await _ordered(engine, ids[0], TICK - timedelta(days=90, hours=1))
    await _ordered(engine, ids[1], TICK - timedelta(days=89, hours=23))
    rule = _rule(tmp_path, "{contact: {no_orders_for: 90d}}")
    assert [cid async for cid, _ in audience(engine, rule, moscow_tick)] == [ids[0]]
