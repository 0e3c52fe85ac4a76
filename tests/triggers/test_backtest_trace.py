"""`rules trace` shows evaluations and actions; `rules backtest` replays stored events (read-only)."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

from leadhub.store.db import create_engine, upgrade
from leadhub.triggers.backtest import backtest
from leadhub.triggers.clock import ManualClock
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.loader import load_rules
from leadhub.triggers.sandbox import Templates
from tests.helpers import run_leadhub, wait_for
from tests.triggers.conftest import START, Shop, use_example


def _cli(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_leadhub("rules", *args, cwd=cwd, env={"LEADHUB_DATABASE_URL": database_url})


async def test_trace_and_backtest(trigger_hub, clock, rules_dir: Path, database_url: str, tmp_path: Path) -> None:
    use_example(rules_dir, "survey.yaml")
    running = await trigger_hub(smtp_url="smtp://127.0.0.1:9")
    shop = Shop(running.engine, clock)
    contact_id, lead_id = await shop.customer()
    other_contact, other_lead = await shop.customer("olga@example.com", "Olga")
    for contact, lead, number in (
        (contact_id, lead_id, "1"),
        (contact_id, lead_id, "2"),
        (other_contact, other_lead, "3"),
    ):
        order_id = await shop.order(contact, lead, number)
        await shop.emit("order.completed", order_id, order_id=order_id, contact_id=contact, lead_id=lead)
        clock.advance(timedelta(hours=1))

    async def evaluated() -> bool:  # the second order's survey is held (`throttled`) behind the first's
        return len(await shop.actions()) == 3 and len((await running.api("/api/actions"))["items"]) == 3

    await wait_for(evaluated, timeout=30, what="the three events to be evaluated")
    counts = {c.rule_id: c for c in await backtest(running.engine, running.hub.triggers.index, START)}
    survey = counts["post-sale-survey"]
    assert (survey.events, survey.matched, survey.fired, survey.throttled) == (3, 3, 2, 1)
    assert counts["low-score-task"].events == 0

    traced = _cli("trace", "post-sale-survey", database_url=database_url, cwd=tmp_path)
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout.count("order.completed") == 3
    assert "skipped: throttled (post-sale-survey:contact:" in traced.stdout
    assert "if 'contact.email and not contact.unsubscribed': True" in traced.stdout
    assert traced.stdout.count("send_email  pending") == 2 and traced.stdout.count("send_email  throttled") == 1

    replay = _cli("backtest", "--since", "3650d", "--rules", str(rules_dir), database_url=database_url, cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    line = next(x for x in replay.stdout.splitlines() if x.startswith("post-sale-survey"))
    assert line.split()[1:] == ["3", "3", "2", "1", "0", "0", "0", "0"]
    bad = _cli("backtest", "--since", "soon", database_url=database_url, cwd=tmp_path)
    assert bad.returncode == 2 and "invalid duration" in bad.stderr


REPLAY_RULES = """
rules:
  - id: single
    on: order.completed
    wait: 1d
    do: [{create_task: {title: t}}]
  - id: restart
    on: order.completed
    wait: 1d
    mode: restart
    do: [{create_task: {title: t}}]
  - id: throttled
    on: order.completed
    mode: parallel
    throttle: {per: contact, for: 30d}
    do: [{create_task: {title: t}}]
  - id: refunded
    on: order.completed
    mode: parallel
    wait: 2h
    unless: "order.status == 'refunded'"
    do: [{create_task: {title: t}}]
  - id: never
    on: order.completed
    if: "order.number == 'nope'"
    do: [{create_task: {title: t}}]
"""


async def test_backtest_simulates_if_mode_throttle_and_unless(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "r.yaml").write_text(REPLAY_RULES)
    loaded = load_rules(tmp_path / "r", Templates())
    assert loaded.problems == []
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        clock = ManualClock(START)
        shop = Shop(engine, clock)
        contact_id, lead_id = await shop.customer()
        order_id = await shop.order(contact_id, lead_id, "1")
        for step in (timedelta(0), timedelta(hours=1), timedelta(days=2)):  # the third comes after the first is due
            clock.advance(step)
            await shop.emit("order.completed", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)
        await shop.set_status(order_id, "refunded")
        counts = {c.rule_id: c for c in await backtest(engine, RuleIndex(loaded.rules), START)}
    finally:
        await engine.dispose()
    view = {
        rule_id: (c.events, c.matched, c.fired, c.throttled, c.skipped, c.restarted, c.unless)
        for rule_id, c in counts.items()
    }
    assert view == {
        "single": (3, 3, 2, 0, 1, 0, 0),  # the second event finds the first run pending
        "restart": (3, 3, 3, 0, 0, 1, 0),  # the second replaces the first; the third finds nothing pending
        "throttled": (3, 3, 1, 2, 0, 0, 0),
        "refunded": (3, 3, 3, 0, 0, 0, 3),  # the order is refunded now: unless cancels every run
        "never": (3, 0, 0, 0, 0, 0, 0),
    }


UNLESS_THEN_THROTTLE = """
rules:
  - id: survey
    on: order.completed
    wait: 2h
    mode: parallel
    throttle: {per: contact, for: 30d}
    unless: "order.status == 'refunded'"
    do: [{create_task: {title: t}}]
"""


async def test_backtest_run_cancelled_by_unless_throttles_no_later_event(database_url: str, tmp_path: Path) -> None:
    """The live engine counts a run `unless` cancelled at its due time as not acted (store.throttled skips
    cancelled runs): the contact's next order a day later gets its survey. The replay must say the same."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "r.yaml").write_text(UNLESS_THEN_THROTTLE)
    loaded = load_rules(tmp_path / "r", Templates())
    assert loaded.problems == []
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        clock = ManualClock(START)
        shop = Shop(engine, clock)
        contact_id, lead_id = await shop.customer()
        refunded = await shop.order(contact_id, lead_id, "1")
        await shop.emit("order.completed", refunded, order_id=refunded, contact_id=contact_id, lead_id=lead_id)
        await shop.set_status(refunded, "refunded")
        clock.advance(timedelta(hours=1))  # the first run is still pending: it throttles this one
        await shop.emit("order.completed", refunded, order_id=refunded, contact_id=contact_id, lead_id=lead_id)
        clock.advance(timedelta(days=1))  # the first run was cancelled at its due time: no throttle
        kept = await shop.order(contact_id, lead_id, "2")
        await shop.emit("order.completed", kept, order_id=kept, contact_id=contact_id, lead_id=lead_id)
        (survey,) = await backtest(engine, RuleIndex(loaded.rules), START)
    finally:
        await engine.dispose()
    # The second event's run, held behind the first, is released when `unless` cancels the first (as the scheduler
    # does), and `unless` cancels it too; the later order is throttled by neither.
    assert (survey.events, survey.matched, survey.fired, survey.throttled, survey.unless) == (3, 3, 3, 0, 2)


async def test_backtest_fires_a_throttled_run_whose_holder_unless_cancels(database_url: str, tmp_path: Path) -> None:
    """As the scheduler does: the survey of an order completed while a refunded order's survey waited is released
    when that one is cancelled, and holds back the next one."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "r.yaml").write_text(
        """
rules:
  - id: survey
    on: order.completed
    wait: 7d
    unless: "order.status == 'refunded'"
    throttle: {per: contact, for: 30d}
    mode: parallel
    do: [{create_task: {title: t}}]
"""
    )
    loaded = load_rules(tmp_path / "r", Templates())
    assert loaded.problems == []
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        clock = ManualClock(START)
        shop = Shop(engine, clock)
        contact_id, lead_id = await shop.customer()
        orders = []
        for step in (timedelta(0), timedelta(days=3), timedelta(days=1)):
            clock.advance(step)
            orders.append(await shop.order(contact_id, lead_id, str(len(orders))))
            await shop.emit("order.completed", orders[-1], order_id=orders[-1], contact_id=contact_id, lead_id=lead_id)
        await shop.set_status(orders[0], "refunded")
        (survey,) = await backtest(engine, RuleIndex(loaded.rules), START)
    finally:
        await engine.dispose()
    assert (survey.events, survey.matched, survey.fired, survey.throttled, survey.unless) == (3, 3, 2, 1, 1)


def test_backtest_without_rules_directory_is_a_usage_error(database_url: str, tmp_path: Path) -> None:
    """As `rules check` and `rules test`: a mistyped --rules is exit 2 naming it, not an empty table and exit 0."""
    missing = tmp_path / "no-such-rules"
    replay = _cli("backtest", "--rules", str(missing), database_url=database_url, cwd=tmp_path)
    assert replay.returncode == 2, replay.stdout
    assert str(missing) in replay.stderr and "give --rules" in replay.stderr
    assert "events since" not in replay.stdout


async def test_backtest_counts_every_event_of_a_window_longer_than_a_page(database_url: str, tmp_path: Path) -> None:
    """The replay read at most 100,000 events and said nothing of the rest; it now reads the window a page
    at a time (here 2 events), so every event is counted."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "r.yaml").write_text(REPLAY_RULES)
    loaded = load_rules(tmp_path / "r", Templates())
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        clock = ManualClock(START)
        shop = Shop(engine, clock)
        contact_id, lead_id = await shop.customer()
        for number in "12345":
            order_id = await shop.order(contact_id, lead_id, number)
            await shop.emit("order.completed", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)
            clock.advance(timedelta(days=2))
        counts = {c.rule_id: c for c in await backtest(engine, RuleIndex(loaded.rules), START, page=2)}
    finally:
        await engine.dispose()
    assert (counts["single"].events, counts["single"].fired) == (5, 5)
    assert (counts["throttled"].fired, counts["throttled"].throttled) == (1, 4)


async def test_backtest_counts_a_rule_it_cannot_schedule_as_an_error(database_url: str, tmp_path: Path) -> None:
    """The daemon traces a rule whose anchored wait is empty for the event as not evaluable (docs/rules.md,
    Execution 1), like a condition that raises; the replay counted it neither as matched nor as an error."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "r.yaml").write_text(
        "rules:\n  - id: after-refund\n    on: order.completed\n    wait: order.refunded_at + 1d\n"
        "    do: [{create_task: {title: t}}]\n"
    )
    loaded = load_rules(tmp_path / "r", Templates())
    assert loaded.problems == []
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        shop = Shop(engine, ManualClock(START))
        contact_id, lead_id = await shop.customer()
        order_id = await shop.order(contact_id, lead_id, "1")  # completed, never refunded
        await shop.emit("order.completed", order_id, order_id=order_id, contact_id=contact_id, lead_id=lead_id)
        (count,) = await backtest(engine, RuleIndex(loaded.rules), START)
    finally:
        await engine.dispose()
    assert (count.events, count.matched, count.fired, count.errors) == (1, 0, 0, 1)
