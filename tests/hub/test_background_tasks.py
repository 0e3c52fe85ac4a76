"""The daemon's background tasks (store side, pipeline, relay, rule engine): one that fails is heard of."""

from __future__ import annotations

import asyncio

import structlog

from tests.conftest import HubFactory

FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def test_a_background_task_that_fails_is_logged_and_fails_the_daemon(make_hub: HubFactory) -> None:
    """It stopped without a word ("Task exception was never retrieved", at best) and /readyz kept answering 200."""
    hub = await make_hub([FORM])
    error = OSError(24, "Too many open files")

    async def fails() -> None:
        raise error

    with structlog.testing.capture_logs() as lines:
        task = asyncio.create_task(fails(), name="store-side")
        hub.hub._watch(task)
        await asyncio.wait_for(hub.hub.failed.wait(), 10)

    [line] = [line for line in lines if line["log_level"] == "error"]
    assert line["event"] == "background task failed; stopping" and line["task"] == "store-side"
    assert line["exc_info"] is error  # rendered with its traceback
    # `leadhub run` stops, then exits 1 saying which part failed (hub/cli.py), not "cannot start"
    assert str(hub.hub.failure) == "store-side failed: OSError: [Errno 24] Too many open files"
    assert hub.hub.failure.__cause__ is error
    async with hub.session.get(hub.url("/readyz")) as response:
        assert response.status == 503
        body = await response.json()
    assert body["detail"]["store-side"] == {"ok": False, "error": "OSError: [Errno 24] Too many open files"}


async def test_a_task_that_fails_because_the_daemon_stops_is_logged_and_the_stop_stays_clean(
    make_hub: HubFactory,
) -> None:
    """A migration the stop's signal killed raises in the store side: a warning, not a failed daemon."""
    hub = await make_hub([FORM])
    inner = hub.hub

    async def fails_at_the_stop() -> None:
        await inner.stopping.wait()
        raise RuntimeError("the migration process exited with -15: no output")

    task = asyncio.create_task(fails_at_the_stop(), name="store-side")
    inner._watch(task)
    with structlog.testing.capture_logs() as lines:
        await inner.stop()  # waits for its tasks
    assert task.done()
    warnings = [line for line in lines if line["event"] == "background task failed while stopping"]
    assert [(w["log_level"], w["task"]) for w in warnings] == [("warning", "store-side")]
    assert "RuntimeError: the migration process exited with -15" in warnings[0]["error"]
    assert inner.failure is None and not inner.failed.is_set()
