"""Raw mail through the real pipeline (embedded NATS, the store, the HTTP API): envelopes as the `imap` connector
publishes them go straight onto the queue. A person's mail is a lead; an auto-reply is a dropped inquiry;
a reply joins its thread's lead; a bounce suppresses the address; a too large message is kept, dropped; one that
crashes the parser is dead-lettered with its raw bytes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from leadhub.envelope import Envelope
from leadhub.pipelines import parse_email as parse_email_module
from leadhub.store import dead_letters
from leadhub.store.models import EmailSuppression, Inquiry
from tests.conftest import HubFactory, RunningHub
from tests.helpers import corpus, free_port, wait_for

TOKEN = "email-test-token"


def imap_connector(**extra: Any) -> dict[str, Any]:
    """An imap connector whose server is a closed loopback port: it retries in the background; the test feeds
    the queue itself, the way the connector would after a fetch."""
    return {
        "name": "inbox",
        "type": "imap",
        "host": "127.0.0.1",
        "port": free_port(),
        "security": "none",
        "username": "sales@shop.example",
        "password": "not-used",
        "own_addresses": ["sales@shop.example"],
        **extra,
    }


async def email_hub(make_hub: HubFactory, **extra: Any) -> RunningHub:
    return await make_hub([imap_connector(**extra)], api_token=TOKEN)


async def publish(hub: RunningHub, key: str, raw: bytes, **meta: Any) -> str:
    envelope = Envelope(
        key=f"imap:inbox:{key}",
        channel="email",
        connector="inbox",
        payload=raw,
        content_type="message/rfc822",
        meta=meta,
    )
    assert hub.hub.queue is not None
    result = await hub.hub.queue.publish_envelope(envelope)
    return result.id


def message(sender: str, message_id: str, subject: str, body: str, *headers: str) -> bytes:
    lines = [
        f"From: {sender}",
        "To: Sales <sales@shop.example>",
        f"Subject: {subject}",
        f"Message-ID: {message_id}",
        "Date: Mon, 23 Nov 2026 10:00:00 +0300",
        "Content-Type: text/plain; charset=utf-8",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


QUESTION = message(
    "=?utf-8?B?0JzQsNGA0LjRjyDQmNCy0LDQvdC+0LLQsA==?= <Maria@Client.example>",  # "Мария Иванова"
    "<q1@client.example>",
    "Quote for 200 mugs",
    "Hello, please send a quote.\r\n--\r\nMaria\r\nTel. +7 916 765-43-21\r\n",
)


async def test_a_person_s_mail_becomes_a_lead(make_hub: HubFactory) -> None:
    hub = await email_hub(make_hub)
    inquiry_id = await publish(hub, "q1", QUESTION)

    leads = await hub.wait_items("/api/leads", 1)
    assert leads[0]["channel"] == "email" and leads[0]["title"] == "Quote for 200 mugs"
    assert leads[0]["message"].startswith("Hello, please send a quote.")
    contact = (await hub.api("/api/contacts", email="maria@client.example"))["items"][0]
    assert contact["name"] == "Мария Иванова" and contact["identifiers"] == [
        {"kind": "email", "value": "maria@client.example"}
    ]
    inquiry = await hub.api(f"/api/inquiries/{inquiry_id}")
    assert inquiry["lead_id"] == leads[0]["id"] and inquiry["dropped"] is None
    assert inquiry["fields"]["to"] == [{"email": "sales@shop.example", "name": "Sales"}]
    # The signature's phone is kept on the inquiry for a manager to read, not taken as the contact's phone.
    assert inquiry["fields"]["phones"] == ["+7 916 765-43-21"] and contact["phone"] is None


async def test_a_phone_quoted_in_replies_does_not_join_their_senders(make_hub: HubFactory) -> None:
    """Two customers reply under our manager's quoted signature: the phone in the text is a hint, so they stay two
    contacts (it was an identifier: both got the manager's phone and were merged into one)."""
    hub = await email_hub(make_hub)
    quoted = "\r\n\r\n> Best regards,\r\n> Olga, sales manager\r\n> +7 495 123-45-67\r\n"
    for n, sender in enumerate(("anna@client-a.example", "boris@client-b.example")):
        await publish(hub, f"r{n}", message(sender, f"<r{n}@client.example>", "Re: Offer", "Thank you!" + quoted))

    leads = await hub.wait_items("/api/leads", 2)
    contacts = (await hub.api("/api/contacts"))["items"]
    assert sorted(c["email"] for c in contacts) == ["anna@client-a.example", "boris@client-b.example"]
    assert len({lead["contact_id"] for lead in leads}) == 2
    assert all(c["phone"] is None and c["merged_into"] is None for c in contacts)
    assert (await hub.api("/api/contacts", phone="+74951234567"))["items"] == []
    inquiries = await hub.wait_items("/api/inquiries", 2)
    assert [i["fields"]["phones"] for i in inquiries] == [["+7 495 123-45-67"]] * 2


async def test_machine_mail_is_stored_dropped_and_opens_no_lead(make_hub: HubFactory) -> None:
    hub = await email_hub(make_hub)
    await publish(
        hub,
        "ooo",
        message(
            "maria@client.example",
            "<ooo@client.example>",
            "Automatic reply: Quote",
            "I am away until Monday.",
            "Auto-Submitted: auto-replied",
            "X-Auto-Response-Suppress: All",
        ),
    )
    await publish(hub, "own", message("sales@shop.example", "<s1@shop.example>", "Your survey", "Thanks"))
    await publish(
        hub, "list", message("news@vendor.example", "<n1@vendor.example>", "News", "...", "List-Id: <news.vendor>")
    )
    await publish(hub, "q1", QUESTION)

    dropped = await hub.wait_items("/api/inquiries", 3, dropped="true")
    assert {i["dropped"].split(" (")[0] for i in dropped} == {"out of office", "own mail", "list mail"}
    assert all(i["lead_id"] is None and i["contact_id"] is None for i in dropped)
    leads = await hub.wait_items("/api/leads", 1)
    assert leads[0]["title"] == "Quote for 200 mugs"
    assert len((await hub.api("/api/inquiries", dropped="false"))["items"]) == 1


async def test_a_reply_joins_the_lead_of_the_first_mail(make_hub: HubFactory) -> None:
    hub = await email_hub(make_hub)
    await publish(hub, "q1", QUESTION)
    lead = (await hub.wait_items("/api/leads", 1))[0]

    reply = message(
        "Maria <maria@client.example>",
        "<q2@client.example>",
        "Re: Quote for 200 mugs",
        "And 50 plates, please.\r\n\r\n> Hello, please send a quote.",
        "In-Reply-To: <q1@client.example>",
        "References: <q1@client.example>",
    )
    reply_id = await publish(hub, "q2", reply)
    inquiries = await hub.wait_items("/api/inquiries", 2)
    assert {i["lead_id"] for i in inquiries} == {lead["id"]}
    reply_inquiry = await hub.api(f"/api/inquiries/{reply_id}")
    assert reply_inquiry["message"].startswith("And 50 plates")
    assert reply_inquiry["title"] == "Re: Quote for 200 mugs"  # the lead keeps the first mail's subject
    assert {i["title"] for i in inquiries} == {"Quote for 200 mugs", "Re: Quote for 200 mugs"}
    assert len((await hub.api("/api/leads"))["items"]) == 1


async def test_a_bounce_marks_the_address_undeliverable(make_hub: HubFactory) -> None:
    """nodemailer-mailparser's delivery-status.eml: an Amazon SES DSN for xxxx@xxxx.com (5.1.1)."""
    raw = corpus("email", "nodemailer-mailparser", "test", "fixtures", "delivery-status.eml").read_bytes()
    hub = await email_hub(make_hub)
    inquiry_id = await publish(hub, "dsn", raw)

    async def suppressed() -> list[Any]:
        async with hub.engine.connect() as conn:
            return list((await conn.execute(select(EmailSuppression.__table__))).mappings().all())

    rows = await wait_for(suppressed, what="the bounced address in email_suppression")
    assert [(r["address"], r["reason"]) for r in rows] == [("xxxx@xxxx.com", "bounce")]
    inquiry = await hub.api(f"/api/inquiries/{inquiry_id}")
    assert inquiry["dropped"] == "bounce (delivery-status report)" and inquiry["lead_id"] is None
    assert inquiry["fields"]["bounce"][0]["status"] == "5.1.1"
    assert not (await hub.api("/api/leads"))["items"]


async def test_too_large_mail_is_dropped_and_its_bytes_kept(make_hub: HubFactory) -> None:
    hub = await email_hub(make_hub, max_message_bytes=4096)
    raw = message("big@client.example", "<big@client.example>", "Scans", "x" * 10_000)
    inquiry_id = await publish(hub, "big", raw)
    await hub.wait_items("/api/inquiries", 1, dropped="true")
    inquiry = await hub.api(f"/api/inquiries/{inquiry_id}")
    assert inquiry["dropped"] == f"too large: {len(raw)} bytes"
    async with hub.engine.connect() as conn:
        payload = (await conn.execute(select(Inquiry.payload).where(Inquiry.id == inquiry_id))).scalar_one()
    assert payload == raw
    assert not (await hub.api("/api/leads"))["items"]


async def test_a_message_that_crashes_the_parser_is_dead_lettered_with_its_bytes(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the tolerant parser still cannot read goes to dead letters; the next mail is unaffected."""
    poison = message("x@client.example", "<poison@client.example>", "poison", "boom")
    real_parse = parse_email_module.parse_message

    def parse_or_crash(raw: bytes, region: str | None = None, *, phones: bool = True) -> Any:
        if b"poison" in raw:
            raise RecursionError("maximum recursion depth exceeded")
        return real_parse(raw, region, phones=phones)

    monkeypatch.setattr(parse_email_module, "parse_message", parse_or_crash)
    hub = await email_hub(make_hub)
    await publish(hub, "poison", poison)
    await publish(hub, "q1", QUESTION)

    async def dead() -> list[Any]:
        async with hub.engine.connect() as conn:
            return list(await dead_letters.list_open(conn, payloads=True))

    letters = await wait_for(dead, what="a dead letter for the message that crashes the parser")
    assert len(letters) == 1 and letters[0].key == "imap:inbox:poison"
    assert letters[0].payload == poison and "RecursionError" in letters[0].reason
    await hub.wait_items("/api/leads", 1)
    assert not (await hub.api("/api/inquiries", dropped="true"))["items"]
