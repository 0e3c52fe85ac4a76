"""The direct MIME writer reads back exactly like the stdlib's EmailMessage build of the same message."""

from __future__ import annotations

import email
import email.policy

import pytest

from leadhub.triggers.actions import mime
from leadhub.triggers.actions.send_email import POLICY, _message

HEADERS = [
    ("From", "shop@example.com"),
    ("To", "ivan@example.com"),
    ("Subject", "How was your order #1001?"),
    ("Message-ID", "<abc@example.com>"),
    ("Date", "Mon, 02 Mar 2026 10:00:00 +0000"),
    ("List-Unsubscribe", "<https://shop.example/u/" + "x" * 300 + ">"),
    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ("X-Leadhub-Rule", "post-sale-survey"),
]
CYRILLIC = [
    ("From", "Магазин Ромашка <shop@example.com>"),
    ("To", "ivan@example.com"),
    ("Subject", "Как прошёл ваш заказ №1001? " * 4),
    ("Reply-To", "Отдел продаж <sales@example.com>"),
]


def _read(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("headers", "text", "html"),
    [
        (HEADERS, "Hello Ivan,\n\nhow was it?\n", None),
        (HEADERS, "Hello\n", "<p>Hello &amp; welcome</p>\n"),
        (HEADERS, None, "<p>only html</p>"),
        (HEADERS, None, None),
        (CYRILLIC, "Здравствуйте, Иван!\nКак прошёл заказ?\n", "<p>Здравствуйте</p>"),  # noqa: RUF001
        (CYRILLIC, "я" * 2000, None),  # one line longer than SMTP allows: base64
        (HEADERS, "line\r\nwith CRLF\rand CR\n.leading dot\n", None),
    ],
)
def test_reads_back_like_email_message(headers: list[tuple[str, str]], text: str | None, html: str | None) -> None:
    data = mime.build(headers, text, html)
    assert data is not None
    ours, stdlib = _read(data), _read(_message(headers, {"text": text, "html": html}).as_bytes())
    for name, _ in headers:
        assert str(ours[name]) == str(stdlib[name]), name
    assert ours.get_content_type() == stdlib.get_content_type()
    for kind in ("plain", "html"):
        mine, theirs = ours.get_body((kind,)), stdlib.get_body((kind,))
        assert (mine is None) == (theirs is None)
        if mine is not None:
            assert mine.get_content().replace("\r\n", "\n") == theirs.get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_unusual_values_are_left_to_the_stdlib() -> None:
    assert mime.build([("To", "иван@пример.рф")], "x", None) is None
    assert mime.build([("Subject", "two\nlines")], "x", None) is None
    assert mime.build([("Subject", "x" * 1000)], "x", None) is None
    assert POLICY.max_line_length == 998
