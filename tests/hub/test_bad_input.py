"""Bad input gets a clear 4xx with a JSON error naming the problem; never a 500, and the hub keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.conftest import HubFactory, RunningHub
from tests.helpers import wait_for


@pytest.fixture
async def guarded_hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub(
        [
            {"name": "site-form", "type": "form", "token": "s3cret", "max_body": 1024, "rate_limit": None},
            {"name": "limited", "type": "form", "rate_limit": "2/m"},
        ]
    )


URLENCODED = "application/x-www-form-urlencoded"
CASES = [
    ("malformed JSON", {"data": b'{"name": "x",', "headers": {"Content-Type": "application/json"}}, 400, "malformed"),
    ("JSON not an object", {"json": ["a", "b"]}, 400, "malformed"),
    (
        "invalid UTF-8",
        {"data": b'{"name": "\xff\xfe"}', "headers": {"Content-Type": "application/json"}},
        400,
        "malformed",
    ),
    (
        "broken multipart",
        {"data": b"--zz\r\nnot a part", "headers": {"Content-Type": "multipart/form-data; boundary=yy"}},
        400,
        "malformed",
    ),
    (
        "multipart without boundary",
        {"data": b"x", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        "malformed",
    ),
    ("wrong content type", {"data": b"<xml/>", "headers": {"Content-Type": "application/xml"}}, 415, "content_type"),
    ("no content type", {"data": b"name=x", "headers": {"Content-Type": ""}}, 415, "content_type"),
    ("body over the limit", {"json": {"message": "x" * 2000}}, 413, "too_large"),
    ("overlong idempotency key", {"json": {"name": "x"}, "headers": {"Idempotency-Key": "k" * 300}}, 400, "malformed"),
    # A submission with no value at all was answered 202 and became a blank contact and lead on which rules fired.
    ("empty form body", {"data": b"", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 400, "empty"),
    (
        "form of blank fields",
        {"data": b"name=&phone=+&message=", "headers": {"Content-Type": URLENCODED}},
        400,
        "empty",
    ),
    ("empty JSON object", {"json": {}}, 400, "empty"),
    ("JSON of nulls and blanks", {"json": {"name": None, "phone": " ", "tags": [], "x": {"y": ""}}}, 400, "empty"),
]


@pytest.mark.parametrize(("label", "kwargs", "status", "error"), CASES, ids=[c[0] for c in CASES])
async def test_bad_bodies_are_refused_with_a_clear_error(
    guarded_hub: RunningHub, label: str, kwargs: dict, status: int, error: str
) -> None:
    headers = {"X-Leadhub-Token": "s3cret", **kwargs.pop("headers", {})}
    async with await guarded_hub.post("/hooks/site-form", headers=headers, **kwargs) as response:
        assert response.status == status, await response.text()
        body = await response.json()
    assert body["error"] == error and body["detail"]
    await _still_serving_and_nothing_stored(guarded_hub)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": b"name=&phone=&message=call+me", "headers": {"Content-Type": URLENCODED}},
        {"json": {"agree": False}},
        {"json": {"count": 0}},
    ],
    ids=["one-field-with-a-value", "false", "zero"],
)
async def test_a_submission_with_one_value_is_accepted(guarded_hub: RunningHub, kwargs: dict) -> None:
    headers = {"X-Leadhub-Token": "s3cret", **kwargs.pop("headers", {})}
    async with await guarded_hub.post("/hooks/site-form", headers=headers, **kwargs) as response:
        assert response.status == 202, await response.text()
    await guarded_hub.wait_items("/api/inquiries", 1)


async def test_json_in_a_declared_charset_other_than_utf8_is_400_saying_json_is_utf8(guarded_hub: RunningHub) -> None:
    """JSON is UTF-8 (RFC 8259; application/json defines no charset): a Latin-1 body under charset=iso-8859-1 was
    refused as "not UTF-8 JSON" while README said a body is read in its declared charset. README now says JSON is
    read as UTF-8, and the answer says the declared charset is not how JSON is read."""
    headers = {"X-Leadhub-Token": "s3cret", "Content-Type": "application/json; charset=iso-8859-1"}
    body = '{"name": "Zoë"}'.encode("latin-1")
    async with await guarded_hub.post("/hooks/site-form", data=body, headers=headers) as response:
        answer = await response.json()
        assert (response.status, answer["error"]) == (400, "malformed"), answer
    assert "body is not UTF-8 JSON" in answer["detail"], answer
    assert "JSON is read as UTF-8 (RFC 8259), not in the declared charset 'iso-8859-1'" in answer["detail"], answer
    await _still_serving_and_nothing_stored(guarded_hub)


async def test_json_that_looks_like_utf16_but_is_not_is_400_naming_the_encoding(guarded_hub: RunningHub) -> None:
    """A UTF-16 byte order mark before UTF-8 text read as UTF-16 and answered "malformed JSON: Expecting value at
    line 1 column 1", naming neither the encoding nor why."""
    headers = {"X-Leadhub-Token": "s3cret", "Content-Type": "application/json"}
    for body in (b'\xff\xfe{"name": "x"}', '{"name": "x"}'.encode("utf-16")[:-1]):
        async with await guarded_hub.post("/hooks/site-form", data=body, headers=headers) as response:
            answer = await response.json()
            assert (response.status, answer["error"]) == (400, "malformed"), answer
        assert "UTF-16" in answer["detail"] and "byte order mark" in answer["detail"], answer
    await _still_serving_and_nothing_stored(guarded_hub)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
async def test_json_in_utf16_or_utf32_is_read_as_rfc_4627_tells_them_apart(
    guarded_hub: RunningHub, encoding: str
) -> None:
    """The json module tells UTF-16 and UTF-32 apart by the BOM or the zero bytes, at the edge and in the pipeline
    alike (README says so); a UTF-8 BOM is skipped."""
    headers = {"X-Leadhub-Token": "s3cret", "Content-Type": "application/json"}
    async with await guarded_hub.post(
        "/hooks/site-form", data='{"name": "Zoë Ünal"}'.encode(encoding), headers=headers
    ) as response:
        assert response.status == 202, await response.text()
    [inquiry] = await guarded_hub.wait_items("/api/inquiries", 1)
    assert inquiry["name"] == "Zoë Ünal"


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    """A body from an async generator: aiohttp sends it chunked, without Content-Length."""
    for part in parts:
        yield part


async def test_a_chunked_body_over_the_limit_is_413(guarded_hub: RunningHub) -> None:
    """Without Content-Length the limit is counted as the chunks arrive (a declared length is checked up front)."""
    headers = {"X-Leadhub-Token": "s3cret", "Content-Type": "application/json"}
    body = _chunks(b'{"message": "', b"x" * 800, b"x" * 800, b'"}')
    async with await guarded_hub.post("/hooks/site-form", data=body, headers=headers) as response:
        assert response.status == 413, await response.text()
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert (await response.json())["error"] == "too_large"
    await _still_serving_and_nothing_stored(guarded_hub)


async def test_a_chunked_body_within_the_limit_is_accepted_whole(guarded_hub: RunningHub) -> None:
    headers = {"X-Leadhub-Token": "s3cret", "Content-Type": "application/json"}
    body = _chunks(b'{"name": "chunked", ', b'"message": "' + b"y" * 300 + b'"}')
    async with await guarded_hub.post("/hooks/site-form", data=body, headers=headers) as response:
        assert response.status == 202, await response.text()
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    [item] = await guarded_hub.wait_items("/api/inquiries", 1)
    assert item["name"] == "Chunked" and item["message"] == "y" * 300


async def test_a_client_gone_before_its_body_is_complete_is_a_rejection_not_a_500(guarded_hub: RunningHub) -> None:
    """Content-Length 100, ten bytes, then the client closes its side: counted as malformed, nothing stored."""
    host, port = guarded_hub.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /hooks/site-form HTTP/1.1\r\nHost: x\r\nX-Leadhub-Token: s3cret\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{"name": "'
    )
    await writer.drain()
    writer.write_eof()
    await asyncio.wait_for(reader.read(), 10)  # the server closes the connection
    writer.close()

    async def counted() -> str | None:
        async with guarded_hub.session.get(guarded_hub.url("/metrics")) as response:
            text = await response.text()
        return text if 'leadhub_intake_rejected_total{connector="site-form",reason="malformed"} 1.0' in text else None

    metrics = await wait_for(counted, timeout=10, what="the truncated post counted as malformed")
    assert 'status="500"' not in metrics
    await _still_serving_and_nothing_stored(guarded_hub)


@pytest.mark.parametrize(
    ("headers", "query", "detail"),
    [
        ({}, {}, "missing token"),
        ({"X-Leadhub-Token": "guess"}, {}, "wrong token"),
        ({}, {"token": "guess"}, "wrong token"),
    ],
)
async def test_missing_or_wrong_token_is_401(guarded_hub: RunningHub, headers: dict, query: dict, detail: str) -> None:
    async with await guarded_hub.post("/hooks/site-form", json={"name": "x"}, headers=headers, params=query) as r:
        assert r.status == 401
        assert detail in (await r.json())["detail"]
    await _still_serving_and_nothing_stored(guarded_hub)


async def test_token_in_query_string_is_accepted(guarded_hub: RunningHub) -> None:
    async with await guarded_hub.post("/hooks/site-form", json={"name": "x"}, params={"token": "s3cret"}) as r:
        assert r.status == 202


async def test_unknown_connector_is_404(guarded_hub: RunningHub) -> None:
    async with await guarded_hub.post("/hooks/nope", json={"name": "x"}) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "unknown_connector"


async def test_wrong_method_is_405(guarded_hub: RunningHub) -> None:
    async with guarded_hub.session.get(guarded_hub.url("/hooks/site-form")) as response:
        assert response.status == 405


async def test_rate_limit_answers_429_with_retry_after(guarded_hub: RunningHub) -> None:
    statuses = []
    for i in range(3):
        async with await guarded_hub.post("/hooks/limited", json={"n": i}) as response:
            statuses.append(response.status)
            retry_after = response.headers.get("Retry-After")
    assert statuses == [202, 202, 429]
    assert retry_after is not None and int(retry_after) >= 1


async def test_rejections_are_counted_in_metrics(guarded_hub: RunningHub) -> None:
    async with await guarded_hub.post("/hooks/site-form", json={"name": "x"}):
        pass
    async with guarded_hub.session.get(guarded_hub.url("/metrics")) as response:
        text = await response.text()
    assert 'leadhub_intake_rejected_total{connector="site-form",reason="bad_token"} 1.0' in text


async def test_bad_api_parameters_are_400(guarded_hub: RunningHub) -> None:
    for path, params in [
        ("/api/leads", {"limit": "0"}),
        ("/api/leads", {"limit": "x"}),
        ("/api/leads", {"cursor": "!!!"}),
        ("/api/inquiries", {"dropped": "maybe"}),
        ("/api/contacts", {"phone": "not a phone"}),
    ]:
        async with guarded_hub.session.get(guarded_hub.url(path), params=params) as response:
            assert response.status == 400, (path, params, await response.text())


async def test_api_requires_the_bearer_token_when_configured(make_hub: HubFactory) -> None:
    hub = await make_hub([], api_token="t0ken")
    async with hub.session.get(hub.url("/api/leads")) as response:
        assert response.status == 401
    async with hub.session.get(hub.url("/api/leads"), headers={"Authorization": "Bearer wrong"}) as response:
        assert response.status == 401
    assert (await hub.api("/api/leads")) == {"items": [], "next_cursor": None}


async def test_the_bearer_scheme_is_read_without_regard_to_case(make_hub: HubFactory) -> None:
    """RFC 7235: the scheme is case-insensitive; `bearer t0ken` (as some HTTP libraries write it) was a 401."""
    hub = await make_hub([], api_token="t0ken")
    for header in ("bearer t0ken", "BEARER t0ken", "Bearer  t0ken", "Bearer t0ken "):
        async with hub.session.get(hub.url("/api/leads"), headers={"Authorization": header}) as response:
            assert response.status == 200, (header, await response.text())
    for header in ("Bearer t0ke", "Basic t0ken", "Bearert0ken", "t0ken", "Bearer T0KEN", "Bearer t0ken x"):
        async with hub.session.get(hub.url("/api/leads"), headers={"Authorization": header}) as response:
            assert response.status == 401, header


async def _still_serving_and_nothing_stored(hub: RunningHub) -> None:
    """A valid post after the bad one is the only inquiry: the queue is FIFO, so a leak would show."""
    async with hub.session.get(hub.url("/healthz")) as response:
        assert response.status == 200
    async with await hub.post(
        "/hooks/site-form", json={"name": "sentinel"}, headers={"X-Leadhub-Token": "s3cret"}
    ) as r:
        assert r.status == 202
    items = await hub.wait_items("/api/inquiries", 1)
    assert items[0]["name"] == "Sentinel"
