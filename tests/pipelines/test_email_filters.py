"""Which mail must never become a lead, and why: header sets of real auto-responders (Exchange, Gmail, Zimbra,
cloud vacation replies as collected in Zammad's out_of_office_check_spec), reports, list mail, our own mail;
and the ordinary mail that must stay a lead although it looks similar."""

from __future__ import annotations

import pytest

from leadhub.pipelines.email_filters import drop_reason
from leadhub.pipelines.email_parse import parse_message
from tests.pipelines.test_email_parse import draft, mail

DROPPED = {
    "exchange out of office": (
        ["X-MS-Exchange-Inbox-Rules-Loop: sales@example.com", "X-Auto-Response-Suppress: All", "Subject: Hi"],
        "out of office (Exchange inbox rule)",
    ),
    "exchange automatic reply": (
        ["X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply", "Subject: Automatic reply: price"],
        "auto-reply (X-Auto-Response-Suppress: dr, rn, nrn, oof, autoreply)",
    ),
    "gmail vacation": (
        ["Auto-Submitted: auto-replied", "Subject: Vacation until Monday"],
        "out of office (Auto-Submitted: auto-replied)",
    ),
    "zimbra vacation": (["Auto-Submitted: auto-replied (zimbra; vacation)"], "out of office"),
    "cloud vacation": (["Auto-Submitted: auto-replied; owner-email=me@example.com"], "auto-reply (Auto-Submitted"),
    "auto-generated": (["Auto-Submitted: auto-generated"], "auto-reply (Auto-Submitted: auto-generated)"),
    "x-autoreply": (["X-Autoreply: yes"], "auto-reply (X-Autoreply)"),
    "x-autorespond": (["X-Autorespond: 1"], "auto-reply (X-Autorespond)"),
    "precedence bulk": (["Precedence: bulk"], "auto-reply (Precedence: bulk)"),
    "precedence junk": (["Precedence: junk"], "auto-reply (Precedence: junk)"),
    "precedence auto_reply": (["Precedence: auto_reply"], "auto-reply (Precedence: auto_reply)"),
    "x-loop": (["X-Loop: yes"], "auto-reply (X-Loop)"),
    "russian out of office subject (Автоответ)": (
        ["Subject: =?utf-8?B?0JDQstGC0L7QvtGC0LLQtdGCOiBSZTog0LfQsNGP0LLQutCw?="],
        "out of office (subject)",
    ),
    "automatic reply subject": (["Subject: Automatic reply: Re: price"], "out of office (subject)"),
    "old outlook subject": (["Subject: Out of Office AutoReply: offer"], "out of office (subject)"),
    "german subject alone": (["Subject: Abwesenheitsnotiz"], "out of office (subject)"),
    "absence with auto-submitted": (
        ["Auto-Submitted: auto-replied", "Subject: Absence notice"],
        "out of office (Auto-Submitted: auto-replied)",
    ),
    "vacation with x-autoreply": (["X-Autoreply: yes", "Subject: Vacation"], "auto-reply (X-Autoreply)"),
    "list-id": (["List-Id: <sales.lists.example.com>"], "list mail (List-Id)"),
    "list-unsubscribe": (["List-Unsubscribe: <mailto:u@example.com>"], "list mail (List-Unsubscribe)"),
    "mailer-daemon": (["From: Mail Delivery System <MAILER-DAEMON@mx.example.com>"], "bounce (sender mailer-daemon)"),
    "x-failed-recipients": (["X-Failed-Recipients: gone@example.com"], "bounce (X-Failed-Recipients)"),
    "null sender": (["Return-Path: <>", "Subject: Notice"], "auto-generated (null sender)"),
    "null sender bounce subject": (["Return-Path: <>", "Subject: Undelivered Mail"], "bounce (null sender)"),
}


@pytest.mark.parametrize("case", DROPPED)
def test_machine_mail_is_dropped_with_its_reason(case: str) -> None:
    headers, reason = DROPPED[case]
    base = [] if any(h.startswith("From:") for h in headers) else ["From: Someone <someone@example.com>"]
    result = draft(mail(*base, *headers))
    assert result.dropped is not None and result.dropped.startswith(reason), result.dropped


def _report(report_type: str, part_type: str, part_body: str) -> bytes:
    return (
        "From: reports@example.net\r\nSubject: Report\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/plain\r\n\r\nHuman readable part\r\n"
        f"--r\r\nContent-Type: {part_type}\r\n\r\n{part_body}\r\n--r--\r\n"
    ).encode()


def test_reports_are_dropped_by_kind() -> None:
    dsn = _report(
        "delivery-status",
        "message/delivery-status",
        "Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; gone@example.org\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n",
    )
    result = draft(dsn)
    assert result.dropped == "bounce (delivery-status report)"
    assert result.fields["bounce"] == [
        {"address": "gone@example.org", "status": "5.1.1", "action": "failed", "permanent": True, "undeliverable": True}
    ]
    arf = _report("feedback-report", "message/feedback-report", "Feedback-Type: abuse\r\nVersion: 1\r\n")
    assert draft(arf).dropped == "complaint report (ARF feedback-report)"
    mdn = _report(
        "disposition-notification",
        "message/disposition-notification",
        "Final-Recipient: rfc822; a@example.org\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n",
    )
    assert draft(mdn).dropped == "read receipt (disposition-notification)"


def test_a_delayed_delivery_is_dropped_but_not_undeliverable() -> None:
    delayed = _report(
        "delivery-status",
        "message/delivery-status",
        "Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; slow@example.org\r\n"
        "Action: delayed\r\nStatus: 4.4.7\r\n",
    )
    result = draft(delayed)
    assert result.dropped == "bounce (delivery-status report)"
    assert result.fields["bounce"][0]["undeliverable"] is False


def test_a_bounce_text_full_of_blank_lines_is_read_in_one_pass() -> None:
    """`^\\s*` at every line start ran over all the blank lines below it again: the 50,000 characters searched
    took over two minutes on the event loop."""
    body = "This is the mail system.\r\n\r\n" + " \r\n" * 40_000 + "<gone@example.org>: user unknown\r\n"
    result = draft(mail("From: MAILER-DAEMON@mx.example.com", "Subject: Undelivered Mail", body=body))
    assert result.dropped == "bounce (sender mailer-daemon)"


def test_own_addresses_are_dropped() -> None:
    raw = mail("From: Leadhub <Sales@Example.com>", "Subject: Your survey")
    assert draft(raw, own_addresses=["sales@example.com"]).dropped == "own mail (sent by leadhub)"
    assert draft(raw, own_addresses=["other@example.com"]).dropped is None


STAYS_A_LEAD = {
    "plain inquiry": ["Subject: Need a quote for 200 units"],
    "auto-submitted no": ["Auto-Submitted: no", "Subject: Re: your offer"],
    "reply to our newsletter": ["Subject: Re: November offers", "In-Reply-To: <n1@example.com>"],
    "delivery question from a customer": ["Subject: Delivery failed? Order 123 was not delivered"],
    "precedence first-class": ["Precedence: first-class"],
    "suppress only delivery receipts": ["X-Auto-Response-Suppress: DR, RN, NRN"],
    "form mailer": ["From: no-reply@site.example", "Reply-To: visitor@example.org", "Subject: New form entry"],
    "vacation word in a human subject": ["Subject: Quote for our vacation homes project"],
    # Subjects that open with an auto-reply word but go on as a customer's question.
    "vacation rental": ["Subject: Vacation rental for 4 people in July?"],
    "absence management": ["Subject: Absence management module - price for 50 users"],
    "auto response times": ["Subject: Auto response times of your service"],
    "out of office furniture": ["Subject: Out of office furniture for 12 desks"],
    # "autoreply" matched two ways per word: 40 of them before a non-matching end took hours (backtracking).
    "many auto-reply words then text": ["Subject: " + "autoreply " * 40 + "test for our support team"],
}


@pytest.mark.parametrize("case", STAYS_A_LEAD)
def test_mail_from_people_stays_a_lead(case: str) -> None:
    headers = STAYS_A_LEAD[case]
    base = [] if any(h.startswith("From:") for h in headers) else ["From: Client <client@example.org>"]
    body = "Hello, my order was not delivered, the courier never came. Call me: 8 916 1234567"
    parsed = parse_message(mail(*base, *headers, body=body))
    assert drop_reason(parsed, ["sales@example.com"]) is None


def test_a_customer_forwarding_a_mail_about_an_undelivered_parcel_stays_a_lead() -> None:
    raw = (
        b"From: Client <client@example.org>\r\nSubject: Undelivered parcel, see the shipping mail\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nMy order did not arrive, your shipping mail is attached.\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: shop@example.com\r\nSubject: Shipped\r\n\r\nOn its way\r\n"
        b"--b--\r\n"
    )
    assert draft(raw).dropped is None


# Customers write about deliveries in the words bounces use: a parcel "could not be delivered to the following
# address", a date like 4.5.24 (which reads as an enhanced status code), their own mail server.
CUSTOMER_DELIVERY_MAIL = {
    "parcel to the following address": (
        "Delivery problem with order 1234",
        "Your courier says the parcel could not be delivered to the following address: Hauptstr. 5. Please resend.",
    ),
    "a short date": ("Delivery failed", "I ordered on 4.5.24 and nothing came. Order 1234."),
    "an IT inquiry": (
        "Mail delivery issues - need an IT partner",
        "Our mail server drops messages, can you quote a migration to Microsoft 365? Our SMTP relay is old.",
    ),
    "an undelivered parcel": (
        "Undelivered parcel, order 1234",
        "The parcel was not delivered to the following address: Hauptstr. 5, 10115 Berlin. Please check with DHL.",
    ),
    "a non-delivery complaint": (
        "Non-delivery of my order",
        "The parcel went back to your warehouse. Please send it to the following recipient: Anna Berg, Hauptstr. 5.",
    ),
}


@pytest.mark.parametrize("case", CUSTOMER_DELIVERY_MAIL)
def test_a_customer_writing_about_a_delivery_stays_a_lead(case: str) -> None:
    subject, body = CUSTOMER_DELIVERY_MAIL[case]
    raw = mail("From: Anna Client <anna@example.org>", "To: sales@shop.example", f"Subject: {subject}", body=body)
    assert drop_reason(parse_message(raw), ["sales@shop.example"]) is None


def test_a_customer_attaching_the_carriers_mail_stays_a_lead() -> None:
    """The attached mail went through mail servers (Received) like a returned original, but nothing else says bounce."""
    raw = (
        b"From: Anna Client <anna@example.org>\r\nTo: sales@shop.example\r\n"
        b"Subject: Parcel returned to sender - please resend order 1234\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\n"
        b"My parcel came back, the DHL mail is attached. Please send it again.\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Received: from mx.dhl.example by mx.example.org; Mon, 6 May 2024 09:00:00 +0200\r\n"
        b"From: noreply@dhl.example\r\nTo: anna@example.org\r\nSubject: Your parcel\r\n\r\nReturned\r\n--b--\r\n"
    )
    assert draft(raw).dropped is None


def _relay_bounce(subject: str, text: str, returned_type: str) -> bytes:
    """A bounce from a relay with an ordinary sender address: only its subject, text and returned part tell."""
    return (
        f"From: AntiVirus Gateway <gateway@relay.example>\r\nTo: sales@shop.example\r\nSubject: {subject}\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
        f"--b\r\nContent-Type: {returned_type}\r\n\r\n"
        "Received: from shop.example by relay.example\r\nFrom: sales@shop.example\r\nTo: gone@client.example\r\n"
        "Subject: Offer\r\n\r\n--b--\r\n"
    ).encode()


def test_mail_words_with_a_returned_original_are_a_bounce() -> None:
    weak = "Delivery to this recipient did not work, see the SMTP log:\r\n\r\ngone@client.example"
    assert draft(_relay_bounce("Delivery failure", weak, "message/rfc822")).dropped == (
        "bounce (subject, text and returned message)"
    )
    silent = draft(_relay_bounce("Undeliverable: Offer", "See the attached headers.", "text/rfc822-headers"))
    assert silent.dropped == "bounce (subject and returned headers)"


def test_a_customer_naming_addresses_under_a_bounce_subject_suppresses_none() -> None:
    """Their prose says "user unknown" (so the mail is dropped as a bounce), but no status code stands beside the
    addresses: neither the customer's new address nor the closed one is taken for undeliverable."""
    result = draft(
        mail(
            "From: Anna Client <anna@client.example>",
            "To: sales@shop.example",
            "Subject: Mail delivery problem with your invoices",
            body="Hello, your invoices never reach us. Please send them to accounting@client.example from now on,\r\n"
            "the old address invoices@client.example was closed and our mail server says user unknown.\r\nAnna\r\n",
        )
    )
    assert result.fields["bounce"]
    assert not any(item["undeliverable"] for item in result.fields["bounce"])


def test_a_text_only_bounce_with_a_status_beside_the_address_marks_it_undeliverable() -> None:
    raw = mail(
        "From: AntiVirus Gateway <gateway@relay.example>",
        "To: sales@shop.example",
        "Subject: Delivery failure",
        body="Your message could not be delivered.\r\n\r\n<gone@client.example>: 550 5.1.1 user unknown\r\n",
    )
    result = draft(raw)
    assert result.dropped == "bounce (subject and text)"
    assert result.fields["bounce"] == [
        {"address": "gone@client.example", "status": "5.1.1", "action": None, "permanent": True, "undeliverable": True}
    ]
