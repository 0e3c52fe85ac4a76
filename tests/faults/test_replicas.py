"""Two `leadhub run` replicas on one NATS and one database: work shared, nothing twice, a killed one loses nothing."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import nats
import pytest

from leadhub.hub.embedded_nats import EmbeddedNats
from tests.faults.settled import wait_settled
from tests.helpers import wait_for

pytestmark = pytest.mark.slow
FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def _stored(session: aiohttp.ClientSession, base_url: str) -> float:
    async with session.get(base_url + "/metrics") as response:
        text = await response.text()
    match = re.search(r'^leadhub_pipeline_processed_total\{outcome="stored"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_two_replicas_share_work_and_survive_a_kill(  # type: ignore[no-untyped-def]
    make_daemon, external_nats: EmbeddedNats, database_url: str
) -> None:
    config = {"connectors": [FORM], "pipeline_batch_size": 20}
    replicas = [make_daemon(config, env={"LEADHUB_NATS_URL": external_nats.url}) for _ in range(2)]
    for replica in replicas:
        await replica.start()
    accepted: dict[int, str] = {}
    killed = False
    async with aiohttp.ClientSession() as session:

        async def post(i: int, replica_index: int) -> None:
            body = {"name": f"R {i}", "email": f"r{i}@example.com"}
            url = replicas[replica_index].base_url + "/hooks/site-form"
            async with session.post(url, json=body, headers={"Idempotency-Key": f"r-{i}"}) as response:
                assert response.status == 202, await response.text()
                accepted[i] = (await response.json())["id"]

        async def post_until_accepted(i: int) -> None:
            """To replica i % 2 while both run; a post the kill cut off goes again to the survivor (same key)."""
            if not killed and i % 2 == 0:
                try:
                    return await post(i, 0)
                except aiohttp.ClientError:
                    pass
            await post(i, 1)

        for start in range(0, 300, 30):
            await asyncio.gather(*(post(i, i % 2) for i in range(start, start + 30)))

        async def first_half_stored() -> list[float] | None:
            counts = [await _stored(session, r.base_url) for r in replicas]
            return counts if sum(counts) >= len(accepted) else None

        # The pipelines lag the posts: a count taken at once may catch one replica mid-batch.
        both_worked = await wait_for(first_half_stored, timeout=30, what="the first 300 items stored")

        async def kill_while_busy() -> None:
            """SIGKILL replica 0 once it stores the second wave: mid-stream, with fetched envelopes in hand."""
            nonlocal killed

            async def storing_again() -> bool:
                return await _stored(session, replicas[0].base_url) > both_worked[0]

            await wait_for(storing_again, timeout=30, what="replica 0 storing the second wave")
            replicas[0].kill()
            killed = True

        async def second_wave() -> None:
            for start in range(300, 600, 30):
                await asyncio.gather(*(post_until_accepted(i) for i in range(start, start + 30)))

        await asyncio.gather(kill_while_busy(), second_wave())
        survivor = replicas[1].base_url

        async def all_inquiries() -> list[dict] | None:
            async with session.get(survivor + "/api/inquiries", params={"limit": 1000}) as response:
                items = (await response.json())["items"]
            return items if len(items) >= len(accepted) else None

        items = await wait_for(all_inquiries, timeout=40, what="every accepted item after the kill")
        async with session.get(survivor + "/api/leads", params={"limit": 1000}) as response:
            leads = (await response.json())["items"]
    assert sorted(i["id"] for i in items) == sorted(accepted.values()), "each accepted item is exactly one inquiry"
    assert len(leads) == len(accepted) and len({lead["id"] for lead in leads}) == len(accepted)
    assert all(count > 0 for count in both_worked), f"both replicas should have stored some: {both_worked}"

    connection = await nats.connect(external_nats.url)
    try:
        jetstream = connection.jetstream()

        async def lead_events() -> bool:
            info = await jetstream.stream_info("EVENTS", subjects_filter="events.lead.created")
            return (info.state.subjects or {}).get("events.lead.created", 0) >= len(accepted)

        await wait_for(lead_events, timeout=30, what="every lead.created event relayed")
        info = await jetstream.stream_info("EVENTS", subjects_filter="events.lead.created")
        assert info.state.subjects["events.lead.created"] == len(accepted), "each event exactly once"
    finally:
        await connection.close()
    # The killed replica's fetched envelopes, redelivered to the survivor, leave nothing stuck or dead.
    await wait_settled(external_nats.url, database_url, leads=len(accepted))
    assert await replicas[1].terminate() == 0
