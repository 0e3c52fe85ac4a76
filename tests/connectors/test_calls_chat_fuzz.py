"""Property: random bodies, headers, queries and paths on every telephony and chat webhook (and the web form)
never give a 5xx and never stop the hub; requests that pass authentication (tokens and signatures computed for
the random body) reach the decoders too. And the parsers of those types never fail with anything but
PermanentError.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadhub.connectors.mango import mango_sign
from leadhub.connectors.twilio import twilio_signature
from leadhub.envelope import Envelope
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.parsers import PARSERS
from tests.conftest import HubFactory
from tests.connectors.calls_support import post
from tests.helpers import wait_for

PUBLIC = "https://hub.example"
TOKEN = "fuzz-token"
CONNECTORS = [
    {"name": "twilio", "type": "twilio", "secret": TOKEN},
    {"name": "zadarma", "type": "zadarma", "secret": TOKEN},
    {"name": "mango", "type": "mango", "secret": TOKEN, "api_key": "fuzz-key"},
    {"name": "sipuni", "type": "sipuni", "secret": TOKEN},
    {"name": "uis", "type": "telephony", "secret": TOKEN, "fields": {"phone": "p", "call_id": "c", "event": "e"}},
    {
        "name": "pbx",
        "type": "telephony",
        "auth": "token",
        "secret": TOKEN,
        "fields": {"phone": "a.b", "event": "e", "time": "t"},
        "events": {"m": "missed", "a": "answered"},
    },
    {"name": "bot", "type": "telegram", "secret": TOKEN},
    {"name": "jivo", "type": "jivo", "secret": TOKEN},
    {"name": "site-form", "type": "form", "rate_limit": None},  # no token: random bodies reach the form decoder
]
NAMES = [c["name"] for c in CONNECTORS]
ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "event",
        "update_id",
        "message",
        "event_name",
        "call_id",
        "CallSid",
        "CallStatus",
        "From",
        "pbx_call_id",
        "json",
        "e",
        "p",
        "c",
    ]
)
FIELDS = st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), st.one_of(ASCII, st.text(max_size=20)), max_size=6)
EVENT_NAMES = ["chat_finished", "offline_message", "call_event", "chat_accepted", "x"]
JSON_OBJECTS = st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), JSON, max_size=6)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(NAMES))
    tail = draw(st.sampled_from(["", "", "/events/call", "/events/summary", "/x/y"]))
    kind = draw(st.sampled_from(["bytes", "json", "form", "shaped"]))
    body = {
        "bytes": st.binary(max_size=600),
        "json": JSON_OBJECTS.map(lambda d: json.dumps(d).encode()),
        "form": FIELDS.map(lambda d: urlencode(d).encode()),
        # enough of the expected shape (an update_id, an event_name) to get past the first checks
        "shaped": st.tuples(JSON_OBJECTS, st.integers(), st.sampled_from(EVENT_NAMES)).map(
            lambda t: json.dumps(t[0] | {"update_id": t[1], "event_name": t[2]}).encode()
        ),
    }
    raw: bytes = draw(body[kind])
    query = draw(st.dictionaries(st.sampled_from(["token", "zd_echo", "bodySHA256", "x"]), ASCII, max_size=3))
    if draw(st.booleans()):
        query["token"] = TOKEN
    headers = draw(
        st.dictionaries(st.sampled_from(["Signature", "X-Signature", "X-Twilio-Signature"]), ASCII, max_size=2)
    )
    headers["Content-Type"] = draw(
        st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data"])
    )
    if draw(st.booleans()):
        headers["X-Telegram-Bot-Api-Secret-Token"] = TOKEN
    if draw(st.booleans()):  # authenticate the random body the way each provider would
        raw, headers = _signed(name, tail, query, raw, headers, form=draw(FIELDS), obj=draw(JSON_OBJECTS))
    return {
        "method": draw(st.sampled_from(["POST", "POST", "GET"])),
        "name": name,
        "tail": tail,
        "query": query,
        "body": raw,
        "headers": headers,
    }


def _signed(
    name: str, tail: str, query: dict[str, str], raw: bytes, headers: dict[str, str], *, form: dict, obj: dict
) -> tuple[bytes, dict[str, str]]:
    key = TOKEN.encode()
    if name == "uis":
        headers["X-Signature"] = hmac.new(key, raw, hashlib.sha256).hexdigest()
    elif name == "mango":
        text = json.dumps(obj)
        raw = urlencode({"vpbx_api_key": "fuzz-key", "json": text, "sign": mango_sign(b"fuzz-key", text, key)}).encode()
    elif name == "twilio":
        query.clear()  # the client's own query encoding would differ from urlencode's; the URL is what is signed
        url = f"{PUBLIC}/hooks/twilio{tail}"
        form = {"CallSid": "CAfuzz"} | form
        raw = urlencode(form).encode()
        headers["X-Twilio-Signature"] = twilio_signature(key, url, form.items())
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return raw, headers


async def test_random_requests_never_give_a_5xx_nor_stop_the_hub(make_hub: HubFactory) -> None:
    hub = await make_hub(CONNECTORS, public_url=PUBLIC)
    loop = asyncio.get_running_loop()
    statuses: list[int] = []

    async def send(request: dict[str, Any]) -> int:
        url = hub.url(f"/hooks/{request['name']}{request['tail']}")
        async with hub.session.request(
            request["method"], url, params=request["query"], data=request["body"], headers=request["headers"]
        ) as response:
            await response.read()
            return response.status

    @settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(requests())
    def property_(request: dict[str, Any]) -> None:
        status = asyncio.run_coroutine_threadsafe(send(request), loop).result(timeout=30)
        statuses.append(status)
        assert status < 500, (status, request)

    await asyncio.to_thread(property_)
    assert any(s == 202 for s in statuses) and any(s == 401 for s in statuses)  # both sides of auth were reached
    async with hub.session.get(hub.url("/healthz")) as response:
        assert response.status == 200
    status, answer = await post(
        hub,
        f"/hooks/sipuni?token={TOKEN}",
        b"call_id=after&event=1&src_type=1&src_num=79001234567",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 202

    async def stored() -> bool:  # the pipeline is still consuming after everything the fuzzer got through
        async with hub.session.get(hub.url(f"/api/inquiries/{answer['id']}")) as response:
            return response.status == 200

    await wait_for(stored, timeout=20, what="the inquiry posted after the fuzzing to be stored")


@settings(max_examples=300, deadline=None, database=None)
@given(
    kind=st.sampled_from(["twilio", "zadarma", "mango", "sipuni", "telephony", "telegram", "jivo"]),
    payload=st.one_of(
        st.binary(max_size=300),
        JSON_OBJECTS.map(lambda d: json.dumps(d).encode()),
        FIELDS.map(lambda d: urlencode(d).encode()),
    ),
    content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded"]),
    meta=st.dictionaries(st.sampled_from(["kind", "event", "url"]), st.text(max_size=20), max_size=2),
)
def test_parsers_fail_only_with_permanent_error(kind: str, payload: bytes, content_type: str, meta: dict) -> None:
    envelope = Envelope(
        key=f"{kind}:x:k", channel="phone", connector="x", payload=payload, content_type=content_type, meta=meta
    )
    options = {"fields": {"phone": "p", "event": "e"}, "events": {"m": "missed"}, "callback_data": ["y"]}
    try:
        draft = PARSERS[kind](envelope, options)
    except PermanentError:
        return
    assert draft.dropped is None or len(draft.dropped) <= 200
