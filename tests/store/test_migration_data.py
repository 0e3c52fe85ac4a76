"""Migrations keep the rows already stored, up and down, and a failed one leaves the database as it found it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.store.db import MIGRATION_HEADS, create_engine, downgrade, recorded_revisions, upgrade
from leadhub.store.models import Base

OPENED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TABLES = Base.metadata.tables

# Rows as an installation at revision 0001 holds them: only the columns 0001 has.
ROWS_AT_0001: dict[str, list[dict[str, Any]]] = {
    "contact": [
        {"id": "c1", "name": "Anna", "email": "anna@example.com", "phone": None, "created_at": OPENED,
         "updated_at": OPENED},
        {"id": "c2", "name": "Boris", "email": None, "phone": "+79991234567", "created_at": OPENED,
         "updated_at": OPENED},
    ],
    "contact_identifier": [{"kind": "email", "value": "anna@example.com", "contact_id": "c1", "created_at": OPENED}],
    "lead": [
        {"id": "l1", "contact_id": "c1", "status": "new", "tags": ["vip"], "channel": "form", "connector": "site",
         "attribution": {"utm_source": "ads"}, "created_at": OPENED, "updated_at": OPENED},
    ],
    "inquiry": [
        {"id": "i1", "key": "form:site:1", "channel": "form", "connector": "site", "received_at": OPENED,
         "contact_id": "c1", "lead_id": "l1", "fields": {"name": "Anna"}, "content_type": "application/json",
         "meta": {}, "payload": b'{"name": "Anna"}', "created_at": OPENED},
    ],
    "dead_letter": [
        {"id": "d1", "source": "inbound", "key": "form:site:2", "subject": "leadhub.inbound.form",
         "reason": "no contact details", "headers": {"h": "v"}, "payload": b"\x00raw", "created_at": OPENED},
    ],
    "outbox_event": [{"id": "o1", "type": "lead.created", "subject_id": "l1", "data": {"lead": "l1"},
                      "created_at": OPENED}],
    "connector_state": [{"connector": "mail", "key": "inbox", "value": {"uid": 7}, "updated_at": OPENED}],
}  # fmt: skip
ORDER = {"id": "s1", "connector": "shop", "external_id": "1001", "status": "paid", "total": "12.50", "currency": "EUR",
         "items": [{"sku": "a"}], "customer": {"email": "anna@example.com"}, "contact_id": "c1", "lead_id": "l1",
         "status_changed_at": OPENED, "created_at": OPENED, "updated_at": OPENED}  # fmt: skip
RUN = {"id": "a1", "key": "r:e1:0", "rule_id": "r", "action_index": 0, "action_type": "create_task", "event_id": "e1",
       "event_type": "lead.created", "event": {"id": "e1"}, "group_key": "r:l1", "due_at": OPENED, "status": "pending",
       "attempts": 0, "created_at": OPENED, "updated_at": OPENED}  # fmt: skip


async def _insert(engine: AsyncEngine, rows: dict[str, list[dict[str, Any]]]) -> None:
    async with engine.begin() as conn:
        for table, table_rows in rows.items():
            await conn.execute(TABLES[table].insert(), table_rows)


async def _assert_rows_kept(engine: AsyncEngine, rows: dict[str, list[dict[str, Any]]]) -> None:
    async with engine.connect() as conn:
        for table, table_rows in rows.items():
            columns = [TABLES[table].c[name] for name in table_rows[0]]
            result = await conn.execute(select(*columns).order_by(columns[0]))
            stored = [{name: _comparable(value) for name, value in row._mapping.items()} for row in result]
            expected = [{name: row.get(name) for name in table_rows[0]} for row in table_rows]
            assert stored == expected, table


@pytest.mark.parametrize("start", ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010"])
async def test_upgrade_from_each_earlier_revision_keeps_the_rows(database_url: str, start: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, start)
        rows = {**ROWS_AT_0001, **({"shop_order": [ORDER]} if start == "0003" else {})}
        rows |= {"scheduled_action": [RUN]} if start == "0004" else {}
        await _insert(engine, rows)
        await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(recorded_revisions) == MIGRATION_HEADS
        await _assert_rows_kept(engine, rows)
        async with engine.connect() as conn:
            touches = (await conn.execute(text("SELECT first_touch_at, last_touch_at FROM lead"))).one()
        if start < "0005":  # 0005 opened a lead's touches at its creation
            assert [_utc(value) for value in touches] == [OPENED, OPENED]
        if start == "0004":  # a run already waiting finds its action by index and type, as before 0008, and
            async with engine.connect() as conn:  # its throttle counts from when it was handled, as before 0009
                stored = (await conn.execute(text("SELECT do_digest, occurred_at FROM scheduled_action"))).one()
            assert tuple(stored) == (None, None)
    finally:
        await engine.dispose()


async def test_downgrade_to_the_first_revision_keeps_the_rows_it_has_columns_for(database_url: str) -> None:
    """Downgrading drops what later revisions added (their tables and columns); every other row stays."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        await _insert(engine, {**ROWS_AT_0001, "shop_order": [ORDER]})
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE contact SET merged_into = 'c1', consent = 'granted' WHERE id = 'c2'"))
        await downgrade(engine, "0001")
        async with engine.connect() as conn:
            assert await conn.run_sync(recorded_revisions) == {"0001"}
        await _assert_rows_kept(engine, ROWS_AT_0001)
        await upgrade(engine)
        await _assert_rows_kept(engine, ROWS_AT_0001)
        await _assert_foreign_keys_enforced(engine)
    finally:
        await engine.dispose()


async def test_a_migration_that_fails_half_way_changes_nothing(database_url: str) -> None:
    """SQLite committed each DDL statement on its own: a failure left columns no revision records, and every
    later start failed on `duplicate column name`."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0001")
        await _insert(engine, ROWS_AT_0001)
        async with engine.begin() as conn:  # 0005 creates this table after altering contact and lead
            await conn.execute(text("CREATE TABLE contact_merge (id VARCHAR(26) PRIMARY KEY)"))
        with pytest.raises(Exception, match="contact_merge"):
            await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(recorded_revisions) == {"0001"}
            columns = await conn.run_sync(lambda sync: [c["name"] for c in inspect(sync).get_columns("contact")])
            assert "consent" not in columns and "merged_into" not in columns
            assert not await conn.run_sync(lambda sync: inspect(sync).has_table("email_message"))
        await _assert_foreign_keys_enforced(engine)
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE contact_merge"))
        await upgrade(engine)
        await _assert_rows_kept(engine, ROWS_AT_0001)
    finally:
        await engine.dispose()


async def _assert_foreign_keys_enforced(engine: AsyncEngine) -> None:
    """SQLite migrates with foreign keys off; the pooled connection must come back with them on."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1


def _utc(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite through plain SQL: the stored text
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC)


def _comparable(value: Any) -> Any:
    """SQLite gives the stored UTC time back without its zone; PostgreSQL with it."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value
