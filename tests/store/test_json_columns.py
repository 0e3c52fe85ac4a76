"""JSON columns take any text from the outside: lone surrogates and NUL bytes never fail a write on either store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select

from leadhub.store.db import create_engine, json_dumps, upgrade
from leadhub.store.intake import InquiryRow, write_batch
from leadhub.store.models import Inquiry


async def test_lone_surrogates_and_nul_are_stored(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        hostile = json.loads(
            '{"a": "x\\ud800y", "b": "nul\\u0000here", "\\udfff": ["\\ud83d"], "ok": "Привет 😀",'
            ' "n": [NaN, 1e999, -Infinity, 1.5]}'
        )
        row = InquiryRow(
            id="i" * 26,
            key="test:json",
            channel="form",
            connector="f",
            received_at=datetime.now(UTC),
            content_type="application/json",
            payload=b"{}",
            meta={"m": "\ud800"},
            fields=hostile,
            name="Ivan",
        )
        async with engine.begin() as conn:
            await write_batch(conn, [row], datetime.now(UTC))
        async with engine.connect() as conn:
            stored = (await conn.execute(select(Inquiry.fields, Inquiry.meta))).one()
    finally:
        await engine.dispose()
    assert stored.fields == {
        "a": "x?y",
        "b": "nul\x00here",
        "?": ["?"],
        "ok": "Привет 😀",
        "n": [None, None, None, 1.5],
    }
    assert stored.meta == {"m": "?"}


def test_json_dumps_is_valid_utf8_json() -> None:
    text = json_dumps({"k": "\udc80", "emoji": "😀"})
    assert json.loads(text) == {"k": "?", "emoji": "😀"}
    text.encode("utf-8")  # no surrogates left
