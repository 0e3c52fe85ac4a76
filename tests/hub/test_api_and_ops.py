"""The read API's list contract (items, next_cursor, filters) and the ops routes."""

from __future__ import annotations

from tests.conftest import RunningHub


async def _post(hub: RunningHub, body: dict) -> str:
    async with await hub.post("/hooks/site-form", json=body) as response:
        assert response.status == 202
        return (await response.json())["id"]


async def test_lists_page_with_a_cursor_newest_first(form_hub: RunningHub) -> None:
    ids = [await _post(form_hub, {"name": f"P{i}", "email": f"p{i}@example.com"}) for i in range(7)]
    await form_hub.wait_items("/api/leads", 7)
    for path in ("/api/leads", "/api/inquiries", "/api/contacts"):
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = await form_hub.api(path, **params)
            assert len(page["items"]) <= 3
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 7, path
    inquiries = (await form_hub.api("/api/inquiries", limit=1000))["items"]
    assert sorted(i["id"] for i in inquiries) == sorted(ids)
    leads = (await form_hub.api("/api/leads"))["items"]
    assert [lead["id"] for lead in leads] == sorted((lead["id"] for lead in leads), reverse=True)


async def test_filters_and_single_objects(form_hub: RunningHub) -> None:
    first = await _post(form_hub, {"name": "A", "phone": "+79161112233"})
    await _post(form_hub, {"name": "B", "phone": "+79164445566"})
    await form_hub.wait_items("/api/leads", 2)
    inquiry = await form_hub.api(f"/api/inquiries/{first}")
    contact_id, lead_id = inquiry["contact_id"], inquiry["lead_id"]
    assert [lead["id"] for lead in (await form_hub.api("/api/leads", contact_id=contact_id))["items"]] == [lead_id]
    assert (await form_hub.api(f"/api/leads/{lead_id}"))["contact_id"] == contact_id
    assert [i["id"] for i in (await form_hub.api("/api/inquiries", lead_id=lead_id))["items"]] == [first]
    assert (await form_hub.api("/api/leads", status="won"))["items"] == []
    assert len((await form_hub.api("/api/leads", status="new", channel="form"))["items"]) == 2
    assert (await form_hub.api("/api/inquiries", dropped="true"))["items"] == []
    for written in ("8 916 111-22-33", "+7 (916) 111 22 33", "89161112233"):
        assert [c["id"] for c in (await form_hub.api("/api/contacts", phone=written))["items"]] == [contact_id]
    for path in (f"/api/leads/{'0' * 26}", f"/api/inquiries/{'0' * 26}"):
        async with form_hub.session.get(form_hub.url(path)) as response:
            assert response.status == 404


async def test_honeypot_submission_is_stored_as_dropped_not_a_lead(make_hub) -> None:  # type: ignore[no-untyped-def]
    hub = await make_hub([{"name": "site-form", "type": "form", "honeypot": "website", "rate_limit": None}])
    spam = await _post(hub, {"name": "Bot", "email": "bot@spam.example", "website": "http://spam.example"})
    await _post(hub, {"name": "Human", "email": "human@example.com", "website": ""})
    dropped = await hub.wait_items("/api/inquiries", 1, dropped="true")
    assert dropped[0]["id"] == spam and dropped[0]["dropped"] == "spam: honeypot" and dropped[0]["lead_id"] is None
    leads = await hub.wait_items("/api/leads", 1)
    assert leads[0]["id"] != spam


async def test_ops_routes(form_hub: RunningHub) -> None:
    async with form_hub.session.get(form_hub.url("/healthz")) as response:
        assert response.status == 200 and (await response.json())["status"] == "ok"
    async with form_hub.session.get(form_hub.url("/readyz")) as response:
        body = await response.json()
        assert response.status == 200, body
    assert body["queue"] and body["store"] and body["detail"]["pipeline"]["ok"]
    await _post(form_hub, {"name": "Metric"})
    await form_hub.wait_items("/api/leads", 1)
    async with form_hub.session.get(form_hub.url("/metrics")) as response:
        text = await response.text()
    for name in (
        "leadhub_http_requests_total",
        'leadhub_intake_accepted_total{connector="site-form"} 1.0',
        "leadhub_pipeline_lag_seconds",
        'leadhub_pipeline_processed_total{outcome="stored"} 1.0',
        "leadhub_dead_letters_total",
        "leadhub_hook_seconds_bucket",
        "leadhub_pipeline_batch_size_bucket",
    ):
        assert name in text, name


async def test_pipeline_only_process_serves_ops_but_not_intake(make_hub) -> None:  # type: ignore[no-untyped-def]
    hub = await make_hub([{"name": "site-form", "type": "form"}], roles="pipeline,relay")
    async with hub.session.get(hub.url("/readyz")) as response:
        assert response.status == 200
    async with hub.session.post(hub.url("/hooks/site-form"), json={"name": "x"}) as response:
        assert response.status == 404
