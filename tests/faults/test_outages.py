"""Outages of the queue and the store: never a 2xx for something not stored, and recovery without a restart."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from sqlalchemy.engine import make_url

from leadhub.hub.embedded_nats import EmbeddedNats
from tests.conftest import HubFactory, RunningHub
from tests.helpers import DEADLINE_SCALE, wait_for
from tests.tcp_proxy import TcpProxy

FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def test_queue_down_answers_503_then_recovers_without_restart(
    make_hub: HubFactory, external_nats: EmbeddedNats
) -> None:
    hub = await make_hub([FORM], nats_url=external_nats.url)
    accepted = []
    async with await hub.post("/hooks/site-form", json={"name": "before"}) as response:
        assert response.status == 202
        accepted.append((await response.json())["id"])

    await external_nats.stop()
    for i in range(5):
        async with await hub.post("/hooks/site-form", json={"name": f"during {i}"}) as response:
            assert response.status == 503, await response.text()
            assert (await response.json())["error"] == "queue_unavailable"
    async with hub.session.get(hub.url("/readyz")) as response:
        assert response.status == 503
        assert (await response.json())["queue"] is False

    await external_nats.start()  # same port, same store: streams and the durable consumer survive

    await wait_for(_accepted(hub, accepted), timeout=20, what="posts to be accepted after NATS returns")
    items = await hub.wait_items("/api/inquiries", len(accepted), timeout=20)
    assert sorted(i["id"] for i in items) == sorted(accepted)
    assert {i["name"] for i in items} == {"Before", "After"}


async def test_nats_back_without_its_store_gets_its_streams_again_without_restart(
    make_hub: HubFactory, external_nats: EmbeddedNats
) -> None:
    """A NATS that comes back empty (a container without a volume, a recreated cluster) has no streams: the
    webhook process and the pipeline process declare them again, and neither says ready while it cannot work."""
    webhooks = await make_hub([FORM], nats_url=external_nats.url, roles="http")
    pipeline = await make_hub([FORM], nats_url=external_nats.url, roles="pipeline,relay")
    async with await webhooks.post("/hooks/site-form", json={"name": "before"}) as response:
        assert response.status == 202
    await webhooks.wait_items("/api/inquiries", 1)

    await external_nats.stop()
    shutil.rmtree(external_nats.root / "jetstream")
    async with await webhooks.post("/hooks/site-form", json={"name": "during"}) as response:
        assert response.status == 503
        assert (await response.json())["error"] == "queue_unavailable"
    await wait_for(_pipeline_not_ok(pipeline), timeout=20, what="the pipeline to say it cannot fetch")
    for hub in (webhooks, pipeline):
        async with hub.session.get(hub.url("/readyz")) as response:
            assert response.status == 503

    await external_nats.start()  # same port, an empty store
    accepted: list[str] = []
    await wait_for(
        _accepted(webhooks, accepted), timeout=20, what="a post accepted after NATS returns without its store"
    )
    items = await webhooks.wait_items("/api/inquiries", 2, timeout=20)
    assert accepted[0] in {i["id"] for i in items}
    for hub in (webhooks, pipeline):
        await wait_for(_ready(hub), timeout=10, what=f"/readyz 200 on {hub.hub.roles}")


async def test_streams_deleted_under_a_running_hub_are_declared_again(
    make_hub: HubFactory, external_nats: EmbeddedNats
) -> None:
    """No reconnect tells the hub here: the publish that finds no stream, and the pipeline's subscribe, do."""
    hub = await make_hub([FORM], nats_url=external_nats.url)
    client = await nats.connect(external_nats.url)
    try:
        for stream in ("INBOUND", "EVENTS", "DEAD"):
            await client.jetstream().delete_stream(stream)
    finally:
        await client.close()
    accepted: list[str] = []
    await wait_for(_accepted(hub, accepted), timeout=20, what="a post accepted after the streams were deleted")
    [item] = await hub.wait_items("/api/inquiries", 1, timeout=20)
    assert item["id"] == accepted[0]


def _pipeline_not_ok(hub: RunningHub) -> Callable[[], Awaitable[str | None]]:
    async def probe() -> str | None:
        async with hub.session.get(hub.url("/readyz")) as response:
            pipeline = (await response.json())["detail"]["pipeline"]
            return pipeline["error"] if response.status == 503 and pipeline["ok"] is False else None

    return probe


def _ready(hub: RunningHub) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        async with hub.session.get(hub.url("/readyz")) as response:
            return response.status == 200

    return probe


class SqliteLock:
    """Another process-like writer holding an exclusive lock on the SQLite file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.release_event = threading.Event()
        self.locked = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self.path, timeout=10 * DEADLINE_SCALE, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        self.locked.set()
        self.release_event.wait(60)
        conn.execute("ROLLBACK")
        conn.close()

    def __enter__(self) -> SqliteLock:
        self.thread.start()
        assert self.locked.wait(10 * DEADLINE_SCALE), "the SQLite write lock was not taken"  # the hub may be writing
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.release_event.set()
            self.thread.join(10)


@pytest.fixture
async def store_outage(database_url: str) -> AsyncIterator[tuple[Callable[[], object], Callable[[], object], str]]:
    """(cut, restore, url for the hub): an exclusive lock on SQLite, a cut TCP proxy for PostgreSQL.

    Requested before `make_hub`, so it is torn down after the hubs stop.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        lock = SqliteLock(url.database or "")

        async def take_the_lock() -> None:
            # In a thread: waited for on the event loop, it froze the in-process hub, which could not end the write
            # it had begun, so neither got the lock until the wait gave up (CI failures under load, 2 sessions).
            await asyncio.to_thread(lock.__enter__)

        yield take_the_lock, lambda: lock.__exit__(None, None, None), database_url
        lock.__exit__(None, None, None)
        return
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield proxy.cut, proxy.restore, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    await proxy.stop()


async def test_store_down_still_accepts_and_catches_up(store_outage: tuple, make_hub: HubFactory) -> None:
    cut, restore, hub_url = store_outage
    hub = await make_hub([FORM], database_url=hub_url)
    result = cut()
    if asyncio.iscoroutine(result):
        await result
    accepted = []
    for i in range(20):
        async with await hub.post("/hooks/site-form", json={"name": f"n{i}", "email": f"n{i}@example.com"}) as r:
            assert r.status == 202, await r.text()
            accepted.append((await r.json())["id"])

    async def pipeline_reports_the_outage() -> bool:
        return hub.hub.consumer is not None and not hub.hub.consumer.healthy

    await wait_for(pipeline_reports_the_outage, timeout=20, what="the pipeline to report the store outage")
    restore()
    items = await hub.wait_items("/api/inquiries", len(accepted), timeout=30)
    assert sorted(i["id"] for i in items) == sorted(accepted)
    await hub.wait_items("/api/leads", len(accepted))
    async with hub.session.get(hub.url("/metrics")) as response:
        assert 'leadhub_store_errors_total{kind="transient",operation="pipeline"}' in await response.text()


def _accepted(hub: RunningHub, accepted: list[str]) -> Callable[[], Awaitable[bool]]:
    """A probe that posts once: True with the answered id in `accepted` on 202; 503 while the queue is away."""

    async def probe() -> bool:
        async with await hub.post("/hooks/site-form", json={"name": "after"}) as response:
            if response.status == 202:
                accepted.append((await response.json())["id"])
                return True
            assert response.status == 503
            return False

    return probe


async def test_the_api_answers_503_not_500_while_the_store_is_away(store_outage: tuple, make_hub: HubFactory) -> None:
    """PostgreSQL unreachable: asyncpg's connect raises ConnectionRefusedError (an OSError SQLAlchemy does not wrap),
    which the API let through as `500 internal` instead of `503 store_unavailable` (retry later)."""
    cut, restore, hub_url = store_outage
    hub = await make_hub([FORM], database_url=hub_url)
    async with await hub.post("/hooks/site-form", json={"name": "n", "email": "n@example.com"}) as r:
        assert r.status == 202, await r.text()
    [lead] = await hub.wait_items("/api/leads", 1)
    result = cut()
    if asyncio.iscoroutine(result):
        await result
    requests = [
        ("GET", "/api/leads", None),
        ("GET", f"/api/leads/{lead['id']}", None),
        ("GET", "/api/contacts", None),
        ("GET", "/api/inquiries", None),
        ("GET", "/api/tasks", None),
        ("GET", "/api/dead-letters", None),
        ("PATCH", f"/api/leads/{lead['id']}", {"status": "won"}),
    ]
    for method, path, body in requests:
        async with hub.session.request(method, hub.url(path), json=body) as response:
            answer = await response.json()
            # SQLite's readers are not stopped by a writer's lock (WAL); a write waits for it, then is refused
            assert response.status in (200, 503), (method, path, response.status, answer)
            if response.status == 503:
                assert answer["error"] == "store_unavailable", answer
    restore()
    assert (await hub.api(f"/api/leads/{lead['id']}"))["id"] == lead["id"]
