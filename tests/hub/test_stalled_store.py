"""The embedded NATS restarted when its store stopped writing (hub/stalled_store.py).

After a write error (the disk full) nats-server 2.15 answers no publish to that stream again, even once space is
back; webhooks were answered 503 for ever, with `/readyz` ready, until someone restarted leadhub.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import nats.js.errors
import pytest

from leadhub.envelope import Envelope
from leadhub.hub.config import config_from_dict
from leadhub.hub.daemon import Hub
from leadhub.hub.stalled_store import StallWatch
from tests.helpers import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_failures_for_the_stall_time_restart_once_per_interval() -> None:
    clock, restarts = Clock(), []
    watch = StallWatch(lambda: restarts.append(clock.now), stall_after=10, restart_every=60, clock=clock)
    watch.not_stored()
    clock.now += 9
    watch.not_stored()
    assert restarts == []
    watch.acknowledged()  # one ack: the server stores, a slow moment is not a stall
    clock.now += 5
    watch.not_stored()
    clock.now += 9
    watch.not_stored()
    assert restarts == []
    clock.now += 1
    watch.not_stored()
    assert restarts == [1024.0]
    for _ in range(5):  # still stalled (the disk still full): not restarted again within restart_every
        clock.now += 11
        watch.not_stored()
    assert restarts == [1024.0]
    clock.now += 11
    watch.not_stored()
    assert restarts == [1024.0, 1090.0]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs: a disk that can be filled. Needs the right to mount (root in a container with it)."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """A file taking all of `disk`'s free space but `leave` bytes."""
    filler = disk / f"filler-{uuid.uuid4().hex[:6]}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        stat = os.statvfs(disk)
        os.posix_fallocate(fd, 0, stat.f_bavail * stat.f_frsize - leave)
    finally:
        os.close(fd)
    return filler


async def _start(tmp_path: Path, disk: Path) -> Hub:
    raw = {
        "data_dir": str(disk / "data"),
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'leadhub.db'}",
        "http_port": 0,
        "roles": "http",
        "connectors": [{"name": "site-form", "type": "form", "rate_limit": None}],
    }
    hub = Hub(config_from_dict(raw, env={}))
    await hub.start()
    assert hub.queue is not None and hub.queue.stall_watch is not None
    hub.queue.stall_watch.stall_after = 1.0  # the test's patience, not the daemon's
    return hub


async def _refused_then_taken_again(hub: Hub, filler: Path) -> None:
    """Webhooks until one is refused (503), then, with the space freed, until one is taken; every 202 stored."""
    assert hub.queue is not None
    url = f"http://127.0.0.1:{hub.port}/hooks/site-form"
    statuses: list[int] = []
    taken: set[str] = set()  # the ids of the 202 answers
    async with aiohttp.ClientSession() as session:

        async def post(expected: int) -> bool:
            form = {"name": "Big", "email": f"big{len(statuses)}@client.example", "message": "m" * 20_000}
            async with session.post(url, data=form) as response:
                statuses.append(response.status)
                if response.status == 202:
                    taken.add((await response.json())["id"])
            return statuses[-1] == expected

        await wait_for(lambda: post(503), timeout=30, what="the full disk to refuse a webhook")
        assert set(statuses) <= {202, 503}, "a full disk is 503, never a 2xx it did not store"
        filler.unlink()
        await wait_for(lambda: post(202), timeout=60, what="webhooks taken again once the disk has space")
    on_stream = await _inquiry_ids_on_the_stream(hub)
    # A 503 may still be stored: a publish the server stored after the hub stopped waiting for its ack. The client
    # sends it again under the same key, which the queue and the store take once.
    assert taken <= on_stream, f"every 202 is on the stream: {len(taken - on_stream)} of {len(taken)} are not"


async def _inquiry_ids_on_the_stream(hub: Hub) -> set[str]:
    """The ids of the inquiries the INBOUND stream holds, read message by message."""
    assert hub.queue is not None
    js = hub.queue.jetstream
    state = (await js.stream_info("INBOUND")).state
    ids = set()
    for seq in range(state.first_seq, state.last_seq + 1):
        try:
            message = await js.get_msg("INBOUND", seq)
        except nats.js.errors.NotFoundError:  # a sequence the stream no longer has
            continue
        ids.add(Envelope.from_message(message.headers, message.data or b"").id)
    return ids


async def test_a_disk_filled_while_running_is_503_and_webhooks_are_taken_again_once_space_is_back(
    tmp_path: Path, small_disk: Path
) -> None:
    """A write error (no space left on device) in the stream's store."""
    hub = await _start(tmp_path, small_disk)
    try:
        await _refused_then_taken_again(hub, _fill(small_disk, leave=30_000))  # less than two webhooks' room
    finally:
        await hub.stop()


async def test_a_start_on_a_nearly_full_disk_does_not_cap_the_queue_for_ever(tmp_path: Path, small_disk: Path) -> None:
    """JetStream's storage limit is 75% of the space free at the server's start: 'insufficient resources' after."""
    filler = _fill(small_disk, leave=1_000_000)
    hub = await _start(tmp_path, small_disk)
    try:
        await _refused_then_taken_again(hub, filler)
    finally:
        await hub.stop()
