"""A form body decodes to the same fields at the edge and in the pipeline: charsets as declared, strictly."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest

from leadhub.formdata import FormDecodeError, decode_form, urlencoded_pairs

FORM = "application/x-www-form-urlencoded"
CP1251 = f"{FORM}; charset=windows-1251"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (CP1251, b"name=%C8%E2%E0%ED&phone=%2B79160000001"),  # a cp1251 page or PHP client, percent-encoded
        (f'{FORM}; Charset="Windows-1251"', b"name=%C8%E2%E0%ED&phone=%2B79160000001"),
        (CP1251, b"name=\xc8\xe2\xe0\xed&phone=%2B79160000001"),  # the same bytes sent raw
        (f"{FORM}; charset=koi8-r", b"name=%E9%D7%C1%CE&phone=%2B79160000001"),
        (FORM, b"name=%D0%98%D0%B2%D0%B0%D0%BD&phone=%2B79160000001"),  # UTF-8, no charset needed
    ],
)
def test_percent_escapes_are_read_in_the_declared_charset(content_type: str, body: bytes) -> None:
    """parse_qsl read them as UTF-8 with errors='replace': the name arrived as four U+FFFD, answered 202."""
    assert decode_form(content_type, body).fields == {"name": "Иван", "phone": "+79160000001"}


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        (FORM, b"name=%C8%E2%E0%ED", "percent-escaped bytes that are not UTF-8; send UTF-8 or declare the charset"),
        (FORM, b"name=\xc8\xe2", "form body is not UTF-8: invalid byte at 5; send UTF-8 or declare the charset"),
        (f"{FORM}; charset=utf-8", b"name=%C8%E2", "percent-escaped bytes that are not utf-8"),
        (f"{FORM}; charset=no-such-charset", b"name=x", "unknown charset 'no-such-charset'"),
        (f"{FORM}; charset=rot13", b"name=x", "unknown charset 'rot13'"),  # a codec, but not of bytes to text
        (f"{FORM}; charset=unicode_escape", b"name=%5Cud800", "unknown charset 'unicode_escape'"),
    ],
)
def test_a_body_not_in_its_charset_or_an_unknown_charset_is_a_decode_error(
    content_type: str, body: bytes, detail: str
) -> None:
    with pytest.raises(FormDecodeError) as refused:
        decode_form(content_type, body)
    assert detail in str(refused.value)


def test_valid_utf8_reads_as_parse_qsl_read_it() -> None:
    pairs = [("Имя", "Мария Иванова"), ("tags", "a"), ("tags", "b"), ("empty", ""), ("plus", "+7 916"), ("emoji", "😀")]
    body = urlencode(pairs).encode() + b"&raw=\xd0\x98&bare"
    assert urlencoded_pairs(FORM, body) == parse_qsl(body.decode(), keep_blank_values=True)


def test_a_multipart_part_in_an_unknown_charset_is_a_decode_error() -> None:
    part = b'Content-Disposition: form-data; name="n"\r\nContent-Type: text/plain; charset=rot13\r\n\r\nx'
    body = b"--b\r\n" + part + b"\r\n--b--\r\n"
    with pytest.raises(FormDecodeError, match="unknown charset 'rot13'"):
        decode_form("multipart/form-data; boundary=b", body)


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=\udcff",  # the byte 0xff as aiohttp hands a header over
        'multipart/form-data; boundary="\udcffx"',
        "multipart/form-data; boundary=\ud800",  # no header byte gives this, but nothing may make it a 500
    ],
)
def test_a_multipart_boundary_that_is_not_ascii_is_a_decode_error(content_type: str) -> None:
    """`.encode()` of the Content-Type raised UnicodeEncodeError: a 500 at the edge."""
    body = b'--\xff\r\nContent-Disposition: form-data; name="name"\r\n\r\nAnn\r\n--\xff--\r\n'
    with pytest.raises(FormDecodeError):
        decode_form(content_type, body)
