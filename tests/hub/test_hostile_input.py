"""Input a fuzzing pass against the running daemon answered with a 500 (or took apart): each is now a 4xx or a 202.

Bytes that are not UTF-8 in a header (aiohttp keeps them as surrogates; a multipart boundary of them), JSON
nested deeper than the pipeline can write back (json_errors.MAX_JSON_DEPTH) or holding a number of more digits
than `int()` reads, digits `int()` refuses, a Host yarl refuses, an infinite signed timestamp, an empty body, a
gzip-encoded body. Sent over a raw socket where an HTTP client would refuse to.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import sys
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.http_exceptions import LineTooLong

from leadhub.hub.logging import _ClientProtocolErrors
from leadhub.json_errors import MAX_JSON_DEPTH
from leadhub.store import queries
from tests.conftest import HubFactory, RunningHub

TOKEN = "s3cret"
API_TOKEN = "t0ken"
DEEP = b'{"name": ' + b"[" * 3000 + b"]" * 3000 + b"}"


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub(
        [
            {"name": "site-form", "type": "form", "token": TOKEN, "rate_limit": None},
            {"name": "bot", "type": "telegram", "secret": "tg-secret"},
            {"name": "calls", "type": "twilio", "secret": "auth-token"},
            {"name": "pbx", "type": "mango", "api_key": "key", "secret": "salt"},
            {"name": "sip", "type": "sipuni", "secret": "sip-token"},
            {"name": "chat", "type": "jivo", "secret": "jivo-token"},
            {"name": "tilda", "type": "tilda", "secret": "tilda-token"},
            {"name": "phones", "type": "telephony", "auth": "token", "secret": "tel-token", "fields": {"phone": "p"}},
            {"name": "shop", "type": "order", "auth": "token", "secret": "shop-token"},
        ],
        api_token=API_TOKEN,
    )


async def raw_request(hub: RunningHub, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """One request as bytes (`head`: request line and headers, Host optional); the status and its JSON answer."""
    host, port = hub.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    host_line = b"" if b"\r\nHost: " in head else b"\r\nHost: x"
    writer.write(head + host_line + b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2] or b"null")


FORM = b"POST /hooks/site-form HTTP/1.1\r\nContent-Type: application/json\r\nX-Leadhub-Token: s3cret"


@pytest.mark.parametrize(
    "case",
    [
        ("token not UTF-8", FORM.replace(b"s3cret", b"\xff"), b'{"name": "x"}', 401, "bad_token"),
        ("telegram secret not UTF-8", b"POST /hooks/bot HTTP/1.1\r\nX-Telegram-Bot-Api-Secret-Token: \xff",
         b'{"update_id": 1}', 401, "bad_signature"),
        ("form JSON nested too deeply", FORM, DEEP, 400, "malformed"),
        ("telegram JSON nested too deeply", b"POST /hooks/bot HTTP/1.1\r\nX-Telegram-Bot-Api-Secret-Token: tg-secret",
         DEEP, 400, "malformed"),
        ("Host with a port out of range", b"POST /hooks/calls HTTP/1.1\r\nX-Twilio-Signature: x\r\n"
         b"Content-Type: application/x-www-form-urlencoded\r\nHost: h:99999", b"CallSid=CA1", 400, "malformed"),
        ("gzip that is not", FORM + b"\r\nContent-Encoding: gzip", b"not gzip", 400, "malformed"),
    ],
    ids=lambda case: case[0],
)  # fmt: skip
async def test_hostile_requests_are_4xx_with_a_reason(hub: RunningHub, case: tuple) -> None:
    _label, head, body, status, error = case
    got, answer = await raw_request(hub, head, body)
    assert (got, answer["error"]) == (status, error), answer
    assert answer["detail"]
    await _still_serving(hub)


@pytest.mark.parametrize(
    "header",
    [b"Idempotency-Key: k\xff", b"User-Agent: Mozilla \xff\xfe", b"Content-Type: application/json; x=\xff"],
)
async def test_header_bytes_that_are_not_utf8_do_not_stop_a_submission(hub: RunningHub, header: bytes) -> None:
    name = "Header Test"
    head = FORM.replace(b"Content-Type: application/json", header) if header.startswith(b"Content-Type") else FORM
    head += b"" if header.startswith(b"Content-Type") else b"\r\n" + header
    got, answer = await raw_request(hub, head, json.dumps({"name": name}).encode())
    assert got == 202, answer
    stored = await hub.wait_items("/api/inquiries", 1)
    assert stored[0]["id"] == answer["id"] and stored[0]["name"] == name


@pytest.mark.parametrize(
    "header",
    [b"Idempotency-Key: k\xe2\x80\xa8", b"Idempotency-Key: k\xc2\x85", b"Content-Type: application/json\xc2\x85"],
    ids=["key ends in U+2028", "key ends in U+0085", "content type ends in U+0085"],
)
async def test_unicode_whitespace_at_a_header_end_is_trimmed_as_the_queue_trims_it(
    hub: RunningHub, header: bytes
) -> None:
    """aiohttp trims only ASCII whitespace, the queue any: the key stored had another id than the one answered."""
    head = FORM.replace(b"Content-Type: application/json", header) if header.startswith(b"Content-Type") else FORM
    head += b"" if header.startswith(b"Content-Type") else b"\r\n" + header
    got, answer = await raw_request(hub, head, json.dumps({"name": "Trim Test"}).encode())
    assert got == 202, answer
    [stored] = await hub.wait_items("/api/inquiries", 1)
    assert stored["id"] == answer["id"] and stored["name"] == "Trim Test", stored["key"]


TELEGRAM = b"POST /hooks/bot HTTP/1.1\r\nX-Telegram-Bot-Api-Secret-Token: tg-secret\r\nContent-Type: application/json"
LONG_CONTENT_TYPE = b"Content-Type: application/json; foo=" + b"a" * 250


@pytest.mark.parametrize(
    "case",
    [
        ("form Content-Type over 200", FORM.replace(b"Content-Type: application/json", LONG_CONTENT_TYPE),
         b'{"name": "x"}', "cannot be queued: Content-Type is longer than 200 characters (272)"),
        ("form Idempotency-Key over 200 once escaped", FORM + b"\r\nIdempotency-Key: " + b"\xff" * 100,
         b'{"name": "x"}', "Idempotency-Key is longer than 200"),
        ("telegram Content-Type over 200", TELEGRAM.replace(b"Content-Type: application/json", LONG_CONTENT_TYPE),
         b'{"update_id": 1}', "cannot be queued: Content-Type is longer than 200 characters (272)"),
        ("telegram key over 400", TELEGRAM, b'{"update_id": 1%s}' % (b"0" * 400), "Leadhub-Key is longer than 400"),
    ],
    ids=lambda case: case[0],
)  # fmt: skip
async def test_what_the_pipeline_would_refuse_is_400_not_a_dead_letter(hub: RunningHub, case: tuple) -> None:
    """The pipeline refuses a key or content type longer than its column: answered 202, such an item was
    dead-lettered, and no replay could store it. A content type is named as sent, Content-Type (it was named
    Leadhub-Content-Type, the queue's header, which the sender never sent)."""
    _label, head, body, detail = case
    got, answer = await raw_request(hub, head, body)
    assert (got, answer["error"]) == (400, "malformed"), answer
    assert detail in answer["detail"]
    await _still_serving(hub)


LONG_NUMBER = "9" * 5000  # json.loads raises a plain ValueError: int() refuses more than 4,300 digits
JSON = {"Content-Type": "application/json"}
FORM_TYPE = "application/x-www-form-urlencoded"


def _mango_event_with_a_long_number() -> bytes:
    event = '{"entry_id": ' + LONG_NUMBER + "}"
    return urlencode(
        {"vpbx_api_key": "key", "sign": hashlib.sha256(f"key{event}salt".encode()).hexdigest(), "json": event}
    ).encode()


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/hooks/site-form", JSON | {"X-Leadhub-Token": TOKEN}, None),
        ("/hooks/bot", JSON | {"X-Telegram-Bot-Api-Secret-Token": "tg-secret"}, None),
        ("/hooks/chat?token=jivo-token", JSON, None),
        ("/hooks/tilda?token=tilda-token", JSON, None),
        ("/hooks/phones?token=tel-token", JSON, None),
        ("/hooks/shop?token=shop-token", JSON, None),
        ("/hooks/pbx/events/call", {"Content-Type": FORM_TYPE}, _mango_event_with_a_long_number()),
    ],
    ids=["form", "telegram", "jivo", "tilda", "telephony", "order", "mango"],
)  # fmt: skip
async def test_json_with_a_number_too_long_to_read_is_400(
    hub: RunningHub, path: str, headers: dict[str, str], body: bytes | None
) -> None:
    body = body or b'{"name": %s}' % LONG_NUMBER.encode()
    async with await hub.post(path, data=body, headers=headers) as response:
        assert response.status == 400, await response.text()
        answer = await response.json()
    assert answer["error"] == "malformed" and "a number has more than 4300 digits" in answer["detail"], answer
    await _still_serving(hub)


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        (b'{"name": "A\\ud800B"}', "'name'", "a lone surrogate"),
        (b'{"name": "Ann", "x": ["\\udfff"]}', "'x'", "a lone surrogate"),
        (b'{"n\\udc00": "Ann"}', "'n\\udc00'", "a lone surrogate"),
        (b'{"name": "a\\u0000b"}', "'name'", "a NUL character"),
        (b'{"phone": "1", "note": {"deep": "x\\u0000"}}', "'note'", "a NUL character"),
    ],
    ids=["surrogate", "in-a-list", "in-a-name", "nul", "nul-nested"],
)
async def test_a_form_field_no_store_can_hold_is_400_naming_it(
    hub: RunningHub, body: bytes, field: str, problem: str
) -> None:
    """As the /api refuses such a string (400 bad_json): a lone surrogate was stored as U+FFFD and a NUL silently
    removed ("a\\u0000b" became "Ab"), while the site that sent it, which can mend it, was answered 202."""
    got, answer = await raw_request(hub, FORM, body)
    assert (got, answer["error"]) == (400, "malformed"), answer
    assert f"field {field} holds {problem}" in answer["detail"], answer
    await _still_serving(hub)


async def test_a_urlencoded_form_field_holding_nul_is_400(hub: RunningHub) -> None:
    head = FORM.replace(b"application/json", b"application/x-www-form-urlencoded")
    got, answer = await raw_request(hub, head, b"name=a%00b&phone=1")
    assert (got, answer["error"]) == (400, "malformed"), answer
    assert "field 'name' holds a NUL character" in answer["detail"], answer


async def test_a_providers_lone_surrogate_and_nul_are_mended_not_refused(hub: RunningHub) -> None:
    """A provider cannot mend what it sends (a refusal is retried, then lost): its lone surrogate is stored as U+FFFD
    and a NUL removed, as README says; a valid pair stays the character it encodes."""
    update = (
        b'{"update_id": 5, "message": {"message_id": 1, "date": 1700000000, "chat": {"id": 7, "type": "private"},'
        b' "from": {"id": 7, "first_name": "Ann"}, "text": "hi \\ud800 \\ud83d\\ude00 a\\u0000b"}}'
    )
    got, answer = await raw_request(hub, TELEGRAM, update)
    assert got == 202, answer
    [inquiry] = await hub.wait_items("/api/inquiries", 1)
    assert inquiry["message"] == "hi \ufffd \U0001f600 ab", inquiry


@pytest.mark.parametrize("timestamp", ["1e999", "1" + "0" * 400], ids=["infinity", "too large for a float"])
async def test_an_infinite_signed_timestamp_is_400(hub: RunningHub, timestamp: str) -> None:
    event = '{"entry_id": "e1", "call_id": "c1", "seq": 1, "call_state": "Connected", "timestamp": ' + timestamp + "}"
    sign = hashlib.sha256(b"key" + event.encode() + b"salt").hexdigest()
    body = urlencode({"vpbx_api_key": "key", "sign": sign, "json": event}).encode()
    async with await hub.post(
        "/hooks/pbx/events/call", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    ) as response:
        assert response.status == 400, await response.text()
        assert (await response.json())["error"] == "malformed"


async def test_an_empty_post_with_the_event_in_the_url_is_accepted(hub: RunningHub) -> None:
    """Content-Length: 0 is an empty body, not a client gone before its body was complete."""
    async with await hub.post("/hooks/sip?token=sip-token&call_id=c9&event=1&src_num=79161234567", data=b"") as r:
        assert r.status == 202, await r.text()


async def test_a_gzip_body_is_read_whole_not_cut_at_its_encoded_length(hub: RunningHub) -> None:
    message = "hello world " * 50 + "END"
    body = gzip.compress(urlencode({"name": "Gzip Test", "message": message}).encode())
    headers = {"X-Leadhub-Token": TOKEN, "Content-Type": "application/x-www-form-urlencoded"}
    async with await hub.post("/hooks/site-form", data=body, headers={**headers, "Content-Encoding": "gzip"}) as r:
        assert r.status == 202, await r.text()
    [item] = await hub.wait_items("/api/inquiries", 1)
    assert item["message"] == message.strip()


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/leads?limit=%C2%B2", {}),  # '²'.isdigit() is True, int('²') raises
        ("GET", "/api/inquiries?limit=" + "1" * 5000, {}),  # int() refuses 4,300+ digits
        ("PATCH", "/api/leads/x", {"data": b"[" * 5000 + b"]" * 5000}),
        ("PATCH", "/api/tasks/x", {"data": b'{"status": ' + b"[" * 1800 + b"]" * 1800 + b"}"}),  # under 4 KiB
    ],
)
async def test_bad_api_input_is_400(hub: RunningHub, method: str, path: str, kwargs: dict) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    async with hub.session.request(method, hub.url(path), headers=headers, **kwargs) as response:
        assert response.status == 400, await response.text()
        assert (await response.json())["detail"]


NUL_IN_IDS_AND_FILTERS = [
    ("GET", "/api/leads?contact_id=%00"),
    ("GET", "/api/contacts?email=a%00@b.c"),
    ("GET", "/api/inquiries?lead_id=x%00"),
    ("GET", "/api/orders?connector=%00"),
    ("GET", "/api/tasks?lead_id=%00"),
    ("GET", "/api/actions?rule_id=%00"),
    ("GET", "/api/leads?cursor=" + queries._encode_cursor(("leads", None, None, None, False), ["x\x00"])),
    ("GET", "/api/leads/%00"),
    ("PATCH", "/api/leads/%00", {"status": "won"}),
    ("GET", "/api/contacts/%00"),
    ("POST", "/api/contacts/%00/unmerge"),
    ("POST", "/api/contacts/%00/merge", {"into": "x"}),
    ("POST", "/api/contacts/%00/keep-apart"),
    ("GET", "/api/inquiries/%00"),
    ("GET", "/api/orders/%00"),
    ("PATCH", "/api/tasks/%00", {"status": "done"}),
    ("POST", "/api/actions/%00/retry"),
    ("GET", "/api/dead-letters/%00"),
    ("GET", "/api/dead-letters/%00/payload"),
    ("POST", "/api/dead-letters/%00/replay"),
]
NOT_UTF8_FILTERS = ["/api/leads?contact_id=%ED%A0%80", "/api/contacts?email=a%FF@b.c", "/api/inquiries?lead_id=%C3"]


@pytest.mark.parametrize("path", NOT_UTF8_FILTERS)
async def test_a_filter_that_is_not_utf8_is_400_not_an_empty_list(hub: RunningHub, path: str) -> None:
    """aiohttp reads such a percent-escape as U+FFFD: the list answered 200 with no items; README says 400."""
    async with hub.session.get(hub.url(path), headers={"Authorization": f"Bearer {API_TOKEN}"}) as response:
        answer = await response.json()
        assert (response.status, answer["error"]) == (400, "bad_parameter"), answer
    assert "not UTF-8" in answer["detail"], answer


async def test_a_nul_in_an_id_or_filter_is_400_not_a_store_outage(hub: RunningHub) -> None:
    """PostgreSQL refuses NUL in text: each of these was `503 store unavailable` and counted in
    leadhub_store_errors_total (which the shipped alert watches); on SQLite they matched nothing."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    for method, path, *body in NUL_IN_IDS_AND_FILTERS:
        async with hub.session.request(
            method, hub.url(path), headers=headers, json=body[0] if body else None
        ) as response:
            answer = await response.json()
            assert (response.status, answer["error"]) == (400, "bad_parameter"), (method, path, answer)
        assert "NUL" in answer["detail"] or path.startswith("/api/leads?cursor="), answer
    async with hub.session.get(hub.url("/metrics")) as response:
        series = 'leadhub_store_errors_total{kind="unavailable",operation="api"}'
        counted = [line for line in (await response.text()).splitlines() if line.startswith(series)]
    assert counted in ([], [f"{series} 0.0"]), counted  # started at 0 (the alerts read it), never counted


async def test_an_authorization_header_that_is_not_utf8_is_401(hub: RunningHub) -> None:
    got, answer = await raw_request(hub, b"GET /api/leads HTTP/1.1\r\nAuthorization: Bearer \xff\xfe")
    assert (got, answer["error"]) == (401, "unauthorized")


def test_aiohttp_protocol_errors_are_logged_as_one_line_without_the_raw_request() -> None:
    """aiohttp quotes the refused line in its error: a URL's ?token= must not reach the log, nor a traceback."""
    error = LineTooLong(b"/hooks/sip?token=sip-token&" + b"a" * 100, "8190")
    try:
        raise error
    except LineTooLong:
        record = logging.getLogger("aiohttp.server").makeRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s", ("127.0.0.1",),
            exc_info=sys.exc_info(),
        )  # fmt: skip
    _ClientProtocolErrors().filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    text = logging.Formatter().format(record)
    assert "LineTooLong" in text and "sip-token" not in text and "Traceback" not in text


async def _still_serving(hub: RunningHub) -> None:
    async with hub.session.get(hub.url("/healthz")) as response:
        assert response.status == 200
    async with await hub.post("/hooks/site-form", json={"name": "sentinel"}, headers={"X-Leadhub-Token": TOKEN}) as r:
        assert r.status == 202
    items = await hub.wait_items("/api/inquiries", 1)
    assert items[0]["name"] == "Sentinel"


BOUNDARY_NOT_UTF8 = b"Content-Type: multipart/form-data; boundary=\xff"
MULTIPART_NOT_UTF8 = b'--\xff\r\nContent-Disposition: form-data; name="name"\r\n\r\nAnn\r\n--\xff--\r\n'


@pytest.mark.parametrize(
    "head",
    [FORM.replace(b"Content-Type: application/json", BOUNDARY_NOT_UTF8),
     b"POST /hooks/tilda?token=tilda-token HTTP/1.1\r\n" + BOUNDARY_NOT_UTF8],
    ids=["form", "tilda"],
)  # fmt: skip
async def test_a_multipart_boundary_with_a_byte_that_is_not_utf8_is_400(hub: RunningHub, head: bytes) -> None:
    """The Content-Type was encoded with `.encode()`: UnicodeEncodeError, a 500."""
    got, answer = await raw_request(hub, head, MULTIPART_NOT_UTF8)
    assert (got, answer["error"]) == (400, "malformed"), answer
    assert "boundary holds a byte that is not ASCII" in answer["detail"]
    await _still_serving(hub)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _mango_event(event: str) -> bytes:
    sign = hashlib.sha256(f"key{event}salt".encode()).hexdigest()
    return urlencode({"vpbx_api_key": "key", "sign": sign, "json": event}).encode()


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 940], ids=["just over the limit", "940"])
@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/hooks/site-form", JSON | {"X-Leadhub-Token": TOKEN}, None),
        ("/hooks/bot", JSON | {"X-Telegram-Bot-Api-Secret-Token": "tg-secret"}, None),
        ("/hooks/chat?token=jivo-token", JSON, None),
        ("/hooks/tilda?token=tilda-token", JSON, None),
        ("/hooks/phones?token=tel-token", JSON, None),
        ("/hooks/shop?token=shop-token", JSON, None),
        ("/hooks/pbx/events/call", {"Content-Type": FORM_TYPE}, _mango_event),
    ],
    ids=["form", "telegram", "jivo", "tilda", "telephony", "order", "mango"],
)  # fmt: skip
async def test_json_nested_deeper_than_the_limit_is_400_not_a_dead_letter(
    hub: RunningHub, path: str, headers: dict[str, str], body: Any, depth: int
) -> None:
    """Nested 940 deep, JSON was answered 202 (json.loads reads ~940) and then dead-lettered for good ('maximum
    recursion depth exceeded': json.dumps, from deeper in the stack, cannot write it back)."""
    nested = b'{"name": "Deep", "x": %s}' % _nested(depth)
    data = body(nested.decode()) if body else nested
    async with await hub.post(path, data=data, headers=headers) as response:
        assert response.status == 400, await response.text()
        answer = await response.json()
    assert answer["error"] == "malformed" and f"nested deeper than {MAX_JSON_DEPTH} levels" in answer["detail"], answer
    await _still_serving(hub)


async def test_json_nested_up_to_the_limit_is_stored(hub: RunningHub) -> None:
    body = b'{"name": "Deep", "x": %s}' % _nested(MAX_JSON_DEPTH - 1)
    got, answer = await raw_request(hub, FORM, body)
    assert got == 202, answer
    [inquiry] = await hub.wait_items("/api/inquiries", 1)
    assert inquiry["name"] == "Deep" and inquiry["fields"]["x"] == json.loads(_nested(MAX_JSON_DEPTH - 1))
