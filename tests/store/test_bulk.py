"""The driver-level bulk insert stores exactly what SQLAlchemy's own insert stores, on either store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import String, cast, select

from leadhub.store import bulk
from leadhub.store.db import create_engine, upgrade
from leadhub.store.models import Contact, ContactIdentifier, Lead

contact_t = Contact.__table__


def _contacts(prefix: str, now: datetime) -> list[dict[str, Any]]:
    other_zone = datetime(2026, 1, 1, 3, tzinfo=timezone(timedelta(hours=3)))  # equal to 00:00 UTC, written apart
    return [
        {
            "id": f"{prefix}{i:025d}",
            "name": "Иван" if i else None,
            "email": None,
            "phone": "+79161234567",
            "company": None,
            "consent": None,
            "merged_into": None,
            "review": None if i % 2 else {"a": [1, "x\ud800y"], "n": float("nan")},
            "created_at": now,
            "updated_at": other_zone if i == 2 else now + timedelta(microseconds=i),
        }
        for i in range(4)
    ]


async def test_bulk_insert_stores_what_sqlalchemy_stores(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    copied: list[int] = []  # on PostgreSQL the batch goes in by COPY; the comparison below covers that path
    copy = bulk._copy

    async def counted_copy(*args: Any) -> None:
        copied.append(len(args[3]))
        await copy(*args)

    monkeypatch.setattr(bulk, "_copy", counted_copy)
    engine = create_engine(database_url)
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(contact_t.insert(), _contacts("a", now))
            monkeypatch.setattr(bulk, "COPY_FROM", 2)  # four rows are a batch here
            await bulk.insert_rows(conn, contact_t, _contacts("b", now))
        columns = [cast(c, String) if c.key == "review" else c for c in contact_t.c]
        async with engine.connect() as conn:
            rows = (await conn.execute(select(*columns).order_by(contact_t.c.id))).all()
    finally:
        await engine.dispose()
    assert copied == ([4] if engine.dialect.name == "postgresql" else [])
    old, new = rows[:4], rows[4:]
    assert [r[1:] for r in new] == [r[1:] for r in old]
    assert old[1].review == "null"  # JSON None is the JSON text null through both paths, as before


async def test_rows_of_other_shapes_and_defaults_fall_back(database_url: str) -> None:
    """A row leaving out a column with a Python default goes through SQLAlchemy, which fills it."""
    engine = create_engine(database_url)
    now = datetime.now(UTC)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await bulk.insert_rows(conn, contact_t, _contacts("c", now)[:1])
            lead = {
                "id": "l" * 26,
                "contact_id": "c" + "0" * 25,
                "channel": "form",
                "connector": "f",
                "created_at": now,
                "updated_at": now,
            }  # no status, tags, attribution: their defaults apply
            await bulk.insert_rows(conn, Lead.__table__, [lead])
            idents = [
                {"kind": "email", "value": "a@example.com", "contact_id": "c" + "0" * 25, "created_at": now},
                {"kind": "phone", "value": "+79161234567", "contact_id": "c" + "0" * 25, "created_at": now},
            ]
            await bulk.insert_rows(conn, ContactIdentifier.__table__, idents)
        async with engine.connect() as conn:
            status, tags = (await conn.execute(select(Lead.status, Lead.tags))).one()
            count = len((await conn.execute(select(ContactIdentifier.value))).all())
    finally:
        await engine.dispose()
    assert (status, tags, count) == ("new", [], 2)


def test_a_converter_gives_values_in_bind_order_through_the_processors() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    calls: list[object] = []

    def stamp(value: object) -> str:
        calls.append(value)
        return f"t:{value:%H}"

    convert = bulk._converter(("b", "a", "t"), (None, str.upper, stamp), (False, False, True))
    rows = [{"a": "x", "b": 1, "t": when}, {"t": when, "a": "y", "b": 2}, {"a": "z", "b": 3, "t": None}]
    assert [convert(r) for r in rows] == [(1, "X", "t:00"), (2, "Y", "t:00"), (3, "Z", None)]
    assert calls == [when]  # one datetime object, converted once; None is left to the driver
    assert bulk._converter(("a",), (None,), (False,))({"a": 5, "b": 6}) == (5,)  # one column: still a tuple
    assert bulk._converter(("a", "b"), (None, None), (False, False))({"b": 2, "a": 1}) == (1, 2)
