"""The read API's list contract (items, next_cursor, filters) and the ops routes."""

from __future__ import annotations

from yarl import URL

from tests.conftest import RunningHub
from tests.helpers import wait_for


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


async def test_a_cursor_works_only_for_the_list_and_filters_that_issued_it(form_hub: RunningHub) -> None:
    """Leads, contacts and orders page by id, inquiries, tasks and actions by (time, id): a cursor of one list
    fits another's shape, and one of a filtered list fits the unfiltered one; each is refused with a clear 400."""
    for i in range(3):
        await _post(form_hub, {"name": f"P{i}", "phone": f"+7916123450{i}"})
    await form_hub.wait_items("/api/leads", 3)
    await form_hub.wait_items("/api/inquiries", 3)
    leads = await form_hub.api("/api/leads", limit=1)
    inquiries = await form_hub.api("/api/inquiries", limit=1)
    new_leads = await form_hub.api("/api/leads", limit=1, status="new")
    contact_id = leads["items"][0]["contact_id"]
    refused = [
        ("/api/contacts", {"cursor": leads["next_cursor"]}),
        ("/api/orders", {"cursor": leads["next_cursor"]}),
        ("/api/tasks", {"cursor": inquiries["next_cursor"]}),
        ("/api/actions", {"cursor": inquiries["next_cursor"]}),
        ("/api/leads", {"cursor": leads["next_cursor"], "status": "won"}),
        ("/api/leads", {"cursor": new_leads["next_cursor"]}),
        ("/api/inquiries", {"cursor": inquiries["next_cursor"], "contact_id": contact_id}),
    ]
    for path, params in refused:
        async with form_hub.session.get(form_hub.url(path), params=params) as response:
            body = await response.json()
            assert response.status == 400, (path, params, body)
            assert body["error"] == "bad_parameter" and "cursor" in body["detail"], body
    # the same list and filters (the limit may change) take it
    page = await form_hub.api("/api/leads", cursor=new_leads["next_cursor"], status="new", limit=5)
    everything = (await form_hub.api("/api/leads"))["items"]
    assert [lead["id"] for lead in page["items"]] == [lead["id"] for lead in everything[1:]]


async def test_a_phone_filter_with_a_raw_plus_finds_the_contact(form_hub: RunningHub) -> None:
    """`?phone=+4930123456` typed without encoding the plus: the query decodes it as a space, and the default region
    (RU) read the rest as the Russian number +74930123456, so the German contact was not found."""
    first = await _post(form_hub, {"name": "Berlin", "phone": "+49 30 123456"})
    await _post(form_hub, {"name": "Moscow", "phone": "+79161112233"})
    await form_hub.wait_items("/api/leads", 2)
    contact_id = (await form_hub.api(f"/api/inquiries/{first}"))["contact_id"]
    for query in ("phone=+4930123456", "phone=+49+30+123456", "phone=%2B4930123456", "limit=5&phone=+4930123456"):
        url = URL(form_hub.url(f"/api/contacts?{query}"), encoded=True)
        async with form_hub.session.get(url) as response:
            assert response.status == 200, await response.text()
            assert [c["id"] for c in (await response.json())["items"]] == [contact_id], query


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


async def test_a_list_refuses_a_parameter_it_does_not_take_or_one_given_twice(form_hub: RunningHub) -> None:
    """A misspelt filter was ignored and the answer listed everything; of a repeated one the first counted; a status
    or channel no item can have listed nothing."""
    await _post(form_hub, {"name": "A", "phone": "+79161112233"})
    await form_hub.wait_items("/api/leads", 1)
    refused = [
        ("/api/leads", [("stauts", "won")], "unknown parameter 'stauts'"),
        ("/api/leads", [("status", "won"), ("status", "new")], "'status' given more than once"),
        ("/api/contacts", [("mail", "a@example.com")], "unknown parameter 'mail'"),
        ("/api/inquiries", [("lead", "x"), ("chanel", "form")], "unknown parameter 'chanel', 'lead'"),
        ("/api/orders", [("channel", "form")], "unknown parameter 'channel'"),
        ("/api/tasks", [("lead_id", "x"), ("limit", "5"), ("limit", "6")], "'limit' given more than once"),
        ("/api/actions", [("rule", "x")], "unknown parameter 'rule'"),
        # a filter of a closed set with a value outside it matched nothing: "no such leads" instead of "wrong filter"
        ("/api/leads", [("status", "Won")], "status 'Won' is not one of new, in_progress, won, lost, closed"),
        ("/api/leads", [("channel", "web")], "channel 'web' is not one of email, phone, chat, form, shop"),
        ("/api/inquiries", [("channel", "telegram")], "channel 'telegram' is not one of email,"),
        ("/api/orders", [("status", "shipped")], "status 'shipped' is not one of new, paid, fulfilled,"),
        ("/api/tasks", [("status", "closed")], "status 'closed' is not one of open, done"),
        ("/api/actions", [("status", "error")], "status 'error' is not one of pending, running, done, failed,"),
    ]
    for path, params, expected in refused:
        async with form_hub.session.get(form_hub.url(path), params=params) as response:
            body = await response.json()
            assert response.status == 400, (path, params, body)
            assert body["error"] == "bad_parameter" and expected in body["detail"], body
    async with form_hub.session.get(form_hub.url("/api/leads"), params=[("stauts", "won")]) as response:
        assert "this list takes channel, contact_id, cursor, limit, merged, status" in (await response.json())["detail"]
    # every documented filter is taken
    for path, params in [
        ("/api/leads", {"contact_id": "x", "channel": "form", "status": "new", "merged": "false"}),
        ("/api/contacts", {"email": "a@example.com", "phone": "+79161112233", "review": "false", "merged": "false"}),
        ("/api/inquiries", {"contact_id": "x", "lead_id": "x", "channel": "form", "dropped": "false"}),
        ("/api/orders", {"contact_id": "x", "status": "paid", "connector": "shop"}),
        ("/api/tasks", {"lead_id": "x", "contact_id": "x", "status": "open"}),
        ("/api/actions", {"rule_id": "x", "status": "failed"}),
    ]:
        assert "items" in await form_hub.api(path, limit=5, **params), path


LIST_FILTERS = {
    "/api/leads": ("contact_id", "channel", "status", "merged"),
    "/api/contacts": ("email", "phone", "review", "merged"),
    "/api/inquiries": ("contact_id", "lead_id", "channel", "dropped"),
    "/api/orders": ("contact_id", "status", "connector"),
    "/api/tasks": ("lead_id", "contact_id", "status"),
    "/api/actions": ("rule_id", "status"),
    "/api/dead-letters": ("resolved",),
}


async def test_an_empty_filter_is_400_naming_it_not_the_whole_list(form_hub: RunningHub) -> None:
    """`?phone=` (a script's unset variable) answered every contact, as `?contact_id=` every lead: a script looking
    one person up would act on everyone."""
    await _post(form_hub, {"name": "A", "phone": "+79161112233"})
    await form_hub.wait_items("/api/contacts", 1)
    for path, filters in LIST_FILTERS.items():
        for name in filters:
            for value in ("", "  "):
                async with form_hub.session.get(form_hub.url(path), params={name: value}) as response:
                    body = await response.json()
                    assert (response.status, body["error"]) == (400, "bad_parameter"), (path, name, body)
                    assert body["detail"].startswith(f"parameter '{name}' is empty: give a value, or leave it out")
    assert len((await form_hub.api("/api/contacts", cursor=""))["items"]) == 1  # an empty cursor is the first page


async def test_pipeline_lag_goes_back_to_zero_once_nothing_waits(form_hub: RunningHub) -> None:
    """The gauge was set only when a batch committed: after a backlog drained it kept the last batch's age for
    as long as no new item came, and an alert on it fired over an idle pipeline."""
    await _post(form_hub, {"name": "Lag", "phone": "+79161110000"})
    await form_hub.wait_items("/api/inquiries", 1)
    form_hub.hub.metrics.pipeline_lag.set(600)  # what a drained backlog's last batch leaves behind

    async def lag_is_zero() -> bool:
        async with form_hub.session.get(form_hub.url("/metrics")) as response:
            text = await response.text()
        [line] = [x for x in text.splitlines() if x.startswith("leadhub_pipeline_lag_seconds ")]
        return float(line.split()[1]) == 0

    await wait_for(lag_is_zero, timeout=20, what="the lag gauge to go back to 0 with nothing pending")
