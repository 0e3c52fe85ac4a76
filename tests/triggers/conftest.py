"""Fixtures for the rule engine: a hub with a manual clock and a rules directory, a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from sqlalchemy import insert, select

from leadhub.hub.config import config_from_dict
from leadhub.hub.daemon import Hub
from leadhub.ids import new_id
from leadhub.store.db import create_engine, upgrade
from leadhub.store.models import Contact, Lead, Order, OutboxEvent, ScheduledAction
from leadhub.triggers.clock import ManualClock
from tests.conftest import RunningHub
from tests.helpers import REPO, free_port, wait_for

EXAMPLES = REPO / "examples" / "rules"
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class Inbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"


@dataclass
class SmtpServer:
    """A real SMTP server on a loopback port that can be stopped and started again on the same port."""

    port: int
    inbox: Inbox = field(default_factory=Inbox)
    controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?from=shop@example.com"

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Any]:
    """The test's database at this release's schema."""
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def smtp_server() -> Any:
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    return directory


def use_example(rules_dir: Path, name: str) -> None:
    shutil.copy(EXAMPLES / name, rules_dir / name)


TriggerHubFactory = Callable[..., Awaitable[RunningHub]]


@pytest.fixture
async def trigger_hub(
    tmp_path: Path, database_url: str, clock: ManualClock, rules_dir: Path
) -> AsyncIterator[TriggerHubFactory]:
    """Start hubs (same data dir and database each time, so a second one is a restart) with the manual clock."""
    running: list[RunningHub] = []

    async def make(**settings: Any) -> RunningHub:
        raw = {
            "data_dir": str(tmp_path / "data"),
            "database_url": database_url,
            "http_port": 0,
            "rules_dir": str(rules_dir),
            "public_url": "https://shop.example",
            **settings,
        }
        handle = await started_hub(raw, clock)
        hub = handle.hub
        running.append(handle)

        async def started() -> bool:
            return hub.triggers is not None

        await wait_for(started, timeout=20, what="the rule engine to start")
        return handle

    yield make
    for handle in reversed(running):
        await handle.session.close()
        await handle.hub.stop()


async def started_hub(raw: dict[str, Any], clock: ManualClock) -> RunningHub:
    """A hub started in this process on the settings `raw` with the manual clock, and a client session for it."""
    hub = Hub(config_from_dict(raw, env={}), clock=clock)
    await hub.start()
    return RunningHub(hub, aiohttp.ClientSession(), f"http://127.0.0.1:{hub.port}")


async def stop_hub(handle: RunningHub) -> None:
    await handle.session.close()
    await handle.hub.stop()


@dataclass
class Shop:
    """Rows a shop order leaves in the store, written directly, plus the events the pipeline would emit."""

    engine: Any
    clock: ManualClock

    async def customer(self, email: str = "ivan@example.com", name: str = "Ivan") -> tuple[str, str]:
        now = self.clock.now()
        contact_id, lead_id = new_id(), new_id()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(Contact.__table__).values(
                    id=contact_id, name=name, email=email, phone=None, company=None, created_at=now, updated_at=now
                )
            )
            await conn.execute(
                insert(Lead.__table__).values(
                    id=lead_id,
                    contact_id=contact_id,
                    status="new",
                    owner="anna",
                    tags=[],
                    channel="shop",
                    connector="shop",
                    title=None,
                    message=None,
                    attribution={},
                    created_at=now,
                    updated_at=now,
                )
            )
        return contact_id, lead_id

    async def order(self, contact_id: str, lead_id: str, number: str, status: str = "completed") -> str:
        now = self.clock.now()
        order_id = new_id()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(Order.__table__).values(
                    id=order_id,
                    connector="shop",
                    external_id=number,
                    number=number,
                    status=status,
                    provider_status=status,
                    total="10.00",
                    currency="EUR",
                    items=[],
                    customer={},
                    contact_id=contact_id,
                    lead_id=lead_id,
                    placed_at=now,
                    provider_updated_at=now,
                    status_changed_at=now,
                    paid_at=now,
                    fulfilled_at=now,
                    completed_at=now if status == "completed" else None,
                    cancelled_at=None,
                    refunded_at=None,
                    created_at=now,
                    updated_at=now,
                )
            )
        return order_id

    async def set_status(self, order_id: str, status: str) -> None:
        from sqlalchemy import update

        async with self.engine.begin() as conn:
            await conn.execute(update(Order.__table__).where(Order.__table__.c.id == order_id).values(status=status))

    async def emit(self, kind: str, subject_id: str, **data: Any) -> str:
        """An event in the outbox, exactly as the pipeline writes one; the relay publishes it to EVENTS."""
        event_id = new_id()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(OutboxEvent.__table__).values(
                    id=event_id,
                    type=kind,
                    subject_id=subject_id,
                    data=data,
                    created_at=self.clock.now(),
                    published_at=None,
                )
            )
        return event_id

    async def actions(self, **where: Any) -> list[Any]:
        table = ScheduledAction.__table__
        query = select(table).order_by(table.c.created_at, table.c.key)
        for name, value in where.items():
            query = query.where(table.c[name] == value)
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())


class FakeServer:
    """A local HTTP server answering from a list of canned responses and recording each request."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        status, payload = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(payload, bytes):  # an answer as it is, not JSON
            return web.Response(body=payload, status=status, content_type="text/html")
        return web.json_response(payload, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    servers: list[FakeServer] = []

    async def make(answers: list[tuple[int, Any]]) -> FakeServer:
        server = FakeServer(answers)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        assert server.runner is not None
        await server.runner.cleanup()
