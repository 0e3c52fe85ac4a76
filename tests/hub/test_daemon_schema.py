"""`leadhub run` and a schema it does not know: a newer release's database at start, a schema changed under it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from leadhub.hub.workers import WorkerPool, WorkerSpec
from leadhub.store.db import MIGRATION_HEADS, create_engine, redacted_url, upgrade
from tests.helpers import wait_for
from tests.tcp_proxy import TcpProxy

# Schemas changed, taken away or left by a newer release: each test starts from an empty database.
pytestmark = [pytest.mark.slow, pytest.mark.empty_database]
FORM = {"name": "site-form", "type": "form", "rate_limit": None}
SCHEMA_CHECK_EVERY = 30  # seconds /readyz keeps a schema check's answer (hub/store_health.py)
NEWER_0099 = (  # the one wording (store/db.py newer_schema_message): the exit-3 line and /readyz
    f"database schema 0099 is newer than this release ({', '.join(sorted(MIGRATION_HEADS))}): a newer leadhub "
    "migrated it; run that release, or restore a backup taken before it migrated the database"
)


async def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _migrated_by_a_newer_release(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    await _execute(url, "UPDATE alembic_version SET version_num = '0099' WHERE version_num = '0006'")


async def test_run_on_a_database_from_a_newer_release_exits_3_with_one_line_and_never_serves(
    make_daemon, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    """Not even for a moment: a webhook answered 202 by a release that cannot store it would wait for a newer one."""
    await _migrated_by_a_newer_release(database_url)
    daemon = make_daemon({"connectors": [FORM]}, env={"LEADHUB_WORKERS": "2"})
    await daemon.start(wait_ready=False)
    connected = []
    while daemon.process.poll() is None:  # knock on the port for as long as the process lives
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", daemon.port), 1)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.005)  # noqa: sleep-ok — the gap between knocks on a closed port, not a wait
            continue
        connected.append(time.monotonic())
        writer.close()
    code = daemon.process.wait(30)
    log = daemon.log()
    assert code == 3, log
    assert "Traceback" not in log, log
    assert not connected, f"the port took {len(connected)} connections:\n{log}"
    for started in ("HTTP serving", "embedded NATS started", "starting worker"):
        assert started not in log, log
    assert (
        log.strip().splitlines()[-1] == f"leadhub: cannot use the database {redacted_url(database_url)}: {NEWER_0099}"
    ), log


@contextlib.asynccontextmanager
async def _database_away(url: str) -> AsyncIterator[tuple[str, Callable[[], None]]]:
    """(the URL for the daemon, bring the database back): SQLite write-locked by another connection, PostgreSQL
    behind a cut proxy (connections refused at once)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        locker = sqlite3.connect(parsed.database or "", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # not even a read gets through, as with a file another process holds

        def release() -> None:
            locker.execute("ROLLBACK")

        try:
            yield url, release
        finally:
            locker.close()
        return
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    await proxy.start()
    await proxy.cut()
    try:
        yield parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy.restore
    finally:
        await proxy.stop()


async def _inquiries(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM inquiry"))).scalar_one())
    except Exception:  # not migrated yet
        return 0
    finally:
        await engine.dispose()


async def test_run_with_the_database_away_at_start_serves_and_uses_it_once_it_answers(
    make_daemon, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    """The check for a newer release's schema before HTTP starts must not make a database that is still starting
    (or restarting) a reason to exit: the daemon takes webhooks into the queue and waits for the store, as before."""
    async with _database_away(database_url) as (daemon_url, come_back):
        daemon = make_daemon({"connectors": [FORM]}, env={"LEADHUB_DATABASE_URL": daemon_url})
        await daemon.start(wait_ready=False)
        async with aiohttp.ClientSession() as session:

            async def serving() -> bool:
                if daemon.process.poll() is not None:
                    pytest.fail(f"leadhub run exited with {daemon.process.returncode}:\n{daemon.log()}")
                try:
                    async with session.get(daemon.base_url + "/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(serving, timeout=30, what="HTTP with the database away")
            async with session.post(daemon.base_url + "/hooks/site-form", json={"email": "a@example.com"}) as response:
                assert response.status == 202, await response.text()
            status, body, _ = await _readyz(session, daemon.base_url)
            assert status == 503 and body["store"] is False, body
            come_back()

            async def ready() -> bool:
                status, _, _ = await _readyz(session, daemon.base_url)
                return status == 200

            await wait_for(ready, timeout=60, what="the daemon to use the database once it answers")

            async def stored() -> bool:
                return await _inquiries(database_url) == 1

            await wait_for(stored, timeout=30, what="the webhook taken while the database was away to be stored")
        assert await daemon.terminate() == 0, daemon.log()


async def test_a_worker_that_finds_a_newer_schema_is_not_restarted(
    tmp_path: Path, database_url: str, external_nats: Any
) -> None:
    """Exit status 3 means "this release cannot use that database": starting it again would only loop."""
    await _migrated_by_a_newer_release(database_url)
    spec = WorkerSpec(
        nats_url=external_nats.url,
        http_port=0,
        database_url=database_url,
        roles=(("pipeline",),),
        config_file=None,
    )
    pool = WorkerPool(spec, 2)
    exits: list[int] = []
    pool.on_exit = exits.append
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LEADHUB_DATA_DIR", str(tmp_path / "worker"))
        pool.start()
        try:

            async def gave_up() -> bool:
                return all(task.done() for task in pool._tasks)

            await wait_for(gave_up, timeout=40, what="the pool to stop starting the worker")
        finally:
            await pool.stop(grace=5)
    assert len(exits) == 1, f"the worker was started {len(exits)} times"
    assert [p.returncode for p in pool.processes.values()] == [3]


async def _readyz(session: aiohttp.ClientSession, base_url: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    async with session.get(base_url + "/readyz") as response:
        return response.status, await response.json(), time.monotonic() - started


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        (
            "UPDATE alembic_version SET version_num = '0099' WHERE version_num = '0006'",
            NEWER_0099,
        ),
        ("DROP TABLE rule_trace", "table rule_trace is missing"),
        ("ALTER TABLE rule_trace DROP COLUMN reason", "column rule_trace.reason is missing"),
    ],
    ids=["newer-release", "dropped-table", "dropped-column"],
)
async def test_a_schema_changed_under_the_daemon_makes_readyz_503_and_webhooks_still_go_to_the_queue(
    make_daemon, database_url: str, change: str, reported: str
) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon({"connectors": [FORM]})
    await daemon.start_without_asking_readyz()  # the first /readyz checks the changed store, not a cached answer
    await _execute(database_url, change)
    async with aiohttp.ClientSession() as session:

        async def reported_in_readyz() -> dict[str, Any] | None:
            status, body, _ = await _readyz(session, daemon.base_url)
            return body if status == 503 else None

        body = await wait_for(reported_in_readyz, timeout=SCHEMA_CHECK_EVERY + 10, what="/readyz to report the schema")
        assert body["store"] is False and body["queue"] is True, body
        assert reported in body["detail"]["store"]["error"], body
        for _ in range(5):
            status, again, _ = await _readyz(session, daemon.base_url)
            assert status == 503 and again["detail"]["store"] == body["detail"]["store"], again
        async with session.post(daemon.base_url + "/hooks/site-form", json={"email": "a@example.com"}) as response:
            assert response.status == 202, await response.text()
    logged = [line for line in daemon.log().splitlines() if reported in line]
    assert len(logged) == 1, "logged once, not per request:\n" + "\n".join(logged)
    assert await daemon.terminate() == 0, daemon.log()


async def test_a_write_locked_sqlite_makes_readyz_503_within_a_bounded_time(make_daemon, database_url: str) -> None:  # type: ignore[no-untyped-def]
    if not database_url.startswith("sqlite"):
        pytest.skip("a SQLite file's write lock")
    import sqlite3

    daemon = make_daemon({"connectors": [FORM]})
    await daemon.start_without_asking_readyz()  # the first /readyz checks the changed store, not a cached answer
    locker = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # as `sqlite3 leadhub.db` with `BEGIN EXCLUSIVE;` typed and left open
        slowest = 0.0
        async with aiohttp.ClientSession() as session:

            async def reported_in_readyz() -> dict[str, Any] | None:
                nonlocal slowest
                status, body, took = await _readyz(session, daemon.base_url)
                slowest = max(slowest, took)
                return body if status == 503 else None

            body = await wait_for(
                reported_in_readyz, timeout=SCHEMA_CHECK_EVERY + 10, what="/readyz to report the locked database"
            )
            assert "locked" in body["detail"]["store"]["error"], body
            assert body["store"] is False, body
            assert slowest <= 1.5, f"a /readyz took {slowest:.2f}s"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert await daemon.terminate() == 0, daemon.log()
