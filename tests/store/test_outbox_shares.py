"""Outbox shares: with worker processes each relays its share; together they claim every event exactly once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.ids import id_for_key, new_id
from leadhub.store.models import OutboxEvent
from leadhub.store.outbox import MAX_SHARES, claim_unpublished, outbox_event


@pytest.mark.parametrize("shares", [2, 3, MAX_SHARES])
async def test_shares_split_the_outbox_by_subject_and_miss_nothing(engine: AsyncEngine, shares: int) -> None:
    now = datetime.now(UTC)
    subjects = [new_id() for _ in range(40)] + [id_for_key(f"form:site:{i}") for i in range(20)]
    subjects += [None, "short-id"]  # no subject, and an id of another shape: share 0 takes them
    rows = [outbox_event("lead.updated", subject, now, n=n) for subject in subjects for n in range(3)]
    async with engine.begin() as conn:
        await conn.execute(insert(OutboxEvent.__table__), rows)
        claimed = {k: await claim_unpublished(conn, 1000, (k, shares)) for k in range(shares)}

    ids = [row.id for k in claimed for row in claimed[k]]
    assert sorted(ids) == sorted(row["id"] for row in rows), "every event in exactly one share"
    share_of = {row.subject_id: k for k in claimed for row in claimed[k]}
    for k, share_rows in claimed.items():
        assert all(share_of[row.subject_id] == k for row in share_rows), "a subject's events all in one share"
        assert [row.id for row in share_rows] == sorted(row.id for row in share_rows), "oldest first"
    assert share_of[None] == 0 and share_of["short-id"] == 0
    busy = [k for k in claimed if claimed[k]]
    assert len(busy) >= min(shares, 20), f"the events spread over the shares: {busy}"
