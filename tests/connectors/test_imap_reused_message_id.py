"""Mailers that write one Message-ID on every message and no Date header, against a real Dovecot (tests/imap_server.py)
through the in-process hub: every message is an inquiry of its own, and a re-read after the folder was rebuilt
(a server migration: new UIDVALIDITY, trace headers added, headers re-folded) doubles none of them.

Found by an audit ("same Message-ID without Date"): the key was sha256(Message-ID, Date), so every such message
after the first had the first one's key and was dropped as its duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from leadhub.store.connector_state import load_state
from tests.conftest import HubFactory, RunningHub
from tests.helpers import corpus, wait_for
from tests.imap_server import USER, Dovecot, running_dovecot

FOLDER = "Leads"


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


def form_mail(name: str, email: str, text: str) -> bytes:
    """A web-form plugin's notification as broken PHP mailers send it: same From, Subject and Message-ID, no Date."""
    return (
        "From: Website <wordpress@site.example>\r\n"
        f"Reply-To: {name} <{email}>\r\n"
        f"To: {USER}\r\n"
        "Subject: New submission from the contact form on our website\r\n"
        "Message-ID: <contact-form@site.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Name: {name}\r\nE-mail: {email}\r\nMessage: {text}\r\n"
    ).encode()


def migrated(raw: bytes) -> bytes:
    """The message as another server hands it out after a migration: trace headers added, a long header re-folded."""
    trace = b"Received: from old-imap.example by new-imap.example; Tue, 24 Nov 2026 03:00:00 +0000\r\nX-Migrated: 1\r\n"
    return trace + raw.replace(b"Subject: New submission ", b"Subject: New\r\n submission ", 1).replace(
        b"Subject: [JIRA] (SYS-422) ", b"Subject: [JIRA]\r\n\t(SYS-422) ", 1
    )


async def synced(hub: RunningHub, last_uid: int, not_uidvalidity: int | None = None) -> bool:
    """The folder's checkpoint is at `last_uid` (under a UIDVALIDITY other than `not_uidvalidity`)."""
    state = await load_state(hub.engine, "inbox", f"folder:{FOLDER}")
    return state is not None and state["uidvalidity"] != not_uidvalidity and state["last_uid"] == last_uid


async def inbound_messages(hub: RunningHub) -> int:
    """How many envelopes JetStream took (it drops a publish whose Nats-Msg-Id, the envelope key, it has seen)."""
    info = await hub.hub.queue.jetstream.stream_info("INBOUND")  # type: ignore[union-attr]
    return info.state.last_seq


@pytest.mark.store_independent  # the key is the connector's; once, on the embedded default: not about the store
async def test_one_message_id_without_date_is_one_inquiry_per_message_and_a_re_read_doubles_none(
    make_hub: HubFactory, dovecot: Dovecot
) -> None:
    forms = [
        form_mail("Anna", "anna@client.example", "Please call me back about the order."),
        form_mail("Ivan", "ivan@other.example", "Do you deliver to Kazan?"),
        form_mail("Olga", "olga@third.example", "I need an invoice for 20 units."),
    ]
    # zammad mail103/mail104: one JIRA sender, one Message-ID, no Date, the same body; only the Subject differs
    jira = [corpus("email", "zammad", "mail", f"mail10{n}.box").read_bytes() for n in (3, 4)]
    old = [*forms, *jira]
    dovecot.append(old, folder=FOLDER)
    hub = await make_hub([dovecot.connector(folders=[FOLDER], poll_interval="1s")])

    await wait_for(lambda: synced(hub, len(old)), what=f"the checkpoint at UID {len(old)}")
    assert await inbound_messages(hub) == len(old)  # on the old code 2: the later ones had the first one's key
    inquiries = await hub.wait_items("/api/inquiries", len(old))
    assert sorted(i["meta"]["uid"] for i in inquiries) == list(range(1, len(old) + 1))
    assert len({i["key"] for i in inquiries}) == len(old)
    emails = {i["email"] for i in inquiries}
    assert {"anna@client.example", "ivan@other.example", "olga@third.example", "example@jira.com"} <= emails
    before = (await load_state(hub.engine, "inbox", f"folder:{FOLDER}"))["uidvalidity"]

    # the folder is rebuilt by a migration: new UIDVALIDITY, every message re-read as another server writes it
    admin = dovecot.client()
    admin.delete_folder(FOLDER)
    admin.create_folder(FOLDER)
    new = form_mail("Petr", "petr@fourth.example", "Is the offer still valid?")
    dovecot.append([*(migrated(raw) for raw in old), new], folder=FOLDER)

    await wait_for(
        lambda: synced(hub, len(old) + 1, not_uidvalidity=before),
        timeout=20,
        what="the folder to be re-read under the new UIDVALIDITY",
    )
    # every re-read message had its old key again: JetStream took only the new one
    assert await inbound_messages(hub) == len(old) + 1
    inquiries = await hub.wait_items("/api/inquiries", len(old) + 1)
    assert "petr@fourth.example" in {i["email"] for i in inquiries}
