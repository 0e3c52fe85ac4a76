"""Fixtures over real components: embedded NATS, SQLite or PostgreSQL, the in-process hub, the daemon."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from leadhub.hub.config import config_from_dict
from leadhub.hub.daemon import Hub
from leadhub.hub.embedded_nats import EmbeddedNats
from tests.helpers import free_port, wait_for
from tests.pg_databases import PgDatabases

PG_ADMIN_URL = os.environ.get("LEADHUB_TEST_DATABASE_URL")
# Fixtures that bring the test's database to the latest schema (the `engine`s of tests/store, tests/triggers and
# tests/pipelines upgrade it): their tests get a copy of the migrated template instead of migrating it again.
MIGRATED_FOR = ("make_hub", "make_daemon", "engine", "engines")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against PostgreSQL, run the tests that touch a database; the others cannot differ from the SQLite run.

    A test marked `store_independent` touches one but is not about it (signals, worker lifecycles, a second seed of
    the same layout): it runs once, on the embedded default. The PostgreSQL suite is the long pole of CI."""
    if not PG_ADMIN_URL:
        return
    uses_db = [
        "database_url" in getattr(item, "fixturenames", ()) and item.get_closest_marker("store_independent") is None
        for item in items
    ]
    selected = [item for item, db in zip(items, uses_db, strict=True) if db]
    deselected = [item for item, db in zip(items, uses_db, strict=True) if not db]
    if deselected and selected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture(autouse=True)
def _clean_leadhub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's LEADHUB_* variables must not leak into tests (the test database URL aside)."""
    for name in list(os.environ):
        if name.startswith("LEADHUB_") and name != "LEADHUB_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


def _in_a_thread(function: Callable[[], Any]) -> Any:
    """Run blocking set-up that starts its own event loop, whatever loop the calling fixture is under."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function).result()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases | None]:
    """This test process's PostgreSQL databases (None on the embedded default); all dropped at its end."""
    if not PG_ADMIN_URL:
        yield None
        return
    databases = PgDatabases(PG_ADMIN_URL)
    yield databases
    _in_a_thread(lambda: asyncio.run(databases.drop_all()))


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory, pg_databases: PgDatabases | None) -> str:
    """A database at the latest schema, made once per test process and copied for each hub or daemon test.

    Migrating every test's empty database cost a `leadhub run` start ~2 s of CPU (a child importing alembic) and an
    in-process hub 0.2 s; the migrations themselves are tested on empty databases (tests/store/test_migrations.py,
    the `empty_database` marker). On PostgreSQL a copy a test left with this schema is emptied and reused
    (tests/pg_databases.py)."""
    from leadhub.store.db import run_upgrade

    if pg_databases is not None:
        name = _in_a_thread(lambda: asyncio.run(pg_databases.create()))
        try:
            _in_a_thread(lambda: run_upgrade(pg_databases.url(name)))  # its engine disposed: no connection is left
            _in_a_thread(lambda: asyncio.run(pg_databases.use_as_template(name)))
        except BaseException:  # not yet the template drop_all drops: dropped here
            _in_a_thread(lambda: asyncio.run(pg_databases.drop(name)))
            raise
        return name
    path = tmp_path_factory.mktemp("template") / "leadhub.db"
    _in_a_thread(lambda: run_upgrade(f"sqlite+aiosqlite:///{path}"))
    return str(path)


@pytest.fixture
async def database_url(
    tmp_path: Path, request: pytest.FixtureRequest, pg_databases: PgDatabases | None
) -> AsyncIterator[str]:
    """A fresh database: PostgreSQL when LEADHUB_TEST_DATABASE_URL is set, else SQLite.

    Empty, unless the test starts a hub or a daemon on it or takes an `engine` (and is not marked `empty_database`):
    then it is already at the latest schema, as a running leadhub's database is after its first start."""
    migrated = (
        any(name in request.fixturenames for name in MIGRATED_FOR)
        and request.node.get_closest_marker("empty_database") is None
    )
    template = request.getfixturevalue("migrated_template") if migrated else None
    if pg_databases is not None:
        name = await (pg_databases.migrated_copy() if migrated else pg_databases.create())
        try:
            yield pg_databases.url(name)
        finally:
            await pg_databases.give_back(name, migrated=migrated)
    else:
        path = tmp_path / "leadhub.db"
        if template is not None:
            shutil.copy2(template, path)  # its mode too: the store makes its file private
        yield f"sqlite+aiosqlite:///{path}"


@dataclass
class RunningHub:
    """An in-process hub serving HTTP on a free loopback port, with a client session."""

    hub: Hub
    session: aiohttp.ClientSession
    base_url: str
    api_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def engine(self) -> Any:
        return self.hub.engine

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.session.post(self.url(path), **kwargs)

    async def api(self, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}
        async with self.session.get(self.url(path), params=params, headers=headers) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def wait_items(self, path: str, count: int, timeout: float = 15.0, **params: Any) -> list[dict[str, Any]]:
        """Wait until the list at `path` has exactly `count` items (fails if it overshoots)."""
        assert count > 0, "an empty list is there at once: waiting for 0 items would prove nothing"

        async def probe() -> list[dict[str, Any]] | None:
            items = (await self.api(path, limit=1000, **params))["items"]
            assert len(items) <= count, f"{path} has {len(items)} items, expected {count}"
            return items if len(items) == count else None

        return await wait_for(probe, timeout=timeout, what=f"{count} items at {path}")


HubFactory = Callable[..., Awaitable[RunningHub]]


@pytest.fixture
async def make_hub(tmp_path: Path, database_url: str) -> AsyncIterator[HubFactory]:
    """Start hubs with the given connectors and settings; all are stopped at the end of the test."""
    running: list[RunningHub] = []

    async def make(connectors: list[dict[str, Any]] | None = None, **settings: Any) -> RunningHub:
        raw = {
            "data_dir": str(tmp_path / f"data{len(running)}"),
            "database_url": database_url,
            "http_port": 0,
            "default_region": "RU",
            "connectors": connectors or [],
            **settings,
        }
        hub = Hub(config_from_dict(raw, env={}))
        await hub.start()
        session = aiohttp.ClientSession()
        handle = RunningHub(hub, session, f"http://127.0.0.1:{hub.port}", settings.get("api_token"))
        running.append(handle)
        await wait_for(_store_side_started(hub), timeout=20, what="the store to be migrated and the pipeline started")
        return handle

    yield make
    for handle in reversed(running):
        await handle.session.close()
        await handle.hub.stop()


def _store_side_started(hub: Hub) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return hub.store_ready and ("pipeline" not in hub.roles or hub.consumer is not None)

    return probe


@pytest.fixture
async def form_hub(make_hub: HubFactory) -> RunningHub:
    """A hub with one open form connector `site-form` (no token, no rate limit)."""
    return await make_hub([{"name": "site-form", "type": "form", "rate_limit": None}])


@dataclass
class Daemon:
    """`leadhub run` as a real subprocess, for signals, kills and restarts."""

    config_file: Path
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, wait_ready: bool = True, extra_env: dict[str, str] | None = None) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "leadhub.hub", "run", "--config", str(self.config_file)],
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        if wait_ready:
            await wait_for(self._ready, timeout=30, what=f"the daemon to be ready (log: {self.log_path})")

    async def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"daemon exited with {self.process.returncode}:\n{self.log()}")
        try:
            async with aiohttp.ClientSession() as session, session.get(self.base_url + "/readyz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def start_without_asking_readyz(self) -> None:
        """Started, its store ready as its log says: no /readyz was asked, so none of its store checks is cached.

        /readyz keeps a schema and lock check's answer for 30 s (hub/store_health.py); a test that changes the
        database after a readiness wait on /readyz would wait that long for the next check."""
        await self.start(wait_ready=False)

        async def store_ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            return "store ready" in self.log_path.read_text(errors="replace")

        await wait_for(store_ready, timeout=30, what=f"the daemon's store to be ready (log: {self.log_path})")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    async def terminate(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, timeout)


@pytest.fixture
def make_daemon(tmp_path: Path, database_url: str) -> Any:
    daemons: list[Daemon] = []

    def make(config: dict[str, Any], env: dict[str, str] | None = None) -> Daemon:
        index = len(daemons)
        config_file = tmp_path / f"leadhub{index}.yaml"
        config_file.write_text(yaml.safe_dump(config))
        port = free_port()
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("LEADHUB_")}
        base_env |= {
            "LEADHUB_DATA_DIR": str(tmp_path / f"daemon{index}"),
            "LEADHUB_DATABASE_URL": database_url,
            "LEADHUB_HTTP_PORT": str(port),
            "LEADHUB_LOG_LEVEL": "info",
        }
        daemon = Daemon(config_file, base_env | (env or {}), port, tmp_path / f"daemon{index}.log")
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=10)


@pytest.fixture
async def external_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A separate, real NATS server a hub or daemon reaches by URL: the test can read its streams, stop or share it."""
    server = EmbeddedNats(tmp_path / "external-nats", port=free_port())
    await server.start()
    yield server
    await server.stop()
