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
import pytest

from leadhub.hub.config import config_from_dict
from leadhub.hub.daemon import Hub
from leadhub.hub.stalled_store import StallWatch
from tests.helpers import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_timeouts_for_the_stall_time_restart_once_per_interval() -> None:
    clock, restarts = Clock(), []
    watch = StallWatch(lambda: restarts.append(clock.now), stall_after=10, restart_every=60, clock=clock)
    watch.timed_out()
    clock.now += 9
    watch.timed_out()
    assert restarts == []
    watch.acknowledged()  # one ack: the server stores, a slow moment is not a stall
    clock.now += 5
    watch.timed_out()
    clock.now += 9
    watch.timed_out()
    assert restarts == []
    clock.now += 1
    watch.timed_out()
    assert restarts == [1024.0]
    for _ in range(5):  # still stalled (the disk still full): not restarted again within restart_every
        clock.now += 11
        watch.timed_out()
    assert restarts == [1024.0]
    clock.now += 11
    watch.timed_out()
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


async def test_a_full_disk_is_503_and_webhooks_are_taken_again_once_space_is_back(
    tmp_path: Path, small_disk: Path
) -> None:
    raw = {
        "data_dir": str(small_disk / "data"),
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'leadhub.db'}",
        "http_port": 0,
        "roles": "http",
        "connectors": [{"name": "site-form", "type": "form", "rate_limit": None}],
    }
    hub = Hub(config_from_dict(raw, env={}))
    await hub.start()
    try:
        assert hub.queue is not None and hub.queue.stall_watch is not None
        hub.queue.stall_watch.stall_after = 1.0  # the test's patience, not the daemon's
        filler = small_disk / "filler"
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, free - 30_000)  # leaves less than two webhooks' room
        finally:
            os.close(fd)
        url = f"http://127.0.0.1:{hub.port}/hooks/site-form"
        statuses: list[int] = []
        async with aiohttp.ClientSession() as session:

            async def post(n: int) -> int:
                form = {"name": "Big", "email": f"big{n}@client.example", "message": "m" * 20_000}
                async with session.post(url, data=form) as response:
                    return response.status

            async def refused() -> bool:
                statuses.append(await post(len(statuses)))
                return statuses[-1] == 503

            await wait_for(refused, timeout=30, what="the full disk to refuse a webhook")
            assert set(statuses) <= {202, 503}, "a full disk is 503, never a 2xx it did not store"
            filler.unlink()

            async def taken_again() -> bool:
                statuses.append(await post(len(statuses)))
                return statuses[-1] == 202

            await wait_for(taken_again, timeout=60, what="webhooks taken again once the disk has space")
        stored = (await hub.queue.jetstream.stream_info("INBOUND")).state.messages
        assert stored == statuses.count(202), "every 202 is on the stream"
    finally:
        await hub.stop()
