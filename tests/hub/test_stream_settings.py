"""Streams that are there before leadhub declares them: made by an older release, an admin, another tool.

Settings leadhub chooses are brought to its own (an update); a stream JetStream will not update to them (another
storage type, another retention, its subjects taken) is a clear refusal at start, naming the stream and why, where
the daemon retried "connecting to NATS" every 10 s for ever without serving.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from leadhub.hub.config import config_from_dict
from leadhub.hub.daemon import Hub
from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.hub.queue import StreamConflict
from tests.helpers import free_port, run_leadhub


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    server = EmbeddedNats(tmp_path / "nats-data", port=free_port())
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


async def _add_stream(url: str, config: StreamConfig) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().add_stream(config)
    finally:
        await client.close()


async def _start(tmp_path: Path, url: str) -> Hub:
    raw = {"data_dir": str(tmp_path / "data"), "nats_url": url, "http_port": 0, "roles": "http"}
    hub = Hub(config_from_dict(raw, env={}))
    try:
        await asyncio.wait_for(hub.start(), 20)
    except BaseException:
        await hub.stop()
        raise
    return hub


async def test_settings_of_an_older_stream_are_brought_to_leadhubs(tmp_path: Path, nats_url: str) -> None:
    older = StreamConfig(
        name="EVENTS", subjects=["events.>"], max_msgs=10, discard=DiscardPolicy.OLD, duplicate_window=120
    )
    await _add_stream(nats_url, older)
    hub = await _start(tmp_path, nats_url)
    try:
        assert hub.queue is not None
        config = (await hub.queue.jetstream.stream_info("EVENTS")).config
        assert config.max_msgs == -1, "no message of a stream is dropped for a count leadhub did not choose"
        assert config.duplicate_window == 30
    finally:
        await hub.stop()


@pytest.mark.parametrize(
    "existing",
    [
        StreamConfig(name="INBOUND", subjects=["inbound.>"], storage=StorageType.MEMORY),
        StreamConfig(name="INBOUND", subjects=["inbound.>"], retention=RetentionPolicy.INTEREST),
        StreamConfig(name="EVERYTHING", subjects=["inbound.>", "events.>"]),  # the subjects are taken
    ],
    ids=["storage", "retention", "subjects"],
)
async def test_a_stream_that_cannot_be_updated_refuses_the_start(
    tmp_path: Path, nats_url: str, existing: StreamConfig
) -> None:
    await _add_stream(nats_url, existing)
    with pytest.raises(StreamConflict, match="INBOUND") as refused:
        await _start(tmp_path, nats_url)
    assert "delete" in str(refused.value) or "must go" in str(refused.value)


async def test_leadhub_run_says_why_and_exits_1(tmp_path: Path, nats_url: str) -> None:
    await _add_stream(nats_url, StreamConfig(name="INBOUND", subjects=["inbound.>"], storage=StorageType.MEMORY))
    env = {"LEADHUB_DATA_DIR": str(tmp_path / "data"), "LEADHUB_NATS_URL": nats_url, "LEADHUB_HTTP_PORT": "0"}
    with contextlib.suppress(Exception):
        (tmp_path / "data").mkdir()
    done = await asyncio.to_thread(run_leadhub, "run", env=env)
    assert done.returncode == 1, done.stderr
    assert "INBOUND" in done.stderr and "storage" in done.stderr
    assert "Traceback" not in done.stderr


async def test_inbound_keeps_accepted_items_until_the_pipeline_stores_them(tmp_path: Path, nats_url: str) -> None:
    """An older release gave INBOUND a max_age of 30 days: items a webhook had answered 202 for were deleted
    unstored when no pipeline stored them in that time (the store away, the pipeline role run nowhere)."""
    older = StreamConfig(
        name="INBOUND",
        subjects=["inbound.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=30 * 86400,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
    )
    await _add_stream(nats_url, older)
    hub = await _start(tmp_path, nats_url)
    try:
        assert hub.queue is not None
        config = (await hub.queue.jetstream.stream_info("INBOUND")).config
        assert not config.max_age, "an accepted item is never deleted for its age"
        assert config.discard == DiscardPolicy.NEW, "a full stream refuses a publish (503), never drops an item"
    finally:
        await hub.stop()


async def test_more_replicas_than_a_single_server_has_refuses_the_start(tmp_path: Path, nats_url: str) -> None:
    """LEADHUB_STREAM_REPLICAS=3 against one NATS server: the daemon retried for ever without serving."""
    raw = {"data_dir": str(tmp_path / "data"), "nats_url": nats_url, "http_port": 0, "stream_replicas": 3}
    hub = Hub(config_from_dict({**raw, "roles": "http"}, env={}))
    try:
        with pytest.raises(StreamConflict, match=r"replicas > 1 not supported.*LEADHUB_STREAM_REPLICAS"):
            await asyncio.wait_for(hub.start(), 20)
    finally:
        await hub.stop()
