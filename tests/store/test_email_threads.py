"""Email threading and bounce suppression in the intake transaction, against the real database: a reply joins
the lead of the message it answers (stored earlier, sent by leadhub, or earlier in the same batch), machine mail
never does, Message-IDs are recorded once, undeliverable bounce addresses are suppressed once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.envelope import Envelope
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store import trigger_data
from leadhub.store.models import EmailMessage, EmailSuppression, Inquiry, Lead
from leadhub.store.suppression_keys import lookup_keys, suppression_key
from tests.helpers import corpus

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DAYS_4 = timedelta(days=4)


@pytest.fixture
def pipeline(engine: AsyncEngine) -> IntakePipeline:
    sources = {
        "inbox": SourceSpec("imap", {"own_addresses": ["sales@shop.example"]}),
        "second": SourceSpec("imap", {}),
    }
    return IntakePipeline(engine, sources, default_region="RU", clock=lambda: T0)


def email(
    key: str,
    sender: str,
    message_id: str,
    *,
    in_reply_to: str | None = None,
    references: str | None = None,
    extra: str = "",
    body: str = "Hello",
    connector: str = "inbox",
    received_at: datetime | None = None,
) -> Envelope:
    headers = [f"From: {sender}", "To: sales@shop.example", f"Subject: {key}", f"Message-ID: {message_id}"]
    if in_reply_to:
        headers.append(f"In-Reply-To: {in_reply_to}")
    if references:
        headers.append(f"References: {references}")
    raw = ("\r\n".join(headers) + extra + "\r\n\r\n" + body).encode()
    return Envelope(
        key=key,
        channel="email",
        connector=connector,
        payload=raw,
        content_type="message/rfc822",
        received_at=received_at or T0,
    )


async def store(pipeline: IntakePipeline, *envelopes: Envelope) -> None:
    await pipeline.store([pipeline.prepare(e) for e in envelopes])


async def rows(engine: AsyncEngine, table: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(table))).mappings().all())


async def lead_of(engine: AsyncEngine, key: str) -> str | None:
    async with engine.connect() as conn:
        return (await conn.execute(select(Inquiry.lead_id).where(Inquiry.key == key))).scalar_one()


async def test_a_reply_joins_the_lead_of_the_stored_message(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    await store(pipeline, email("first", "Anna <anna@client.example>", "<m1@client.example>"))
    first = await lead_of(engine, "first")
    assert first is not None
    # A colleague answers in the thread (References only, oldest first) from another address.
    reply = email(
        "reply", "Boris <boris@client.example>", "<m2@client.example>", references="<x@y> <m1@client.example>"
    )
    await store(pipeline, reply)
    assert await lead_of(engine, "reply") == first
    assert len(await rows(engine, Lead.__table__)) == 1
    recorded = {r["message_id"]: (r["direction"], r["lead_id"]) for r in await rows(engine, EmailMessage.__table__)}
    assert recorded == {"<m1@client.example>": ("in", first), "<m2@client.example>": ("in", first)}

    # Same contact, a new request days later (outside the lead window): a new lead.
    unrelated = email(
        "new", "Anna <anna@client.example>", "<m3@client.example>", in_reply_to="<unknown@x>", received_at=T0 + DAYS_4
    )
    await store(pipeline, unrelated)
    assert await lead_of(engine, "new") not in (None, first)


async def test_a_reply_to_mail_leadhub_sent_joins_that_lead(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    await store(pipeline, email("first", "anna@client.example", "<m1@client.example>"))
    lead = await lead_of(engine, "first")
    async with engine.begin() as conn:  # what the send_email action records (bare id, without brackets)
        await conn.execute(
            insert(EmailMessage),
            [{"message_id": "survey-1@leadhub.example", "direction": "out", "lead_id": lead, "created_at": T0}],
        )
    await store(
        pipeline,
        email("answer", "anna@client.example", "<m9@client.example>", in_reply_to="<survey-1@leadhub.example>"),
    )
    assert await lead_of(engine, "answer") == lead


async def test_a_reply_to_mail_sent_for_a_folded_lead_joins_the_lead_it_was_folded_into(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """The scheduler records a sent survey with the lead it loaded, after the SMTP send: a contact merge that
    folded that lead meanwhile moved the lead's Message-IDs before this one was there. The reply joined the
    folded lead, which lists leave out; it joins the lead that one became (through a chain of folds too)."""
    await store(pipeline, email("first", "anna@client.example", "<m1@client.example>"))
    head = await lead_of(engine, "first")
    folded, middle = "01JFOLDED0000000000000000A", "01JFOLDED0000000000000000B"
    async with engine.begin() as conn:
        base = dict((await conn.execute(select(Lead.__table__).where(Lead.id == head))).mappings().one())
        await conn.execute(insert(Lead), [base | {"id": middle, "merged_into": head}])
        await conn.execute(insert(Lead), [base | {"id": folded, "merged_into": middle}])
        await conn.execute(
            insert(EmailMessage),
            [{"message_id": "<survey-2@shop.example>", "direction": "out", "lead_id": folded, "created_at": T0}],
        )
    answer = email("answer", "anna@client.example", "<m9@client.example>", in_reply_to="<survey-2@shop.example>")
    await store(pipeline, answer)
    assert await lead_of(engine, "answer") == head


async def test_a_reply_to_a_form_mailer_message_id_without_brackets_joins_its_lead(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """A website's PHP contact form (zammad's test/data/mail/mail068.box, via ../shared/corpus) writes its
    Message-Id without angle brackets. It was not read, so not recorded, and a reply to it opened a lead of its own."""
    raw = corpus("email", "zammad", "mail", "mail068.box").read_bytes()
    form = Envelope(key="form", channel="email", connector="inbox", payload=raw, content_type="message/rfc822")
    await store(pipeline, form)
    first = await lead_of(engine, "form")
    assert first is not None
    reply = email(
        "reply", "boris@client.example", "<r1@client.example>", in_reply_to="<20180802145828.58E7387959@mail.xxxxxx.cz>"
    )
    await store(pipeline, reply)
    assert await lead_of(engine, "reply") == first


async def test_a_copy_of_sent_mail_arriving_first_does_not_hide_the_sent_record(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """A copy of a survey leadhub sent reaches the watched mailbox (own mail, dropped) before the scheduler records
    the send. The copy's Message-ID was recorded with no lead, the send's record was then ignored as a duplicate,
    and the customer's answer days later found no lead to join."""
    await store(pipeline, email("first", "anna@client.example", "<m1@client.example>"))
    lead = await lead_of(engine, "first")
    await store(pipeline, email("copy", "sales@shop.example", "<survey-3@shop.example>"))
    async with engine.begin() as conn:  # what the scheduler records after the SMTP send
        await trigger_data.record_sent(conn, [trigger_data.sent_row("<survey-3@shop.example>", lead, T0)])
    answer = email(
        "answer", "anna@client.example", "<a3@client.example>", in_reply_to="<survey-3@shop.example>",
        received_at=T0 + DAYS_4,
    )  # fmt: skip
    await store(pipeline, answer)
    assert await lead_of(engine, "answer") == lead


async def test_a_send_recorded_over_an_id_kept_without_a_lead_takes_it(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Releases before this one recorded a dropped copy's Message-ID with no lead; the send's record, ignored as a
    duplicate, left the survey's answer without its lead and a retried send without its `out` row."""
    await store(pipeline, email("first", "anna@client.example", "<m1@client.example>"))
    lead = await lead_of(engine, "first")
    async with engine.begin() as conn:
        kept = {"message_id": "<survey-4@shop.example>", "direction": "in", "lead_id": None, "created_at": T0}
        await conn.execute(insert(EmailMessage), [kept])
        await trigger_data.record_sent(conn, [trigger_data.sent_row("<survey-4@shop.example>", lead, T0)])
        assert await trigger_data.send_state(conn, "anna@client.example", "<survey-4@shop.example>") == (None, True)
    answer = email(
        "answer", "anna@client.example", "<a4@client.example>", in_reply_to="<survey-4@shop.example>",
        received_at=T0 + DAYS_4,
    )  # fmt: skip
    await store(pipeline, answer)
    assert await lead_of(engine, "answer") == lead


async def test_replies_in_the_same_batch_join_the_lead_opened_there(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """A backfill brings a question and its follow-up in one batch: one lead."""
    await store(
        pipeline,
        email("q", "anna@client.example", "<q@client.example>"),
        email("f", "anna@client.example", "<f@client.example>", in_reply_to="<q@client.example>"),
    )
    assert await lead_of(engine, "f") == await lead_of(engine, "q") is not None
    assert len(await rows(engine, Lead.__table__)) == 1


async def test_a_reply_in_a_batch_holding_its_message_twice_joins_that_lead(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """A backfill of two mailboxes: the question (in both), and a colleague's reply between the two copies. The
    reply looked for the copy stored last, not stored yet when the reply's turn came, and opened a lead of its own."""
    await store(
        pipeline,
        email("q", "anna@client.example", "<q@client.example>"),
        email("r", "boris@client.example", "<r@client.example>", in_reply_to="<q@client.example>"),
        email("q2", "anna@client.example", "<q@client.example>", connector="second"),
    )
    assert await lead_of(engine, "r") == await lead_of(engine, "q") == await lead_of(engine, "q2") is not None
    assert len(await rows(engine, Lead.__table__)) == 1


async def test_a_reply_ahead_of_its_message_in_a_batch_joins_that_lead(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """Two mailboxes backfilled together: a colleague's reply (in one) comes before the question (in the other).
    The reply found no lead yet and opened its own, and the question then opened a second one."""
    await store(
        pipeline,
        email("r", "boris@client.example", "<r@client.example>", in_reply_to="<q@client.example>", connector="second"),
        email("q", "anna@client.example", "<q@client.example>", received_at=T0 - timedelta(minutes=5)),
    )
    assert await lead_of(engine, "r") == await lead_of(engine, "q") is not None
    assert len(await rows(engine, Lead.__table__)) == 1


async def test_the_same_message_through_two_mailboxes_is_one_lead(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    await store(pipeline, email("a", "anna@client.example", "<same@client.example>"))
    await store(pipeline, email("b", "anna@client.example", "<same@client.example>", connector="second"))
    assert await lead_of(engine, "a") == await lead_of(engine, "b")
    assert len(await rows(engine, EmailMessage.__table__)) == 1


async def test_a_mailer_reusing_one_message_id_does_not_put_strangers_into_one_lead(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """A site's mailer writes the same Message-ID on every message. Taken for the same message through a second
    mailbox, each later sender's inquiry joined the first sender's lead: no lead of their own for a manager to see."""
    await store(pipeline, email("anna", "anna@client.example", "<contact-form@site.example>"))
    await store(
        pipeline,
        email("olga", "olga@other.example", "<contact-form@site.example>"),
        email("ivan", "ivan@third.example", "<contact-form@site.example>"),
        email("olga-copy", "Olga@Other.example", "<contact-form@site.example>", connector="second"),
    )
    leads = {key: await lead_of(engine, key) for key in ("anna", "olga", "ivan", "olga-copy")}
    assert len({leads["anna"], leads["olga"], leads["ivan"]}) == 3, leads
    assert leads["olga-copy"] == leads["olga"]  # the same message through a second mailbox is still one lead


async def test_machine_mail_in_a_thread_never_joins_a_lead(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    await store(pipeline, email("first", "anna@client.example", "<m1@client.example>"))
    ooo = email(
        "ooo",
        "anna@client.example",
        "<ooo@client.example>",
        in_reply_to="<m1@client.example>",
        extra="\r\nAuto-Submitted: auto-replied",
    )
    own = email("own", "sales@shop.example", "<own@shop.example>", in_reply_to="<m1@client.example>")
    await store(pipeline, ooo, own)
    inquiries = {r["key"]: r for r in await rows(engine, Inquiry.__table__)}
    assert inquiries["ooo"]["dropped"].startswith("auto-reply") and inquiries["ooo"]["lead_id"] is None
    assert inquiries["own"]["dropped"] == "own mail (sent by leadhub)" and inquiries["own"]["lead_id"] is None
    assert len(await rows(engine, Lead.__table__)) == 1


def dsn(key: str, recipient: str, status: str, action: str = "failed") -> Envelope:
    raw = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.shop.example>\r\nTo: sales@shop.example\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <{key}@mx.shop.example>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.shop.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {status.replace('.', '')[0]}50 {status} mailbox problem\r\n--b--\r\n"
    ).encode()
    return Envelope(key=key, channel="email", connector="inbox", payload=raw, content_type="message/rfc822")


async def test_undeliverable_bounces_suppress_the_address_once(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    await store(
        pipeline,
        dsn("b1", "Gone@Client.example", "5.1.1"),
        dsn("b2", "gone@client.example", "5.1.1"),  # a second bounce of the same address in the batch
        dsn("b3", "full@client.example", "5.2.2"),  # mailbox full: the address is fine
        dsn("b4", "slow@client.example", "4.4.7", action="delayed"),
    )
    await store(pipeline, dsn("b5", "gone@client.example", "5.1.1"))  # and in a later batch
    suppressed = await rows(engine, EmailSuppression.__table__)
    assert [(r["address"], r["reason"]) for r in suppressed] == [("gone@client.example", "bounce")]
    assert "status 5.1.1" in suppressed[0]["detail"]
    inquiries = await rows(engine, Inquiry.__table__)
    assert all(r["dropped"] == "bounce (delivery-status report)" and r["lead_id"] is None for r in inquiries)
    assert not await rows(engine, Lead.__table__)


async def test_a_customer_writing_about_closed_addresses_suppresses_none(
    pipeline: IntakePipeline, engine: AsyncEngine
) -> None:
    """A bounce-like subject and "user unknown" in a customer's prose: the addresses they name stay mailable."""
    raw = (
        b"From: Anna Client <anna@client.example>\r\nTo: sales@shop.example\r\n"
        b"Subject: Mail delivery problem with your invoices\r\nMessage-ID: <x2@client.example>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Hello, your invoices never reach us. Please send them to accounting@client.example from now on,\r\n"
        b"the old address invoices@client.example was closed and our mail server says user unknown.\r\nAnna\r\n"
    )
    await store(pipeline, Envelope(key="invoices", channel="email", connector="inbox", payload=raw))
    assert await rows(engine, Inquiry.__table__)
    assert not await rows(engine, EmailSuppression.__table__)


async def test_a_complaint_suppresses_the_complainant(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    """An ARF feedback report (as in sisimai's arf-*.eml): the person who marked our mail as spam."""
    raw = (
        b"From: feedback@isp.example\r\nTo: sales@shop.example\r\nSubject: Abuse report\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        b"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\n"
        b"Original-Rcpt-To: <Angry@Client.example>\r\n"
        b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: sales@shop.example\r\nSubject: Offer\r\n--b--\r\n"
    )
    await store(pipeline, Envelope(key="arf", channel="email", connector="inbox", payload=raw))
    suppressed = await rows(engine, EmailSuppression.__table__)
    assert [(r["address"], r["reason"]) for r in suppressed] == [("angry@client.example", "complaint")]
    assert [r["dropped"] for r in await rows(engine, Inquiry.__table__)] == ["complaint report (ARF feedback-report)"]


async def test_a_redelivered_batch_changes_nothing(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    batch = [email("first", "anna@client.example", "<m1@client.example>"), dsn("b1", "gone@client.example", "5.1.1")]
    await store(pipeline, *batch)
    before = (await rows(engine, EmailMessage.__table__), await rows(engine, EmailSuppression.__table__))
    await store(pipeline, *batch)
    assert (await rows(engine, EmailMessage.__table__), await rows(engine, EmailSuppression.__table__)) == before


async def test_nul_bytes_anywhere_in_a_mail_still_store(pipeline: IntakePipeline, engine: AsyncEngine) -> None:
    """PostgreSQL refuses NUL in text: a subject, name, attachment name and body holding one must still store."""
    raw = (
        b"From: =?utf-8?Q?Ni=00na?= <nina@client.example>\r\nSubject: =?utf-8?Q?a=00b?=\r\nMessage-ID: <nul@x>\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\x00there\r\n'
        b'--b\r\nContent-Type: application/pdf; name="=?utf-8?Q?f=00.pdf?="\r\n\r\n%PDF\x00\r\n--b--\r\n'
    )
    await store(pipeline, Envelope(key="nul", channel="email", connector="inbox", payload=raw))
    [inquiry] = await rows(engine, Inquiry.__table__)
    assert inquiry["lead_id"] is not None and inquiry["message"] == "hithere"
    assert [(a["filename"], a["size"]) for a in inquiry["fields"]["attachments"]] == [("f.pdf", 5)]


def test_the_suppression_key_is_the_address_with_its_domain_in_ascii() -> None:
    """A bounce reports the ASCII form; a rule may write the domain as people read it: both are one entry."""
    assert suppression_key(" Maria@Пример.РФ ") == "maria@xn--e1afmkfd.xn--p1ai"
    assert suppression_key("maria@xn--e1afmkfd.xn--p1ai") == "maria@xn--e1afmkfd.xn--p1ai"
    assert suppression_key("Ivan@Example.COM") == "ivan@example.com"
    too_long = "a@" + "я" * 70 + ".рф"  # no ASCII form (a label over 63): kept as written
    assert suppression_key(too_long) == too_long
    assert lookup_keys("maria@xn--e1afmkfd.xn--p1ai") == {"maria@xn--e1afmkfd.xn--p1ai", "maria@пример.рф"}
    assert lookup_keys("not an address") == {"not an address"}
    assert suppression_key("Пример") == "пример", "text without an @ has no domain to write in ASCII"
