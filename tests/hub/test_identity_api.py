"""The identity API end to end through the running hub (form webhook -> NATS -> pipeline -> store -> API):
PATCH /api/leads emits lead.* events, a wrong merge is taken back with POST /api/contacts/{id}/unmerge and
with `leadhub contacts unmerge`, contacts needing review are listed, and bad requests get clear 4xx answers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import StreamReader
from sqlalchemy import select

from leadhub.pipelines.intake import IntakePipeline
from leadhub.store.db import create_engine, upgrade
from leadhub.store.models import Contact, ContactMerge, OutboxEvent
from leadhub.store.policy import IdentityPolicy
from tests.conftest import RunningHub
from tests.helpers import run_leadhub, wait_for
from tests.store.envelopes import SOURCES, form

JSON = {"Content-Type": "application/json"}


async def post_form(hub: RunningHub, body: dict[str, Any]) -> None:
    async with await hub.post("/hooks/site-form", json=body) as response:
        assert response.status == 202, await response.text()


async def events(hub: RunningHub, kind: str) -> list[dict[str, Any]]:
    async with hub.engine.connect() as conn:
        rows = await conn.execute(select(OutboxEvent.data).where(OutboxEvent.type == kind))
        return [r[0] for r in rows]


async def test_patch_lead_changes_status_owner_tags_and_emits_events(form_hub: RunningHub) -> None:
    await post_form(form_hub, {"email": "buyer@x.example"})
    (lead,) = await form_hub.wait_items("/api/leads", 1)
    url = form_hub.url(f"/api/leads/{lead['id']}")
    body = {"status": "in_progress", "owner": "maria", "tags": ["vip", "vip", "b2b"]}
    async with form_hub.session.patch(url, json=body) as response:
        assert response.status == 200, await response.text()
        changed = await response.json()
    assert (changed["status"], changed["owner"], changed["tags"]) == ("in_progress", "maria", ["vip", "b2b"])
    assert changed["changed"] == ["owner", "status", "tags"]
    (status_event,) = await events(form_hub, "lead.status_changed")
    assert (status_event["from"], status_event["to"], status_event["lead_id"]) == ("new", "in_progress", lead["id"])
    assert (await events(form_hub, "lead.owner_changed"))[0]["to"] == "maria"
    assert len(await events(form_hub, "lead.updated")) == 1

    async with form_hub.session.patch(url, json={"status": "in_progress"}) as response:  # no change: no event
        assert response.status == 200 and (await response.json())["changed"] == []
    assert len(await events(form_hub, "lead.updated")) == 1

    bad = [
        ({"status": "done"}, 400, "status must be one of new, in_progress, won, lost, closed"),
        ({"stage": "x"}, 400, "unknown field(s) stage"),
        ({}, 400, "nothing to change"),
        ({"tags": "vip"}, 400, "tags must be a list"),
        ({"owner": 5}, 400, "owner must be a string"),
        ({"owner": "x" * 201}, 400, "owner must be a string of at most 200 characters"),
    ]
    for payload, status, detail in bad:
        async with form_hub.session.patch(url, json=payload) as response:
            assert response.status == status
            assert detail in (await response.json())["detail"]
    async with form_hub.session.patch(url, json={"owner": "  " + "o" * 200 + " "}) as response:  # trimmed first
        assert response.status == 200 and (await response.json())["owner"] == "o" * 200
    async with form_hub.session.patch(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and (await r.json())["error"] == "bad_json"
    async with form_hub.session.patch(url, data=b"status=won") as r:
        assert r.status == 415
    async with form_hub.session.patch(form_hub.url("/api/leads/nope"), json={"status": "won"}) as r:
        assert r.status == 404


async def _merged_pair(hub: RunningHub) -> tuple[str, str]:
    """Two strangers (by email, by phone), then a form naming both: one merge. Returns (survivor, merged)."""
    await post_form(hub, {"email": "anna@x.example", "message": "first"})
    await hub.wait_items("/api/contacts", 1)
    await post_form(hub, {"phone": "+7 916 000-11-22", "message": "second"})
    await hub.wait_items("/api/contacts", 2)
    await post_form(hub, {"email": "ANNA@x.example", "phone": "89160001122", "message": "both"})
    await hub.wait_items("/api/inquiries", 3)
    (survivor,) = await hub.wait_items("/api/contacts", 1)
    (merge,) = await _merges(hub)
    assert merge["survivor_id"] == survivor["id"]
    return survivor["id"], merge["merged_id"]


async def _merges(hub: RunningHub) -> list[dict[str, Any]]:
    async with hub.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(ContactMerge.__table__))).mappings()]


async def test_unmerge_through_the_api(form_hub: RunningHub) -> None:
    survivor, merged = await _merged_pair(form_hub)
    contact = await form_hub.api(f"/api/contacts/{survivor}")
    assert {i["kind"] for i in contact["identifiers"]} == {"email", "phone"}
    assert [m["merged_id"] for m in contact["merges"]] == [merged]
    assert (await form_hub.api(f"/api/contacts/{merged}"))["merged_into"] == survivor
    (lead,) = (await form_hub.api("/api/leads"))["items"]  # the two leads were one request: folded
    assert len((await form_hub.api(f"/api/leads/{lead['id']}"))["touches"]) == 3
    assert len((await form_hub.api("/api/leads", merged="true"))["items"]) == 2

    async with form_hub.session.post(form_hub.url(f"/api/contacts/{merged}/unmerge")) as response:
        assert response.status == 200, await response.text()
        assert await response.json() == {
            "merge_id": (await _merges(form_hub))[0]["id"],
            "contact_id": survivor,
            "restored_id": merged,
        }
    assert len((await form_hub.api("/api/contacts"))["items"]) == 2
    assert len((await form_hub.api("/api/leads"))["items"]) == 2
    assert (await form_hub.api("/api/contacts", phone="8 916 000 11 22"))["items"][0]["id"] == merged
    async with form_hub.session.post(form_hub.url(f"/api/contacts/{merged}/unmerge")) as response:
        assert response.status == 409
        assert "already undone" in (await response.json())["detail"]
    async with form_hub.session.post(form_hub.url("/api/contacts/unknown/unmerge")) as response:
        assert response.status == 404
    async with form_hub.session.patch(form_hub.url(f"/api/leads/{lead['id']}"), json={"status": "won"}) as r:
        assert r.status == 200


async def test_contacts_needing_review_are_listed(form_hub: RunningHub) -> None:
    await post_form(form_hub, {"email": "a@x.example", "consent": "no"})
    await post_form(form_hub, {"phone": "+79160001122", "consent": "yes"})
    await post_form(form_hub, {"email": "someone.else@x.example"})  # never flagged: not listed with review=true
    await form_hub.wait_items("/api/contacts", 3)
    await post_form(form_hub, {"email": "a@x.example", "phone": "+79160001122", "message": "again"})
    await form_hub.wait_items("/api/inquiries", 4)

    async def flagged() -> list[dict[str, Any]] | None:
        items = (await form_hub.api("/api/contacts", review="true"))["items"]
        return items if len(items) == 2 else None

    items = await wait_for(flagged, timeout=10, what="both contacts flagged")
    assert {c["review"]["reason"] for c in items} == {"consent_conflict"}
    unflagged = (await form_hub.api("/api/contacts", review="false"))["items"]
    assert [c["email"] for c in unflagged] == ["someone.else@x.example"]
    async with form_hub.session.get(form_hub.url("/api/contacts"), params={"review": "maybe"}) as response:
        assert response.status == 400


def test_cli_unmerge(tmp_path: Path) -> None:
    """`leadhub contacts unmerge` against a store where a merge happened; then again: a clear error, exit 1."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'leadhub.db'}"

    async def prepare() -> str:
        engine = create_engine(url)
        await upgrade(engine)
        pipeline = IntakePipeline(engine, SOURCES, default_region="RU")
        at = datetime(2026, 11, 2, tzinfo=UTC)
        for n, body in enumerate(({"email": "b@x.example"}, {"phone": "+79161230000"})):
            await pipeline.store([pipeline.prepare(form(f"c{n}", at, **body))])
        await pipeline.store([pipeline.prepare(form("link", at, email="b@x.example", phone="89161230000"))])
        async with engine.connect() as conn:
            merged = (await conn.execute(select(ContactMerge.merged_id))).scalar_one()
        await engine.dispose()
        return merged

    merged = asyncio.run(prepare())
    leadhub = Path(sys.executable).parent / "leadhub"  # the installed console script
    env = {**os.environ, "LEADHUB_DATABASE_URL": url, "LEADHUB_DATA_DIR": str(tmp_path)}
    command = [str(leadhub), "contacts", "unmerge", merged]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert f"restored contact {merged}" in result.stdout
    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 1
    assert "already undone" in again.stderr


async def test_identity_settings_reach_the_pipeline(make_hub) -> None:  # type: ignore[no-untyped-def]
    """LEADHUB_LEAD_WINDOW=0s gives every inquiry its own lead; LEADHUB_EMAIL_FOLDING=false keeps Gmail dots apart."""
    hub = await make_hub(
        [{"name": "site-form", "type": "form", "rate_limit": None}], lead_window="0s", email_folding=False
    )
    for email in ("jane.doe@gmail.com", "janedoe@gmail.com", "Jane.Doe@gmail.com"):  # bodies differ: no dedupe
        await post_form(hub, {"email": email})
    await hub.wait_items("/api/inquiries", 3)
    assert len(await hub.wait_items("/api/contacts", 2)) == 2
    assert len(await hub.wait_items("/api/leads", 3)) == 3


async def _conflict(hub: RunningHub) -> tuple[str, str]:
    """Two contacts one inquiry names whose consent disagrees: flagged for review. Returns (withdrawn, granted)."""
    await post_form(hub, {"email": "a@x.example", "consent": "no"})
    await post_form(hub, {"phone": "+79160001122", "consent": "yes"})
    await hub.wait_items("/api/contacts", 2)
    await post_form(hub, {"email": "a@x.example", "phone": "+79160001122"})
    flagged = await hub.wait_items("/api/contacts", 2, review="true")
    by_consent = {c["consent"]: c["id"] for c in flagged}
    return by_consent["withdrawn"], by_consent["granted"]


async def test_a_person_merges_flagged_contacts_by_hand_the_opt_out_wins_and_it_can_be_taken_back(
    form_hub: RunningHub,
) -> None:
    """The review said "merge them by hand or leave them apart", and there was no way to do either."""
    withdrawn, granted = await _conflict(form_hub)
    async with form_hub.session.post(form_hub.url(f"/api/contacts/{withdrawn}/merge"), json={"into": granted}) as r:
        assert r.status == 200, await r.text()
        merge = await r.json()
    assert merge["contact_id"] == granted and merge["merged_id"] == withdrawn
    survivor = await form_hub.api(f"/api/contacts/{granted}")
    assert survivor["consent"] == "withdrawn" and survivor["review"] is None  # an opt-out wins, the review is done
    assert {i["kind"] for i in survivor["identifiers"]} == {"email", "phone"}
    assert (await form_hub.api("/api/contacts", review="true"))["items"] == []
    [merged_event] = await events(form_hub, "contact.merged")
    assert merged_event["merged_id"] == withdrawn and merged_event["merge_id"] == merge["merge_id"]

    for body, status in [({"into": granted}, 409), ({"into": "nope"}, 404), ({"to": granted}, 400)]:
        async with form_hub.session.post(form_hub.url(f"/api/contacts/{withdrawn}/merge"), json=body) as r:
            assert r.status == status, (body, await r.text())
    async with form_hub.session.post(form_hub.url(f"/api/contacts/{granted}/merge"), json={"into": granted}) as r:
        assert r.status == 409 and "cannot be merged into itself" in (await r.json())["detail"]

    async with form_hub.session.post(form_hub.url(f"/api/contacts/{withdrawn}/unmerge")) as r:
        assert r.status == 200, await r.text()
    back = {c["id"]: c for c in (await form_hub.api("/api/contacts", review="true"))["items"]}
    assert set(back) == {withdrawn, granted}  # the decision taken back: both wait for a person again
    assert back[granted]["consent"] == "granted" and back[withdrawn]["consent"] == "withdrawn"


async def test_a_person_keeps_flagged_contacts_apart(form_hub: RunningHub) -> None:
    withdrawn, granted = await _conflict(form_hub)
    async with form_hub.session.post(form_hub.url(f"/api/contacts/{granted}/keep-apart")) as r:
        assert r.status == 200 and await r.json() == {"cleared": sorted([withdrawn, granted])}
    assert (await form_hub.api("/api/contacts", review="true"))["items"] == []
    assert len((await form_hub.api("/api/contacts", review="false"))["items"]) == 2
    async with form_hub.session.post(form_hub.url(f"/api/contacts/{granted}/keep-apart")) as r:
        assert r.status == 409 and "not flagged for review" in (await r.json())["detail"]
    async with form_hub.session.post(form_hub.url("/api/contacts/nope/keep-apart")) as r:
        assert r.status == 404
    # the decision stands: the same person again goes to one of them and flags nobody (it flagged both again)
    await post_form(form_hub, {"email": "a@x.example", "phone": "+79160001122", "message": "again"})
    await form_hub.wait_items("/api/inquiries", 4)
    assert (await form_hub.api("/api/contacts", review="true"))["items"] == []
    assert len((await form_hub.api("/api/contacts"))["items"]) == 2


async def flagged_pair(url: str) -> list[str]:
    """Two contacts flagged for review in a new SQLite database at `url`, for the CLI; their ids in order."""
    engine = create_engine(url)
    await upgrade(engine)
    pipeline = IntakePipeline(engine, SOURCES, default_region="RU")
    at = datetime(2026, 11, 2, tzinfo=UTC)
    bodies = ({"email": "b@x.example", "consent": "no"}, {"phone": "+79161230000", "consent": "yes"})
    for n, body in enumerate(bodies):
        await pipeline.store([pipeline.prepare(form(f"c{n}", at, **body))])
    await pipeline.store([pipeline.prepare(form("link", at, email="b@x.example", phone="89161230000"))])
    async with engine.connect() as conn:
        flagged = list((await conn.execute(select(Contact.id).order_by(Contact.id))).scalars())
    await engine.dispose()
    return flagged


def test_cli_merge_and_keep_apart(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'leadhub.db'}"
    first, second = asyncio.run(flagged_pair(url))
    env = {"LEADHUB_DATABASE_URL": url, "LEADHUB_DATA_DIR": str(tmp_path)}
    merged = run_leadhub("contacts", "merge", first, "--into", second, cwd=tmp_path, env=env)
    assert merged.returncode == 0 and merged.stdout.startswith(f"merged contact {first} into {second} (merge "), (
        merged.stderr
    )
    again = run_leadhub("contacts", "merge", first, "--into", second, cwd=tmp_path, env=env)
    assert again.returncode == 1 and f"contact {first} was merged into {second} already" in again.stderr
    undone = run_leadhub("contacts", "unmerge", first, cwd=tmp_path, env=env)
    assert undone.returncode == 0, undone.stderr
    apart = run_leadhub("contacts", "keep-apart", first, cwd=tmp_path, env=env)
    assert apart.returncode == 0 and apart.stdout.strip() == f"review cleared: {', '.join(sorted([first, second]))}"


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/contacts/x/merge"), ("PATCH", "/api/tasks/x")])
async def test_a_body_is_read_as_patch_lead_reads_its_own(form_hub: RunningHub, method: str, path: str) -> None:
    """One reader of JSON bodies (api.json_body): the merge and task routes answer bad bodies as PATCH /api/leads."""
    for kwargs, status, error in [
        ({"data": '{"status": "done"}'}, 415, "unsupported_media_type"),
        ({"data": b"{" * 5000, "headers": {"Content-Type": "application/json"}}, 413, "too_large"),
        ({"data": b"{", "headers": {"Content-Type": "application/json"}}, 400, "bad_json"),
        ({"data": b'{"into": "a\\u0000", "status": "done"}', "headers": JSON}, 400, "bad_json"),
        ({"data": b'{"into": "\\ud800", "status": "\\ud800"}', "headers": JSON}, 400, "bad_json"),
    ]:
        async with form_hub.session.request(method, form_hub.url(path), **kwargs) as response:
            assert response.status == status and (await response.json())["error"] == error, kwargs


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"tags": ["vip", "\\ud800"]}', "a string in the body holds a lone surrogate"),
        (b'{"owner": "ma\\udfffria"}', "a string in the body holds a lone surrogate"),
        (b'{"tags": ["v\\u0000ip"]}', "a string in the body holds a NUL character"),
        (b'{"\\ud800": 1}', "a string in the body holds a lone surrogate"),
        (b'{"status": "won", "x": ' + b"1" * 4301 + b"}", "Exceeds the limit (4300 digits)"),
    ],
)
async def test_patch_lead_refuses_what_no_store_holds_and_changes_nothing(
    form_hub: RunningHub, body: bytes, detail: str
) -> None:
    """A `"\\ud800"` tag was committed (stored as `?`), its lead.* events emitted, and only the answer failed: 500.
    An integer of 4,301 digits, which int() refuses, was a 500 too."""
    await post_form(form_hub, {"email": "buyer@x.example"})
    (lead,) = await form_hub.wait_items("/api/leads", 1)
    before = await form_hub.api(f"/api/leads/{lead['id']}")
    async with form_hub.session.patch(form_hub.url(f"/api/leads/{lead['id']}"), data=body, headers=JSON) as response:
        answer = await response.json()
        assert (response.status, answer["error"]) == (400, "bad_json"), answer
    assert detail in answer["detail"]
    assert await form_hub.api(f"/api/leads/{lead['id']}") == before
    assert await events(form_hub, "lead.updated") == []


async def test_patch_lead_reads_a_body_that_arrives_in_two_segments(
    form_hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`content.read(n)` answers with what has arrived: a body in two TCP segments was cut after the first and
    refused as `400 bad_json`. The second part is sent once the server has read the first (a probe on aiohttp's
    reader tells when), so the split is certain and nothing waits a fixed time."""
    await post_form(form_hub, {"email": "buyer@x.example"})
    (lead,) = await form_hub.wait_items("/api/leads", 1)
    body = json.dumps({"tags": ["vip"], "owner": "maria"}).encode()
    first, rest = body[:10], body[10:]
    first_read = asyncio.Event()
    real_read = StreamReader.read

    async def read_and_tell(self: StreamReader, n: int = -1) -> bytes:
        data = await real_read(self, n)
        if data == first:
            first_read.set()
        return data

    monkeypatch.setattr(StreamReader, "read", read_and_tell)
    host, port = form_hub.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"PATCH /api/leads/{lead['id']} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    writer.write(f"{head}Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode() + first)
    await writer.drain()
    await asyncio.wait_for(first_read.wait(), 10)
    writer.write(rest)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert (await form_hub.api(f"/api/leads/{lead['id']}"))["tags"] == ["vip"]


async def test_a_chunked_body_over_the_limit_is_413(form_hub: RunningHub) -> None:
    """Without Content-Length the size is known only once read: the first segment alone was parsed (400)."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"tags": ["'
        for _ in range(70):
            yield b"v" * 1024

    url = form_hub.url("/api/leads/x")
    async with form_hub.session.patch(url, data=chunks(), headers=JSON) as response:
        assert response.status == 413 and (await response.json())["error"] == "too_large", await response.text()


async def test_an_address_stored_before_folding_is_found_by_the_api(form_hub: RunningHub) -> None:
    """A contact stored while LEADHUB_EMAIL_FOLDING was off holds its Gmail address as written; with folding on,
    `?email=` looked up only the folded key and answered no contact, though the next inquiry joins it (README)."""
    unfolded = IntakePipeline(form_hub.engine, SOURCES, policy=IdentityPolicy(fold_email=False))
    at = datetime(2026, 11, 2, tzinfo=UTC)
    await unfolded.store([unfolded.prepare(form("old", at, email="Jane.Doe+shop@gmail.com"))])
    for written in ("jane.doe+shop@gmail.com", "Jane.Doe+Shop@GMAIL.com"):
        (contact,) = (await form_hub.api("/api/contacts", email=written))["items"]
        assert contact["email"] == "jane.doe+shop@gmail.com"


async def test_a_number_that_is_no_valid_number_is_one_contact_listed_and_found_by_its_digits(
    form_hub: RunningHub,
) -> None:
    """Two forms from 951218115 (9 digits, no valid number) made two contacts with no identifiers, and `?phone=` of
    that number answered 400."""
    for n in range(2):
        await post_form(form_hub, {"phone": "951 218 115", "message": f"call me {n}"})
    await form_hub.wait_items("/api/inquiries", 2)
    (contact,) = (await form_hub.api("/api/contacts"))["items"]
    assert contact["phone"] is None
    assert contact["identifiers"] == [{"kind": "phone_digits", "value": "951218115"}]
    assert [c["id"] for c in (await form_hub.api("/api/contacts", phone="951-21-81-15"))["items"]] == [contact["id"]]
    async with form_hub.session.get(form_hub.url("/api/contacts"), params={"phone": "123"}) as response:
        assert response.status == 400 and "not a valid number" in (await response.json())["detail"]
