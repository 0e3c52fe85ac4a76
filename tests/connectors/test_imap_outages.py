"""The `imap` connector while the queue is down (a real NATS the test stops and restarts, a real Dovecot): mail is
neither checkpointed nor marked read until JetStream has acked it, and everything arrives once the queue is back.
Against a NATS that takes less per message than `max_message_bytes`, a bigger message is kept short and dropped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.store.connector_state import load_state
from tests.conftest import HubFactory
from tests.helpers import wait_for
from tests.imap_server import Dovecot, make_mail, running_dovecot


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


def seen_flags(dovecot: Dovecot) -> dict[int, bool]:
    admin = dovecot.client()
    admin.select_folder("INBOX", readonly=True)
    flags = {uid: b"\\Seen" in item[b"FLAGS"] for uid, item in admin.fetch(admin.search(), ["FLAGS"]).items()}
    admin.logout()
    dovecot.clients.remove(admin)
    return flags


async def test_queue_down_holds_checkpoint_and_flags_then_catches_up(
    make_hub: HubFactory, dovecot: Dovecot, external_nats: EmbeddedNats
) -> None:
    hub = await make_hub([dovecot.connector(post_action="seen", poll_interval="1s")], nats_url=external_nats.url)
    dovecot.append([make_mail(1)])
    await hub.wait_items("/api/leads", 1)

    async def checkpoint() -> dict[str, Any] | None:
        return await load_state(hub.engine, "inbox", "folder:INBOX")

    await wait_for(checkpoint, what="the first checkpoint")
    await external_nats.stop()
    dovecot.append([make_mail(2), make_mail(3)])

    async def failing() -> dict[str, Any] | None:
        async with hub.session.get(hub.url("/readyz")) as response:
            detail = (await response.json())["detail"].get("connector:inbox") or {}
        return detail if detail.get("error") and "QueueUnavailable" in detail["error"] else None

    await wait_for(failing, timeout=15, what="the failed publish in /readyz")
    assert (await checkpoint())["last_uid"] == 1  # type: ignore[index]
    assert seen_flags(dovecot) == {1: True, 2: False, 3: False}

    await external_nats.start()
    await hub.wait_items("/api/leads", 3, timeout=30)

    async def caught_up() -> bool:
        state = await checkpoint()
        return bool(state and state["last_uid"] == 3 and all(seen_flags(dovecot).values()))

    await wait_for(caught_up, timeout=15, what="checkpoint 3 and all mail flagged \\Seen")
    assert len((await hub.api("/api/inquiries"))["items"]) == 3


async def test_a_message_over_the_queue_limit_is_dropped_not_retried_forever(
    make_hub: HubFactory, dovecot: Dovecot, stock_nats: EmbeddedNats
) -> None:
    big = make_mail(1, body="b" * 2_000_000 + "\r\n")  # under max_message_bytes (25 MB), over the queue's 1 MB
    dovecot.append([big, make_mail(2)])
    hub = await make_hub([dovecot.connector(poll_interval="1s")], nats_url=stock_nats.url)
    inquiries = await hub.wait_items("/api/inquiries", 2, timeout=20)
    by_uid = {i["meta"]["uid"]: i for i in inquiries}
    assert by_uid[1]["meta"]["too_large"] == len(big)
    assert by_uid[1]["dropped"]
    assert by_uid[2]["dropped"] is None
    await wait_for(lambda: _at(hub, 2), what="the checkpoint past both messages")
    dovecot.append([make_mail(3)])
    await hub.wait_items("/api/leads", 2, timeout=20)


async def _at(hub: Any, last_uid: int) -> bool:
    state = await load_state(hub.engine, "inbox", "folder:INBOX")
    return bool(state and state["last_uid"] >= last_uid)
