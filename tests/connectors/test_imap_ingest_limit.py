"""The `imap` connector against a NATS that bounds a stream's ingest queue (tests/bounded_nats.py) and a real Dovecot.

A folder batch (`fetch_batch`, 100) published all at once overflows a bound of 10 at about the same place every
time: retried whole, the mailbox never got in. Published in parts (leadhub/publish_window.py) every message gets
in once, and the post-action and the checkpoint cover only what the stream acknowledged: a message moved away
before its publish was acked would never be read again. The outage test stops that NATS while a batch goes out in
parts (its publish wraps the real queue's only to note what was acked and when to stop the server).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from leadhub.connectors.base import ConnectorContext, PublishResult
from leadhub.connectors.imap_config import ImapConfig
from leadhub.connectors.imap_folder import FolderWorker
from leadhub.envelope import Envelope
from leadhub.hub.queue import Queue
from leadhub.store.connector_state import load_state
from leadhub.store.db import create_engine, upgrade
from tests.bounded_nats import BoundedIngestNats, bounded_nats
from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for
from tests.imap_server import Dovecot, make_mail, running_dovecot

INGEST_BOUND = 10  # messages a stream holds received but not yet stored; a tenth of a folder batch
MAILBOX = 200  # two full folder batches


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


@pytest.fixture
async def bounded(tmp_path: Path) -> AsyncIterator[BoundedIngestNats]:
    async with bounded_nats(tmp_path / "bounded-nats", INGEST_BOUND) as server:
        yield server


async def _all_in(hub: RunningHub) -> dict[str, Any]:
    """The mailbox stored (each message one inquiry) and the checkpoint at its last UID."""
    inquiries = await hub.wait_items("/api/inquiries", MAILBOX, timeout=60)
    assert sorted(i["meta"]["uid"] for i in inquiries) == list(range(1, MAILBOX + 1)), "each message once"

    async def checkpoint_at_the_end() -> dict[str, Any] | None:
        state = await load_state(hub.engine, "inbox", "folder:INBOX")
        return state if state and state["last_uid"] == MAILBOX else None

    return await wait_for(checkpoint_at_the_end, timeout=20, what=f"the checkpoint at UID {MAILBOX}")


async def test_a_mailbox_gets_through_a_bounded_ingest_queue(
    make_hub: HubFactory, dovecot: Dovecot, bounded: BoundedIngestNats, capsys: pytest.CaptureFixture[str]
) -> None:
    dovecot.append([make_mail(n) for n in range(1, MAILBOX + 1)])
    hub = await make_hub([dovecot.connector()], nats_url=bounded.url)
    state = await _all_in(hub)
    assert state["last_uid"] == MAILBOX
    assert "NATS refused messages" in capsys.readouterr().out, "the bound was reached: the test shows what it says"


async def test_moved_mail_was_acknowledged_first(
    make_hub: HubFactory, dovecot: Dovecot, bounded: BoundedIngestNats
) -> None:
    dovecot.append([make_mail(n) for n in range(1, MAILBOX + 1)])
    admin = dovecot.client()
    admin.create_folder("Processed")
    hub = await make_hub([dovecot.connector(post_action="move:Processed")], nats_url=bounded.url)
    await _all_in(hub)  # a message moved unacknowledged would never be read again: fewer inquiries

    def counts() -> tuple[int, int]:
        inbox = admin.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"]
        return inbox, admin.folder_status("Processed", [b"MESSAGES"])[b"MESSAGES"]

    async def all_moved() -> tuple[int, int] | None:
        return counts() if counts() == (0, MAILBOX) else None

    await wait_for(all_moved, timeout=20, what="every message moved to Processed")


async def test_an_outage_mid_batch_leaves_marked_and_checkpointed_only_what_was_acked(
    database_url: str, dovecot: Dovecot, bounded: BoundedIngestNats
) -> None:
    """NATS stops while a batch goes out in parts: `\\Seen` and the checkpoint end at the last part acked whole."""
    dovecot.append([make_mail(n) for n in range(1, MAILBOX + 1)])
    engine = create_engine(database_url)
    await upgrade(engine)
    queue = Queue(bounded.url)
    await queue.start()
    acked: set[int] = set()  # UIDs whose publish JetStream acknowledged, as the connector saw it
    acked_in_small_parts: list[int] = []  # acks since the window shrank under the bound: whole parts go through
    stopping: list[asyncio.Task[None]] = []

    async def publish(envelope: Envelope) -> PublishResult:
        result = await queue.publish_envelope(envelope)
        acked.add(int(envelope.meta["uid"]))
        if worker.window.size <= INGEST_BOUND:
            acked_in_small_parts.append(int(envelope.meta["uid"]))
        if len(acked_in_small_parts) >= 3 * INGEST_BOUND and not stopping:
            stopping.append(asyncio.create_task(bounded.stop()))  # mid-batch, after parts went through
        return result

    statuses: list[dict[str, Any]] = []
    config = ImapConfig(**dovecot.connector(post_action="seen"))  # type: ignore[arg-type]
    context = ConnectorContext(publish=publish, engine=engine, max_payload=queue.max_payload)
    worker = FolderWorker(config, "INBOX", context, None, lambda folder, status: statuses.append(status))
    running = asyncio.create_task(worker.run())
    try:

        async def failed_after_the_stop() -> bool:
            return bool(stopping) and stopping[0].done() and "QueueUnavailable" in str(statuses[-1].get("error"))

        await wait_for(failed_after_the_stop, timeout=30, what="the folder to fail once NATS stopped")
        state = await load_state(engine, "inbox", "folder:INBOX")
        assert state is not None and 0 < state["last_uid"] < MAILBOX, "parts went through before the outage"
        done = set(range(1, state["last_uid"] + 1))
        assert done <= acked, "the checkpoint covers only acknowledged messages"
        assert _seen(dovecot) == done, "exactly the checkpointed messages are marked \\Seen, none unacknowledged"

        await bounded.start()

        async def caught_up() -> bool:
            state = await load_state(engine, "inbox", "folder:INBOX")
            return bool(state and state["last_uid"] == MAILBOX) and _seen(dovecot) == set(range(1, MAILBOX + 1))

        await wait_for(caught_up, timeout=60, what="the rest published, marked and checkpointed once NATS is back")
        assert acked == set(range(1, MAILBOX + 1))
    finally:
        worker.request_stop()
        worker.abort()
        await asyncio.wait_for(running, 15)
        worker.close()
        await queue.stop()
        await engine.dispose()


def _seen(dovecot: Dovecot) -> set[int]:
    admin = dovecot.client()
    admin.select_folder("INBOX", readonly=True)
    flags = admin.fetch(admin.search(), ["FLAGS"])
    admin.logout()
    dovecot.clients.remove(admin)
    return {uid for uid, item in flags.items() if b"\\Seen" in item[b"FLAGS"]}
