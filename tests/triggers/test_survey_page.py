"""The survey loop end to end over HTTP: the emailed link, the page (plain HTML form), the answer, feedback.received,
the low-score task; forged, expired and repeated answers; RFC 8058 one-click unsubscribe."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from sqlalchemy import select

from leadhub.store.models import EmailSuppression, Feedback
from leadhub.triggers.sandbox import PACKAGE_TEMPLATES
from tests.conftest import RunningHub
from tests.helpers import wait_for
from tests.triggers.conftest import Shop, SmtpServer, use_example


async def _survey_mail(
    running: RunningHub, smtp: SmtpServer, clock: Any, public_url: str = "https://shop.example"
) -> tuple[Shop, str, dict[str, str], Any]:
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer()
    order_id = await shop.order(contact_id, lead_id, "1001")
    await shop.emit("order.completed", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)

    async def scheduled() -> bool:
        return bool(await shop.actions(rule_id="post-sale-survey"))

    await wait_for(scheduled, timeout=30, what="the survey to be scheduled")
    clock.advance(timedelta(days=7))

    async def mailed() -> bool:
        return bool(smtp.inbox.messages)

    await wait_for(mailed, timeout=30, what="the survey email")
    message = smtp.inbox.messages[0]
    text = message.get_payload()[0].get_payload(decode=True).decode()
    link = re.search(re.escape(public_url) + r"(/s/\S+)", text)
    assert link, text
    return shop, link.group(1), {"contact_id": contact_id, "lead_id": lead_id, "order_id": order_id}, message


async def _get(running: RunningHub, path: str) -> tuple[int, str]:
    async with running.session.get(running.url(path)) as response:
        return response.status, await response.text()


def _form_target(page_url: str, html: str) -> str:
    """Where a browser posts the page's form: its action resolved against the page's URL, or the page's URL."""
    form = re.search(r"<form[^>]*>", html)
    assert form, html
    action = re.search(r'\saction="([^"]*)"', form.group(0))
    return urljoin(page_url, action.group(1)) if action else page_url


async def _post(running: RunningHub, path: str, data: Any) -> tuple[int, str]:
    async with running.session.post(running.url(path), data=data) as response:
        return response.status, await response.text()


async def test_answer_a_low_score_and_a_task_is_created(trigger_hub, smtp_server, clock, rules_dir: Path) -> None:
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    _shop, path, ids, _ = await _survey_mail(running, smtp_server, clock)

    status, html = await _get(running, path)
    assert status == 200 and '<form method="post"' in html and "<script" not in html
    assert len(re.findall(r'type="radio" name="score" value="\d+"', html)) == 11

    status, html = await _post(running, path, {"score": "11", "comment": "x"})
    assert status == 400 and "score from 0 to 10" in html
    status, html = await _post(running, path, {"score": "3", "comment": "Late <b>delivery</b>"})
    assert status == 200 and "Your answer was recorded" in html

    (task,) = await running.wait_items("/api/tasks", 1, timeout=30, lead_id=ids["lead_id"])
    assert task["title"] == "Call back: survey score 3 for order #1001"
    assert task["assignee"] == "anna" and task["note"] == "Late <b>delivery</b>"
    async with running.engine.connect() as conn:
        rows = (await conn.execute(select(Feedback.__table__))).all()
    assert [(r.order_id, r.score) for r in rows] == [(ids["order_id"], 3)]

    status, html = await _post(running, path, {"score": "10"})
    assert status == 200 and "already been answered" in html
    status, html = await _get(running, path)
    assert status == 200 and "already been answered" in html


async def test_high_score_creates_no_task(trigger_hub, smtp_server, clock, rules_dir: Path) -> None:
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    _shop, path, _ids, _ = await _survey_mail(running, smtp_server, clock)
    assert (await _post(running, path, {"score": "9"}))[0] == 200
    from leadhub.store.models import RuleTrace

    async def evaluated() -> Any:
        async with running.engine.connect() as conn:
            query = select(RuleTrace.__table__).where(RuleTrace.rule_id == "low-score-task")
            return (await conn.execute(query)).first()

    trace = await wait_for(evaluated, timeout=30, what="the low-score rule to be evaluated")
    assert trace.matched is False and trace.conditions == [{"if": "feedback.score <= 6", "result": False}]
    assert (await running.api("/api/actions", rule_id="low-score-task"))["items"] == []


async def test_forged_and_expired_links_get_a_clear_page(trigger_hub, smtp_server, clock, rules_dir: Path) -> None:
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    _, path, _, _ = await _survey_mail(running, smtp_server, clock)
    body, mac = path.rsplit(".", 1)
    forged = f"{body}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    for bad in (forged, "/s/nonsense", "/s/" + "x" * 3000, "/s/a.b.c"):
        status, html = await _get(running, bad)
        assert status == 404 and "not valid" in html, bad
        status, html = await _post(running, bad, {"score": "1"})
        assert status == 404 and "not valid" in html, bad
    clock.advance(timedelta(days=31))
    status, html = await _get(running, path)
    assert status == 410 and "expired" in html
    assert (await _post(running, path, {"score": "1"}))[0] == 410


async def test_one_click_unsubscribe(trigger_hub, smtp_server, clock, rules_dir: Path) -> None:
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    _, _, _, message = await _survey_mail(running, smtp_server, clock)
    url = message["List-Unsubscribe"].strip("<>")
    path = url.removeprefix("https://shop.example")
    status, html = await _get(running, path)
    assert status == 200 and "ivan@example.com" in html and "<form" in html
    status, html = await _post(running, path, "List-Unsubscribe=One-Click")
    assert status == 200 and "Unsubscribed" in html
    async with running.engine.connect() as conn:
        rows = (await conn.execute(select(EmailSuppression.__table__))).all()
    assert [(r.address, r.reason) for r in rows] == [("ivan@example.com", "unsubscribe")]
    assert (await _get(running, "/u/forged.token"))[0] == 404


@pytest.fixture(params=["shipped", "admin-with-action"])
def page_templates(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    """None for the shipped pages; else an admin's copy of them written with `action="{{ action }}"`."""
    if request.param == "shipped":
        return None
    pages = tmp_path / "templates" / "pages"
    pages.mkdir(parents=True)
    for name in ("survey", "unsubscribe"):
        shipped = (PACKAGE_TEMPLATES / "pages" / f"{name}.html").read_text()
        (pages / f"{name}.html").write_text(shipped.replace('method="post"', 'method="post" action="{{ action }}"'))
    return pages.parent


async def test_forms_post_back_to_their_page_under_a_public_url_prefix(
    trigger_hub, smtp_server, clock, rules_dir: Path, page_templates: Path | None
) -> None:
    """LEADHUB_PUBLIC_URL https://shop.example/crm behind a proxy that strips /crm: the forms had
    action="/s/<token>", so the browser posted outside /crm and the answers never reached the hub. An admin's
    copy of the pages written with `action="{{ action }}"` posts back too."""
    use_example(rules_dir, "survey.yaml")
    settings = {"templates_dir": str(page_templates)} if page_templates else {}
    prefix = "https://shop.example/crm"
    running = await trigger_hub(smtp_url=smtp_server.url, public_url=prefix, **settings)
    _, survey_path, _, message = await _survey_mail(running, smtp_server, clock, prefix)
    unsubscribe_path = message["List-Unsubscribe"].strip("<>").removeprefix(prefix)
    for path in (survey_path, unsubscribe_path):
        status, html = await _get(running, path)  # as the proxy forwards the emailed link
        assert status == 200 and _form_target(prefix + path, html) == prefix + path, html
        assert ('action="' in html) == (page_templates is not None)
