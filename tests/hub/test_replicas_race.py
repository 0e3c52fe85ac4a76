"""Two daemon replicas on one database get a form about the same new person at the same moment: the replica whose
transaction loses the race stores its envelope on its consumer's one-by-one retry; nothing is dead-lettered, and
the person is one contact with one lead."""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import func, select

from leadhub.store.models import Contact, DeadLetter, Inquiry, Lead
from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for
from tests.store.races import meet_on_first_try

FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def _count(hub: RunningHub, model: type) -> int:
    async with hub.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(model))).scalar_one())


async def test_two_replicas_storing_one_new_person_at_once_keep_both_inquiries_and_one_contact(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    replicas = [await make_hub([FORM]), await make_hub([FORM])]  # one database, each with its own queue
    meet_on_first_try(monkeypatch, replicas[0].engine.dialect.name, parties=2)
    bodies = [
        {"name": "Ivan", "email": "Ivan.Race@X.example", "phone": "8 (916) 777-00-11"},
        {"name": "Ivan", "email": "ivan.race@x.example", "phone": "+7 916 777 00 11"},
    ]

    async def post(hub: RunningHub, body: dict[str, str]) -> None:
        async with await hub.post("/hooks/site-form", json=body) as response:
            assert response.status == 202, await response.text()

    await asyncio.gather(*(post(hub, body) for hub, body in zip(replicas, bodies, strict=True)))

    async def both_stored() -> bool:
        assert await _count(replicas[0], DeadLetter) == 0, "a good envelope was dead-lettered"
        return await _count(replicas[0], Inquiry) == 2

    await wait_for(both_stored, timeout=20, what="both inquiries stored")
    assert await _count(replicas[0], Contact) == 1
    assert await _count(replicas[0], Lead) == 1
    assert await _count(replicas[0], DeadLetter) == 0
    # They really raced: on PostgreSQL one replica's batch lost on the unique identifier (a conflict) and was
    # retried at once; on SQLite the write lock made the second wait for the first instead.
    lost = sum([await _lost_races(hub) for hub in replicas])
    assert lost == (1 if replicas[0].engine.dialect.name == "postgresql" else 0)


async def _lost_races(hub: RunningHub) -> float:
    async with hub.session.get(hub.url("/metrics")) as response:
        text = await response.text()
    match = re.search(r'^leadhub_store_errors_total\{kind="conflict",operation="pipeline"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
