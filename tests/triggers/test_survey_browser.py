"""The survey page in a real browser (headless Chromium, JavaScript disabled): the customer clicks a score,
types a comment, presses Send; the answer lands and the low-score rule creates a task."""

from __future__ import annotations

from pathlib import Path

from tests.triggers.cdp import Browser, chromium_path
from tests.triggers.conftest import use_example
from tests.triggers.test_survey_page import _survey_mail


async def test_survey_round_trip_in_headless_chromium(trigger_hub, smtp_server, clock, rules_dir, tmp_path: Path):
    chromium_path()
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url=smtp_server.url)
    _, path, ids, _ = await _survey_mail(running, smtp_server, clock)
    browser = Browser(tmp_path / "profile")
    try:
        await browser.start()
        await browser.goto(running.url(path))
        await browser.click('input[name="score"][value="4"]')
        await browser.type("#comment", "The parcel came late")
        await browser.submit_by_clicking('button[type="submit"]')
        assert "Your answer was recorded" in await browser.text("#result")
        (task,) = await running.wait_items("/api/tasks", 1, timeout=30, lead_id=ids["lead_id"])
        assert task["title"] == "Call back: survey score 4 for order #1001"
        assert task["note"] == "The parcel came late"

        await browser.goto(running.url(path[:-3] + "xyz"))  # a damaged link
        assert "exactly as it was sent" in await browser.text("#result")
    finally:
        await browser.close()
