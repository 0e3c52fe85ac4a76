"""The `imap` connector against a NATS that bounds a stream's ingest queue (tests/bounded_nats.py) and a real Dovecot.

A folder batch (`fetch_batch`, 100) published all at once overflows a bound of 10 at about the same place every
time: retried whole, the mailbox never got in. Published in parts (leadhub/publish_window.py) every message gets
in once, and the post-action and the checkpoint cover only what the stream acknowledged: a message moved away
before its publish was acked would never be read again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from leadhub.store.connector_state import load_state
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
