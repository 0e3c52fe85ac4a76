"""SIGKILL at random moments during a burst of 5,000 webhooks and 500 emails: every item ends stored exactly once.

Webhook clients behave like providers: a post that got no 2xx is sent again with the same Idempotency-Key once
the daemon is back. E-mail sits in a real Dovecot; the IMAP checkpoint only moves after the queue has the mail.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from leadhub.store.db import create_engine
from leadhub.store.models import Inquiry, Lead
from tests.faults.settled import embedded_nats_url, wait_settled
from tests.helpers import wait_for
from tests.imap_server import make_mail, running_dovecot

pytestmark = pytest.mark.slow
FORM = {"name": "site-form", "type": "form", "rate_limit": None}
WEBHOOKS, EMAILS, KILLS = 5000, 500, 2
RESENT = 100  # accepted posts a provider sends again after the burst (it did not see the 202)


async def _counts(engine: Any) -> dict[str, int]:
    async with engine.connect() as conn:
        by_channel = dict((await conn.execute(select(Inquiry.channel, func.count()).group_by(Inquiry.channel))).all())
        unique_keys = (await conn.execute(select(func.count(func.distinct(Inquiry.key))))).scalar_one()
        leads = (await conn.execute(select(func.count()).select_from(Lead))).scalar_one()
    return {
        "form": by_channel.get("form", 0),
        "email": by_channel.get("email", 0),
        "unique_keys": unique_keys,
        "leads": leads,
    }


# The split layout: webhooks in the primary, the pipeline in a worker (which reads ahead on PostgreSQL) that the
# kernel sends SIGTERM when the primary is killed.
SPLIT = {"workers": 2, "roles": "http,triggers", "worker_roles": "pipeline,relay"}
# Roles per worker, the layout the README recommends for throughput on two cores: webhooks in the primary and
# worker 1 (the kill takes one of two ports' owners), the pipeline in workers 2 and 3, which share the durable
# consumer and relay the outbox in two shares.
PER_WORKER = {"workers": 4, "roles": "http,triggers", "worker_roles": "http;pipeline,relay;pipeline,relay"}
# A duplicate window shorter than a restart: a post resent after a kill (or after the burst) is a new message to
# JetStream, so the pipeline meets keys it has already stored (the path a lost ack takes) and must absorb them.
SHORT_DEDUPE = {"stream_duplicate_window": "1s"}


LAYOUTS = {"default": {}, "split": SPLIT, "per-worker": PER_WORKER, "short-dedupe-window": SHORT_DEDUPE}
CASES = [(11, "default"), (23, "default"), (37, "split"), (41, "per-worker"), (53, "short-dedupe-window")]
# A soak: LEADHUB_FAULT_SEEDS=101,102,... adds those seeds, each with the next layout in turn (not run by CI).
CASES += [
    (int(seed), list(LAYOUTS)[n % len(LAYOUTS)])
    for n, seed in enumerate(filter(None, os.environ.get("LEADHUB_FAULT_SEEDS", "").split(",")))
]


# A second seed of a layout adds kill moments, not another store path: it is not repeated against PostgreSQL. Nor is
# the split layout: per-worker has its pipeline in workers too (reading ahead on PostgreSQL), two of them sharing the
# consumer and the outbox, which is what PostgreSQL does differently (SKIP LOCKED); CI's time is the reason.
ONCE = {"split"}
PARAMS = [
    pytest.param(
        seed,
        LAYOUTS[name],
        id=f"{seed}-{name}",
        marks=[pytest.mark.store_independent] if name in ONCE or name in [earlier for _, earlier in CASES[:n]] else [],
    )
    for n, (seed, name) in enumerate(CASES)
]


@pytest.mark.parametrize(("seed", "layout"), PARAMS)
async def test_sigkill_at_random_moments_during_a_burst(  # type: ignore[no-untyped-def]
    make_daemon, database_url: str, seed: int, layout: dict[str, Any]
) -> None:
    rng = random.Random(seed)
    kill_points = sorted(rng.sample(range(300, WEBHOOKS - 300), KILLS))
    with running_dovecot() as dovecot:
        daemon = make_daemon({"connectors": [FORM, dovecot.connector(poll_interval="2s")], **layout})
        await daemon.start()
        if "workers" in layout:  # the pipeline runs in a worker, not beside the webhooks
            await wait_for(_workers_serving(daemon.base_url, layout["workers"] - 1), timeout=40, what="every worker")
        appending = asyncio.create_task(asyncio.to_thread(dovecot.append, [make_mail(n) for n in range(EMAILS)]))
        accepted: dict[int, str] = {}
        answers: dict[int | str, int] = {}  # a status or an error's name: how often, for a failure's message
        up = asyncio.Event()
        up.set()
        next_item = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

            async def poster() -> None:
                nonlocal next_item
                while next_item < WEBHOOKS:
                    i = next_item
                    next_item += 1
                    while i not in accepted:
                        await up.wait()
                        try:
                            async with session.post(
                                daemon.base_url + "/hooks/site-form",
                                json={"name": f"K {i}", "email": f"k{i}-{seed}@example.com"},
                                headers={"Idempotency-Key": f"burst-{i}"},
                            ) as response:
                                answers[response.status] = answers.get(response.status, 0) + 1
                                if response.status == 202:
                                    accepted[i] = (await response.json())["id"]
                                else:
                                    assert response.status == 503, await response.text()
                        except (aiohttp.ClientError, TimeoutError) as exc:
                            answers[type(exc).__name__] = answers.get(type(exc).__name__, 0) + 1
                            await up.wait()  # the daemon is being killed; send again once it is back

            async def killer() -> None:
                for point in kill_points:
                    try:
                        await wait_for(_reached(accepted, point), timeout=60, what=f"{point} accepted posts")
                    except pytest.fail.Exception as exc:  # what the posters saw and what the daemon logged
                        pytest.fail(f"{exc}; {len(accepted)} accepted; answers {answers}\n{daemon.log()}")
                    up.clear()
                    daemon.kill()
                    await daemon.start()
                    up.set()

            await asyncio.gather(killer(), *(poster() for _ in range(32)))
            # Sent long before (over the duplicate window in 53): the pipeline, not JetStream, must absorb them.
            for i in sorted(rng.sample(range(WEBHOOKS // 2), RESENT)):
                async with session.post(
                    daemon.base_url + "/hooks/site-form",
                    json={"name": f"K {i}", "email": f"k{i}-{seed}@example.com"},
                    headers={"Idempotency-Key": f"burst-{i}"},
                ) as response:
                    assert response.status == 202, await response.text()
                    assert (await response.json())["id"] == accepted[i], "a resent post names the stored inquiry"
        await appending
        engine = create_engine(database_url)
        try:

            async def everything_stored() -> dict[str, int] | None:
                counts = await _counts(engine)
                assert counts["form"] <= WEBHOOKS and counts["email"] <= EMAILS, counts
                return counts if (counts["form"], counts["email"]) == (WEBHOOKS, EMAILS) else None

            counts = await wait_for(everything_stored, timeout=90, what="every webhook and email stored")
            nats_url = embedded_nats_url(Path(daemon.env["LEADHUB_DATA_DIR"]))
            await wait_settled(nats_url, database_url, leads=WEBHOOKS + EMAILS, events_once=layout != SHORT_DEDUPE)
            async with engine.connect() as conn:
                stored_ids = set((await conn.execute(select(Inquiry.id).where(Inquiry.channel == "form"))).scalars())
        finally:
            await engine.dispose()
    assert counts["unique_keys"] == WEBHOOKS + EMAILS and counts["leads"] == WEBHOOKS + EMAILS, counts
    assert stored_ids == set(accepted.values()), "every 202 answer names a stored inquiry, and nothing else is stored"
    assert await daemon.terminate() == 0


def _workers_serving(base_url: str, count: int):  # type: ignore[no-untyped-def]
    async def probe() -> bool:
        async with aiohttp.ClientSession() as session, session.get(base_url + "/readyz") as response:
            workers = (await response.json()).get("detail", {}).get("workers")
        return workers == {"ok": True, "serving": count, "expected": count, "error": None}

    return probe


def _reached(accepted: dict[int, str], point: int):  # type: ignore[no-untyped-def]
    async def probe() -> bool:
        return len(accepted) >= point

    return probe
