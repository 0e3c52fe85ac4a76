"""The email parse step on constructed messages: charsets and broken encodings, bodies, attachments, phones,
the contact a lead gets, size limit and crash handling."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from leadhub.envelope import Envelope
from leadhub.pipelines import parse_email as parse_email_module
from leadhub.pipelines.email_charset import decode_bytes, decode_header_value
from leadhub.pipelines.email_parse import parse_message
from leadhub.pipelines.email_phones import find_phones
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import InquiryDraft
from leadhub.pipelines.parse_email import parse_email


def mail(*headers: str, body: bytes | str = b"Hello", content_type: str = "text/plain; charset=utf-8") -> bytes:
    """A message from header lines (bytes allowed via latin-1 str) and a body."""
    lines = [*headers, f"Content-Type: {content_type}"] if content_type else list(headers)
    head = "\r\n".join(lines).encode("latin-1")
    return head + b"\r\n\r\n" + (body.encode("utf-8") if isinstance(body, str) else body)


def draft(raw: bytes, **options: Any) -> InquiryDraft:
    return parse_email(Envelope(key="t:1", channel="email", connector="inbox", payload=raw), options)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?windows-1251?B?z/Do4uXy?=", "Привет"),
        ("=?koi8-r?B?8NLJ18XU?=", "Привет"),
        ("=?utf-8?B?0J/RgA==?= =?utf-8?B?0LjQstC10YI=?=", "Привет"),  # adjacent words: space dropped
        ("=?utf-8?B?0J/R?= =?utf-8?B?gNC40LLQtdGC?=", "Привет"),  # a character split across two words
        ("=?iso-2022-jp?B?GyRCJUYlOSVIGyhC?=", "テスト"),
        ("=?unicode-1-1-utf-7?Q?+ANw-bermittlung?=", "Übermittlung"),
        ("=?x-unknown?Q?caf=C3=A9?=", "café"),  # unknown label: UTF-8 guessed
        ("=?unknown-8bit?Q?caf=E9?=", "café"),  # not UTF-8: cp1252
        ("=?utf-8?Q?a_b?= plain =?iso-8859-1?Q?=E9?=", "a b plain é"),
        ("=?utf-8?B?broken base64!?=", "=?utf-8?B?broken base64!?="),  # not an encoded-word: kept as written
        ('"=?utf-8?B?0JjQstCw0L0=?=" <ivan@example.com>', '"Иван" <ivan@example.com>'),  # quoted (non-standard)
    ],
)
def test_encoded_words(header: str, expected: str) -> None:
    assert decode_header_value(header) == expected


def test_microsoft_iso_2022_jp_signs() -> None:
    """Outlook's ISO-2022-JP carries NEC row-13 signs (①) that Python's codecs refuse (Zammad mail099)."""
    assert decode_bytes(b"\x1b$B-!#1ET\x1b(B ok", "ISO-2022-JP") == "①１都 ok"


def test_mislabelled_cyrillic_is_recovered() -> None:
    """KOI8-R bytes labelled windows-1251, and windows-1251 bytes labelled iso-8859-1, read as Russian."""
    text = "Здравствуйте, хочу заказать доставку на завтра"
    assert decode_bytes(text.encode("koi8-r"), "windows-1251") == text
    assert decode_bytes(text.encode("cp1251"), "iso-8859-1") == text
    assert decode_bytes(text.encode("cp1251"), "windows-1251") == text
    german = "Grüße aus München, schöne Äpfel"
    assert decode_bytes(german.encode("cp1252"), "iso-8859-1") == german  # real Latin-1 text is left alone
    # Found by an audit: cp1251 under a UTF-8 label came out as U+FFFD, under an unknown label as Latin soup.
    assert decode_bytes(text.encode("cp1251"), "utf-8") == text
    assert decode_bytes(text.encode("cp1251"), "../../etc") == text
    stray = text.encode() + b" \xff " + text.encode()  # real UTF-8 with one stray byte stays UTF-8
    assert decode_bytes(stray, "utf-8") == f"{text} \ufffd {text}"
    assert decode_bytes(german.encode("cp1252"), "utf-8") == german  # Latin text under a UTF-8 label


def test_raw_8bit_headers_use_the_declared_charset() -> None:
    raw = mail(
        "From: =?utf-8?Q?Ivan?= <ivan@example.com>",
        "Subject: " + "Заявка на расчёт".encode("cp1251").decode("latin-1"),
        content_type="text/plain; charset=windows-1251",
        body="Добрый день".encode("cp1251"),
    )
    parsed = parse_message(raw)
    assert parsed.subject == "Заявка на расчёт"
    assert parsed.text == "Добрый день"


def test_addresses_display_names_and_ids() -> None:
    raw = mail(
        "From: =?utf-8?B?0JzRjtC70LvQtdGALCDQkdC10YDQvdC0?= <Bernd@Example.com>",  # "Мюллер, Бернд": a comma
        'To: "Sales" <sales@example.com>, other@example.com',
        "Cc: MAILER-DAEMON (Mail Delivery System) <x@example.com>",
        "Reply-To: <reply@example.com>",
        "Message-ID: <abc@mail.example.com>",
        "In-Reply-To: <prev@leadhub.example>",
        "References: <root@x> <mid@x>\r\n <prev@leadhub.example>",
        "Date: Mon, 23 Nov 2026 10:00:00 +0300",
        "Subject: Re: price",
    )
    parsed = parse_message(raw)
    assert (parsed.sender.email, parsed.sender.name) == ("Bernd@Example.com", "Мюллер, Бернд")
    assert [(a.email, a.name) for a in parsed.to] == [("sales@example.com", "Sales"), ("other@example.com", "")]
    assert parsed.cc[0].name == "MAILER-DAEMON"
    assert parsed.message_id == "<abc@mail.example.com>"
    assert parsed.in_reply_to == ["<prev@leadhub.example>"]
    assert parsed.references == ["<root@x>", "<mid@x>", "<prev@leadhub.example>"]
    assert parsed.date is not None and parsed.date.isoformat() == "2026-11-23T10:00:00+03:00"
    result = draft(raw)
    assert result.message_id == "<abc@mail.example.com>"
    assert result.thread_refs == ["<prev@leadhub.example>", "<mid@x>", "<root@x>"]  # most specific first
    assert result.title == "Re: price"


def test_html_only_body_becomes_text() -> None:
    html = (
        "<html><head><style>p{color:red}</style><title>t</title></head><body><p>Hello&nbsp;there,</p>"
        "<div>we need <b>50</b> units.<br>Call +7 (916) 123-45-67</div><script>alert(1)</script></body></html>"
    )
    result = draft(mail("From: a@example.com", body=html, content_type="text/html; charset=utf-8"))
    assert result.message == "Hello there,\n\nwe need 50 units.\nCall +7 (916) 123-45-67"
    assert result.fields["text_from_html"] is True
    assert result.fields["phones"] == ["+7 (916) 123-45-67"]


@pytest.mark.parametrize("junk", ["<a ", '<a b="', "<a\n", "<!-- x>"])
def test_html_with_unclosed_tags_is_read_in_one_pass(junk: str) -> None:
    """html.parser re-scanned the rest of the body from every unclosed `<` (CVE-2025-6069): 40,000 of them took
    over ten minutes on the event loop, stopping the daemon, and every redelivery did it again."""
    html = "<p>Please call me back</p>" + junk * 40_000
    result = draft(mail("From: a@example.com", body=html, content_type="text/html; charset=utf-8"))
    assert result.message is not None and result.message.startswith("Please call me back")


def test_html_markup_edge_cases_become_the_visible_text() -> None:
    html = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><a title="x > y" href="#">Link</a> and'
        " a &lt; b < c<br/><script>if (a < b) { x = '</p>' }</script><!-- hidden <b>x</b> -->"
        "<style>p > b {}</style><p>Tom &amp; Jerry</p><script/>after<!-- unclosed"
    )
    result = draft(mail("From: a@example.com", body=html, content_type="text/html; charset=utf-8"))
    assert result.message == "Link and a < b < c\n\nTom & Jerry\nafter"


def test_deeply_nested_comments_in_an_address_header_lose_only_that_header() -> None:
    """The stdlib's address parser recurses per `(`: the RecursionError read as "MIME parts nested too deeply"
    and dead-lettered the whole mail."""
    raw = mail("From: " + "(" * 5000 + "Ann <ann@example.com>", "Subject: Quote", body="Please call me")
    result = draft(raw)
    assert (result.identity.email, result.title, result.message) == ("ann@example.com", "Quote", "Please call me")


def test_a_long_address_header_without_an_address_is_read_in_one_pass() -> None:
    """The loose address search started again inside every run of letters: 40,000 of them in a From took 8 s on
    the event loop (this one, over two minutes), stopping the daemon."""
    sender = "From: Ann <" + "a" * 250_000 + " b>"
    raw = mail(sender, "Reply-To: Ann <ann@example.com>", "Subject: Quote", body="Call me")
    result = draft(raw)
    assert (result.identity.email, result.title, result.message) == ("ann@example.com", "Quote", "Call me")


def test_attachments_metadata_with_rfc2231_names() -> None:
    pdf = b"%PDF-1.4 test"
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"
        b"--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain text\r\n"
        b"--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML text</p>\r\n--b2--\r\n"
        b"--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''%D0%A1%D1%87%D1%91%D1%82.pdf\r\n\r\n"
        + base64.b64encode(pdf)
        + b'\r\n--b1\r\nContent-Type: image/png; name="=?utf-8?B?0YTQvtGC0L4ucG5n?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
        b"--b1\r\nContent-Type: text/plain\r\nContent-Disposition: attachment;\r\n"
        b" filename*0*=utf-8''%D0%B4%D0%BB%D0%B8%D0%BD;\r\n filename*1*=%D0%BD%D0%BE%D0%B5%20%D0%B8%D0%BC%D1%8F.txt\r\n"
        b"\r\nx\r\n--b1--\r\n"
    )
    result = draft(raw)
    assert result.message == "Plain text"
    names = [(a["filename"], a["content_type"], a["size"]) for a in result.fields["attachments"]]
    assert names[0] == ("Счёт.pdf", "application/pdf", len(pdf))
    assert result.fields["attachments"][0]["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert names[1][:2] == ("фото.png", "image/png")
    assert names[2][:2] == ("длинное имя.txt", "text/plain")


def test_broken_headers_are_repaired() -> None:
    """An mbox From_ line, a junk line before the headers, a fold that lost its indent (Zammad mail054/068)."""
    raw = (
        b"From sender@example.com Mon Nov 23 10:00:00 2026\r\n"
        b"X-Long: first part\r\ncontinued without indent\r\n"
        b"From: Anna <anna@example.com>\r\nSubject: Order\r\n\r\nBody"
    )
    parsed = parse_message(raw)
    assert (parsed.sender.email, parsed.subject, parsed.text) == ("anna@example.com", "Order", "Body")
    junk = b"---- Original email message ----\r\nFrom: b@example.com\r\nSubject: Hi\r\n\r\nBody"
    assert parse_message(junk).sender.email == "b@example.com"


def test_wrong_multipart_boundary_is_recovered() -> None:
    raw = (
        b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="declared"\r\n\r\n'
        b"--used\r\nContent-Type: text/plain\r\n\r\nThe real text\r\n--used--\r\n"
    )
    assert parse_message(raw).text == "The real text"


def test_contact_is_reply_to_for_form_mailers() -> None:
    """A website form mailer sends From no-reply with the visitor in Reply-To: the lead is the visitor."""
    raw = mail('From: "Site form" <no-reply@site.example>', 'Reply-To: "Olga K" <olga@example.ru>', "Subject: Form")
    assert (draft(raw).identity.email, draft(raw).identity.name) == ("olga@example.ru", "Olga K")
    person = mail("From: Petr <petr@example.ru>", "Reply-To: office@example.ru")
    assert draft(person).identity.email == "petr@example.ru"
    no_address = mail('From: "Me" <>', "Reply-To: <me@example.cn>")
    assert draft(no_address).identity.email == "me@example.cn"


def test_phone_hints_without_a_region_take_labelled_numbers() -> None:
    body = "Good day!\r\nPlease call back.\r\n--\r\nIvan\r\nTel.: 8 (495) 123-45-67\r\n"
    result = draft(mail("From: ivan@example.ru", body=body))
    assert result.fields["phones"] == ["8 (495) 123-45-67"]
    with_region = draft(mail("From: ivan@example.ru", body="звоните 8 916 123 45 67"), default_region="RU")
    assert with_region.fields["phones"] == ["8 916 123 45 67"]


def test_phones_in_the_text_are_hints_not_the_senders_phone() -> None:
    """The text holds quoted replies and forwarded signatures (ours too): its numbers are not the sender's."""
    body = "Thanks, agreed.\r\n\r\n> --\r\n> Olga, sales\r\n> +7 495 123-45-67\r\n"
    result = draft(mail("From: Anna <anna@example.ru>", body=body))
    assert result.fields["phones"] == ["+7 495 123-45-67"]
    assert (result.identity.email, result.identity.phone_raw) == ("anna@example.ru", None)


def test_too_large_is_dropped_with_its_size_and_keeps_the_payload() -> None:
    raw = mail("From: a@example.com", body=b"x" * 5000)
    result = draft(raw, max_message_bytes=2048)
    assert result.dropped == f"too large: {len(raw)} bytes"
    assert result.envelope.payload == raw
    head = mail("From: Big Sender <big@example.com>", "Subject: Scans", body=b"x" * 100)
    truncated = Envelope(key="t:2", channel="email", connector="inbox", payload=head, meta={"too_large": "30000000"})
    big = parse_email(truncated, {})  # the connector kept only the first bytes of a 30 MB message
    assert big.dropped == "too large: 30000000 bytes"
    assert (big.identity.email, big.title) == ("big@example.com", "Scans")
    assert draft(raw).dropped is None  # the default limit is 25 MB


def test_a_parser_crash_is_a_permanent_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever escapes the tolerant parser dead-letters the envelope (with its raw bytes) instead of retrying."""

    def explode(raw: bytes, region: str | None = None, *, phones: bool = True) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(parse_email_module, "parse_message", explode)
    with pytest.raises(PermanentError, match="RecursionError"):
        draft(mail("From: a@example.com"))


def test_parts_nested_a_thousand_deep_are_one_clear_permanent_error() -> None:
    """Found by an audit: the parser's RecursionError was retried with policy.default, failing the same way slower."""
    raw = b"From: a@example.com\r\nSubject: deep\r\n"
    for depth in range(1000):
        raw += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (depth, depth)
    raw += b"Content-Type: text/plain\r\n\r\nhello\r\n"
    with pytest.raises(PermanentError, match="MessageTooDeep: MIME parts nested too deeply to read"):
        draft(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x01\x02\xff" * 100,
        b"From: \xff\xfe\r\nSubject: =?utf-8?B?\xff?=\r\n\r\n\xff",
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
        b'Content-Type: text/plain; charset="no-such-charset"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!',
        b"Content-Type: message/rfc822\r\n\r\nnot a message",
        b"From: a@example.com\r\n" + b"X-H: " + b"a" * 200_000 + b"\r\n\r\nbody",
    ],
)
def test_garbage_never_raises(raw: bytes) -> None:
    result = draft(raw)
    assert isinstance(result.fields["attachments"], list)


def test_a_phone_label_starts_a_word_in_cyrillic_as_in_latin() -> None:
    """ "тел" inside a word ("мотель", a motel, as "tel" in "hotel") was a label: "тел" repeated was one at each of its
    starts, each read to the end of the word, 8 s of the event loop for the 20,000 characters of a mail searched."""
    assert find_phones("Hotel: 8 (495) 123-45-67", None) == []
    assert find_phones("Мотель: 8 (495) 123-45-67", None) == []
    assert find_phones("Моб.тел.: 8 (495) 123-45-67", None) == ["8 (495) 123-45-67"]  # noqa: RUF001
    assert find_phones("тел" * 7_000, None) == []
