"""The public pages never answer 5xx for what a visitor sends: odd scores, bodies aiohttp cannot read as a form
(multipart without its boundary, an unknown charset, a `Content-Encoding` that is not what it says); an expired
unsubscribe link says it expired."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from leadhub.store import trigger_data
from leadhub.store.models import Feedback
from leadhub.triggers import links, survey
from tests.conftest import RunningHub


async def _signed(running: RunningHub, clock: Any, order_id: str) -> str:
    async with running.engine.begin() as conn:
        key = await trigger_data.signing_key(conn, clock.now())
    return links.survey_token(key, SimpleNamespace(id=order_id, lead_id=None), None, clock.now())


async def _post(running: RunningHub, path: str, **kwargs: Any) -> tuple[int, str]:
    async with running.session.post(running.url(path), **kwargs) as response:
        return response.status, await response.text()


@pytest.mark.parametrize("score", ["²", "9" * 5000, "٣٣", "1" * 40, "\uff10"])
def test_a_score_that_is_not_0_to_10_in_ascii_digits_is_asked_again(score: str) -> None:
    with pytest.raises(survey.BadAnswer):
        survey.parse_answer(score, None)


def test_scores_in_range_are_read() -> None:
    assert survey.parse_answer(" 7 ", " fine ") == (7, "fine")
    assert survey.parse_answer("010", None) == (10, None)


async def test_bodies_that_are_not_a_form_get_the_form_again_never_a_500(trigger_hub, clock) -> None:
    running = await trigger_hub()
    bodies: list[dict[str, Any]] = [
        {"data": "score=²"},
        {"data": {"score": "9" * 5000}},
        {"data": b"garbage", "headers": {"Content-Type": "multipart/form-data"}},
        {"data": b"garbage", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
        {"data": b"score=5", "headers": {"Content-Type": "application/x-www-form-urlencoded; charset=nope"}},
        {
            "data": b'--xx\r\nContent-Disposition: form-data; name="score"\r\n'
            b"Content-Type: text/plain; charset=nope\r\n\r\n5\r\n--xx--\r\n",
            "headers": {"Content-Type": "multipart/form-data; boundary=xx"},
        },
        # the server drops the connection after a body it could not decode: not one to reuse
        {"data": b"score=5", "headers": {"Content-Encoding": "gzip", "Connection": "close"}},
    ]
    path = "/s/" + await _signed(running, clock, "o-odd")
    for body in bodies:
        status, html = await _post(running, path, **body)
        assert status == 400 and '<form method="post"' in html and 'role="alert"' in html, (body, status, html)
    status, html = await _post(running, path, data={"score": "4"})
    assert status == 200 and "Your answer was recorded" in html
    async with running.engine.connect() as conn:
        rows = (await conn.execute(select(Feedback.__table__))).all()
    assert [(r.order_id, r.score) for r in rows] == [("o-odd", 4)]


async def test_an_expired_unsubscribe_link_says_it_expired(trigger_hub, clock) -> None:
    running = await trigger_hub()
    async with running.engine.begin() as conn:
        key = await trigger_data.signing_key(conn, clock.now())
    path = "/u/" + links.unsubscribe_token(key, "ivan@example.com", clock.now())
    clock.advance(links.UNSUBSCRIBE_VALID_FOR + timedelta(days=1))
    for method in ("GET", "POST"):
        async with running.session.request(method, running.url(path)) as response:
            html = await response.text()
        assert response.status == 410 and "expired" in html and "not valid" not in html, (method, html)


async def test_a_store_away_gives_the_page_saying_so_and_the_link_works_after(trigger_hub, clock) -> None:
    """It was the API's JSON 500 ("internal error") for a customer who clicked a link while the database was away."""
    running = await trigger_hub()
    path = "/s/" + await _signed(running, clock, "o-away")
    async with running.engine.begin() as conn:  # the table the page reads, gone as in an outage
        await conn.exec_driver_sql("ALTER TABLE feedback RENAME TO feedback_away")
    try:
        async with running.session.get(running.url(path)) as response:
            html = await response.text()
            assert response.status == 503 and response.headers["Retry-After"] == "60", html
            assert response.content_type == "text/html" and "Please try again in a few minutes" in html
    finally:
        async with running.engine.begin() as conn:
            await conn.exec_driver_sql("ALTER TABLE feedback_away RENAME TO feedback")
    status, html = await _post(running, path, data={"score": "9"})
    assert status == 200 and "Your answer was recorded" in html


async def test_an_answer_body_over_64_kib_is_refused_before_it_is_read(trigger_hub, clock) -> None:
    """The app's limit is sized for webhooks (64 MiB); a survey link must not make the page buffer that much."""
    running = await trigger_hub()
    path = "/s/" + await _signed(running, clock, "o-big")
    status, html = await _post(running, path, data={"score": "5", "comment": "x" * 70_000})
    assert status == 413 and "The answer is too long" in html and '<form method="post"' in html
    status, html = await _post(running, path, data={"score": "5", "comment": "ок " * 1600})  # ~4,800 characters
    assert status == 200 and "Your answer was recorded" in html
