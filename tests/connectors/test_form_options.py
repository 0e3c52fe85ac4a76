"""Form connector options: field mapping (its targets checked at start-up), CORS allow-list, the 303 thank-you
redirect for plain HTML forms."""

from __future__ import annotations

import re

import pytest

from leadhub.hub.config import ConfigError, config_from_dict
from leadhub.hub.embedded_nats import EmbeddedNats
from tests.conftest import HubFactory

SITE = "https://www.example.com"


async def test_field_mapping_reads_custom_names(make_hub: HubFactory) -> None:
    hub = await make_hub(
        [
            {
                "name": "crm-form",
                "type": "form",
                "rate_limit": None,
                "fields": {"fio": "name", "contact_phone": "phone", "note": "message"},
            }
        ]
    )
    async with await hub.post(
        "/hooks/crm-form",
        data={"fio": "петр сидоров", "contact_phone": "8 916 000 11 22", "note": "нужна доставка", "city": "Tver"},
    ) as response:
        inquiry_id = (await response.json())["id"]
    leads = await hub.wait_items("/api/leads", 1)
    inquiry = await hub.api(f"/api/inquiries/{inquiry_id}")
    assert (inquiry["name"], inquiry["phone"], inquiry["message"]) == ("Петр Сидоров", "+79160001122", "нужна доставка")
    assert inquiry["fields"] == {"city": "Tver"}
    assert leads[0]["message"] == "нужна доставка"


async def test_cors_preflight_and_allowed_origin(make_hub: HubFactory) -> None:
    hub = await make_hub([{"name": "site-form", "type": "form", "rate_limit": None, "cors_origins": [SITE]}])
    preflight = {"Origin": SITE, "Access-Control-Request-Method": "POST"}
    async with hub.session.options(hub.url("/hooks/site-form"), headers=preflight) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == SITE
        assert "Idempotency-Key" in response.headers["Access-Control-Allow-Headers"]
    async with hub.session.options(hub.url("/hooks/site-form"), headers={"Origin": "https://evil.example"}) as response:
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
    async with await hub.post("/hooks/site-form", json={"name": "x"}, headers={"Origin": SITE}) as response:
        assert response.status == 202 and response.headers["Access-Control-Allow-Origin"] == SITE


async def test_plain_html_form_is_redirected_to_the_thank_you_page(make_hub: HubFactory) -> None:
    hub = await make_hub([{"name": "site-form", "type": "form", "rate_limit": None, "redirect_url": f"{SITE}/thanks"}])
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    async with hub.session.post(
        hub.url("/hooks/site-form"), data={"Name": "Browser"}, headers=browser, allow_redirects=False
    ) as response:
        assert response.status == 303 and response.headers["Location"] == f"{SITE}/thanks"
    async with await hub.post("/hooks/site-form", json={"name": "Script"}) as response:
        assert response.status == 202  # a script posting JSON gets the JSON answer
    await hub.wait_items("/api/leads", 2)
    async with hub.session.get(hub.url("/metrics")) as response:
        assert 'leadhub_intake_accepted_total{connector="site-form"} 2.0' in await response.text()


async def test_body_over_limit_is_refused_before_it_is_read_whole(make_hub: HubFactory) -> None:
    hub = await make_hub([{"name": "site-form", "type": "form", "rate_limit": None, "max_body": 4096}])

    async def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(100):
            yield b"x" * 1024

    async with hub.session.post(
        hub.url("/hooks/site-form"), data=chunks(), headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413
    async with hub.session.get(hub.url("/healthz")) as response:
        assert response.status == 200


async def test_field_mapping_targets_are_read_in_any_case(make_hub: HubFactory) -> None:
    hub = await make_hub(
        [{"name": "crm-form", "type": "form", "rate_limit": None, "fields": {"tel_number": "Phone", "fio_x": "NAME"}}]
    )
    async with await hub.post(
        "/hooks/crm-form", data={"fio_x": "Анна Лукина", "tel_number": "8 916 000 11 33"}
    ) as response:
        assert response.status == 202
    [inquiry] = await hub.wait_items("/api/inquiries", 1)
    assert (inquiry["name"], inquiry["phone"], inquiry["fields"]) == ("Анна Лукина", "+79160001133", {})


@pytest.mark.parametrize("connector", ["form", "tilda"])
async def test_field_mapping_names_are_matched_in_any_case(make_hub: HubFactory, connector: str) -> None:
    """README: `fields:` maps names "in any case", as the built-in names are read (`Phone` is `phone`): posted as
    FIO_X and TEL_X, fields mapped as fio_x and tel_x were kept on the inquiry and the contact got no name or phone."""
    options = {"rate_limit": None} if connector == "form" else {"secret": "t0k"}
    fields = {"fio_x": "name", "tel_x": "phone", "Mail_X": "email"}
    hub = await make_hub([{"name": "crm-form", "type": connector, "fields": fields} | options])
    data = {"FIO_X": "Case", "TEL_X": "89161110097", "mail_x": "Case@Example.com", " Note ": "kept"}
    async with await hub.post("/hooks/crm-form?token=t0k", data=data) as response:
        assert response.status == 202, await response.text()
    [inquiry] = await hub.wait_items("/api/inquiries", 1)
    assert (inquiry["name"], inquiry["phone"], inquiry["email"]) == ("Case", "+79161110097", "case@example.com")
    assert inquiry["fields"] == {" Note ": "kept"}


def test_two_mapped_names_that_differ_only_in_case_are_refused() -> None:
    form = {"name": "crm-form", "type": "form", "fields": {"fio": "name", "FIO": "phone"}}
    with pytest.raises(ConfigError, match=r"'fio' and 'FIO' are one name: names are matched in any case"):
        config_from_dict({"connectors": [form]}, env={})


def test_a_mapping_onto_a_field_leadhub_does_not_read_is_refused() -> None:
    form = {"name": "crm-form", "type": "form", "fields": {"fio_x": "nmae", "tel": "phone"}}
    with pytest.raises(ConfigError, match=r"'fio_x' -> 'nmae': not a field .* one of name, phone, email, message, co"):
        config_from_dict({"connectors": [form]}, env={})


@pytest.mark.parametrize(
    ("option", "problem"),
    [
        (
            {"max_body": 0},
            "max_body: 0 bytes would answer nearly every request 413; max_body is the largest body taken",
        ),
        ({"max_body": "1000B"}, "max_body: 1000 bytes would answer nearly every request 413"),
        ({"redirect_url": "thanks page"}, "redirect_url: 'thanks page' is not a page to send the browser to; write "),
        ({"redirect_url": "//www.example.com/thanks"}, "is not a page to send the browser to"),
        ({"cors_origins": [f"{SITE}/"]}, "cors_origins: 'https://www.example.com/' is not an origin; write scheme://"),
        ({"cors_origins": [SITE, f"{SITE}/contact"]}, "cors_origins: 'https://www.example.com/contact' is not an"),
        ({"cors_origins": ["www.example.com"]}, "is not an origin; write scheme://host[:port] with no path"),
    ],
    ids=["no-body", "under-1KiB", "not-a-url", "another-host", "trailing-slash", "path", "no-scheme"],
)
def test_options_that_cannot_work_are_refused_at_start_up(option: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        config_from_dict({"connectors": [{"name": "site-form", "type": "form"} | option]}, env={})


def test_options_that_can_work_are_taken() -> None:
    form = {
        "name": "site-form",
        "type": "form",
        "max_body": "1KiB",
        "redirect_url": "/thanks?from=form",
        "cors_origins": ["*", "http://localhost:3000", "https://пример.рф"],
    }
    [config] = config_from_dict({"connectors": [form]}, env={}).connectors
    assert config.cors_origins == ["*", "http://localhost:3000", "https://xn--e1afmkfd.xn--p1ai"]


async def test_an_origin_is_matched_as_the_browser_writes_it(make_hub: HubFactory) -> None:
    """Browsers send the scheme and host in lower case and leave out the default port: the configured origin is read
    so, else the site's posts would get no Access-Control-Allow-Origin and the browser would hide every answer."""
    hub = await make_hub(
        [{"name": "site-form", "type": "form", "rate_limit": None, "cors_origins": ["HTTPS://WWW.Example.com:443"]}]
    )
    async with await hub.post("/hooks/site-form", json={"name": "x"}, headers={"Origin": SITE}) as response:
        assert response.status == 202 and response.headers["Access-Control-Allow-Origin"] == SITE


async def test_behind_a_proxy_the_rate_limit_and_remote_ip_take_the_address_the_proxy_appended(
    make_hub: HubFactory,
) -> None:
    """The leftmost X-Forwarded-For entry is whatever the client sent: a new one per post got past the limit."""
    hub = await make_hub([{"name": "site-form", "type": "form", "rate_limit": "3/m", "trust_forwarded_for": True}])
    statuses = []
    for i in range(6):
        forwarded = {"X-Forwarded-For": f"10.9.9.{i}, 203.0.113.7"}
        async with await hub.post("/hooks/site-form", json={"name": f"Post {i}"}, headers=forwarded) as response:
            statuses.append(response.status)
    assert statuses == [202, 202, 202, 429, 429, 429]
    inquiries = await hub.wait_items("/api/inquiries", 3)
    assert {inquiry["meta"]["remote_ip"] for inquiry in inquiries} == {"203.0.113.7"}


async def test_an_allowed_site_can_read_the_form_connectors_refusals(
    make_hub: HubFactory, external_nats: EmbeddedNats
) -> None:
    """Without Access-Control-Allow-Origin on a 4xx or 503 the browser hides the answer from the site's script (it
    sees "Failed to fetch"), which could tell the visitor neither "too many, retry in a minute" nor what was wrong."""
    form = {"name": "site-form", "type": "form", "rate_limit": "3/m", "max_body": 1024, "cors_origins": [SITE]}
    hub = await make_hub([form], nats_url=external_nats.url)
    answers = []

    async def post(body: bytes = b'{"name": "Ann"}', origin: str = SITE) -> None:
        headers = {"Content-Type": "application/json", "Origin": origin}
        async with await hub.post("/hooks/site-form", data=body, headers=headers) as response:
            answers.append((response.status, response.headers.get("Access-Control-Allow-Origin"), response.headers))

    await post(b"{not json")
    await post(b'{"name": "' + b"x" * 2000 + b'"}')
    await external_nats.stop()
    await post()
    await post()  # a fourth post within the minute
    assert [(status, allowed) for status, allowed, _ in answers] == [(400, SITE), (413, SITE), (503, SITE), (429, SITE)]
    for status, _, headers in answers:
        assert headers["Access-Control-Expose-Headers"] == "Retry-After" and headers["Vary"] == "Origin", status
    assert int(answers[2][2]["Retry-After"]) > 0 and int(answers[3][2]["Retry-After"]) > 0

    answers.clear()
    await post(origin="https://evil.example")  # from the same client address: limited as well
    assert answers[0][:2] == (429, None) and "Access-Control-Expose-Headers" not in answers[0][2]
