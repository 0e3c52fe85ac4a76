"""Ids in any case: every id leadhub makes is lower-case base32, and tools often show a ULID in upper case; an id
copied from one must find its row through the API and the CLI, not answer 404 or "no contact"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import RunningHub
from tests.helpers import run_leadhub
from tests.hub.test_identity_api import _conflict, flagged_pair, post_form


async def test_the_api_finds_rows_by_ids_in_upper_case(form_hub: RunningHub) -> None:
    await post_form(form_hub, {"name": "Anna", "phone": "+79161112233"})
    [inquiry] = await form_hub.wait_items("/api/inquiries", 1)
    contact_id, lead_id = inquiry["contact_id"], inquiry["lead_id"]
    assert (await form_hub.api(f"/api/inquiries/{inquiry['id'].upper()}"))["id"] == inquiry["id"]
    assert (await form_hub.api(f"/api/leads/{lead_id.upper()}"))["id"] == lead_id
    assert (await form_hub.api(f"/api/contacts/{contact_id.upper()}"))["id"] == contact_id
    assert [lead["id"] for lead in (await form_hub.api("/api/leads", contact_id=contact_id.upper()))["items"]] == [
        lead_id
    ]
    assert [i["id"] for i in (await form_hub.api("/api/inquiries", lead_id=lead_id.upper()))["items"]] == [
        inquiry["id"]
    ]
    async with form_hub.session.patch(form_hub.url(f"/api/leads/{lead_id.upper()}"), json={"status": "won"}) as r:
        assert r.status == 200, await r.text()
    assert (await form_hub.api(f"/api/leads/{lead_id}"))["status"] == "won"


async def test_a_merge_by_hand_takes_both_ids_in_upper_case(form_hub: RunningHub) -> None:
    withdrawn, granted = await _conflict(form_hub)
    path = form_hub.url(f"/api/contacts/{withdrawn.upper()}/merge")
    async with form_hub.session.post(path, json={"into": granted.upper()}) as r:
        assert r.status == 200, await r.text()
        merge = await r.json()
    assert merge["contact_id"] == granted and merge["merged_id"] == withdrawn
    assert (await form_hub.api(f"/api/contacts/{withdrawn}"))["merged_into"] == granted


def test_the_cli_takes_ids_in_upper_case(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'leadhub.db'}"

    first, second = asyncio.run(flagged_pair(url))
    env = {"LEADHUB_DATABASE_URL": url, "LEADHUB_DATA_DIR": str(tmp_path)}
    merged = run_leadhub("contacts", "merge", first.upper(), "--into", second.upper(), cwd=tmp_path, env=env)
    assert merged.returncode == 0 and merged.stdout.startswith(f"merged contact {first} into {second} (merge "), (
        merged.stderr
    )
