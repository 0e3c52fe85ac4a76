"""Money amounts are numbers to rules and print as the shop sent them; comparing them with text is a load problem."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from leadhub.triggers.context import build_context
from leadhub.triggers.sandbox import Scope, TemplateProblem, Templates
from tests.helpers import run_leadhub

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SCOPE = Scope(("event", "order", "contact", "lead", "inquiry"))
ITEMS = [
    {"name": "Mug", "quantity": 2, "price": "49.50", "total": "99.00"},
    {"name": "Pen", "quantity": 1, "total": "5.00"},
]


def _context(total: Any) -> dict[str, Any]:
    event = {"id": "e", "type": "order.paid", "data": {"order_id": "o", "total": total}}
    order = {"id": "o", "status": "paid", "total": total, "currency": "EUR", "items": ITEMS}
    return build_context(event, {"order": order, "contact": None, "lead": None, "inquiry": None}, NOW)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("order.total > 100", {"99.00": False, "1500.00": True}),
        ("order.total >= 99", {"99.00": True, "1500.00": True}),
        ("order.total == 1500", {"99.00": False, "1500.00": True}),
        ("order.total == 99.0 or order.total < 50", {"99.00": True, "1500.00": False}),
        ("order.total > 100.10", {"99.00": False, "1500.00": True}),
        ("100 < order.total < 2000", {"99.00": False, "1500.00": True}),
        ("event.data.total > 100", {"99.00": False, "1500.00": True}),
        ("order.items[0].price < 50", {"99.00": True, "1500.00": True}),
        ("order.total | float > 100", {"99.00": False, "1500.00": True}),  # rules written for text keep working
        ("order.total * 1.2 > 1000", {"99.00": False, "1500.00": True}),  # a Jinja expression, not the fast path
    ],
)
def test_an_amount_compares_as_a_number_in_the_fast_path_and_in_jinja(source: str, expected: dict[str, bool]) -> None:
    """`order.total > 100` raised TypeError (text against a number: the rule was traced as not evaluable), and
    `order.total > '100'` compared text: '99.00' > '100'. Both evaluators give the same answer."""
    templates = Templates()
    fast = templates.expression(source, SCOPE)
    jinja = templates.expressions.compile_expression(source, undefined_to_none=False)
    for total, want in expected.items():
        context = _context(total)
        assert bool(fast(**context)) is want, (source, total)
        assert bool(jinja(**context)) is want, (source, total)


def test_an_amount_prints_as_the_shop_sent_it() -> None:
    templates = Templates()
    source = (
        "{{ order.total }} {{ order.total ~ ' ' ~ order.currency }} {{ order.total | tojson }} "
        "{{ '%.1f' | format(order.total) }} {{ event.data.total }} {{ order.items | sum(attribute='total') }}"
    )
    for html in (False, True):
        out = templates.inline(source, SCOPE, html=html).render(**_context("1500.00"))
        assert out == '1500.00 1500.00 EUR "1500.00" 1500.0 1500.00 104.0', out
    items = templates.inline("{{ order.items | tojson }}", SCOPE).render(**_context("1500.00"))
    assert json.loads(items) == ITEMS, "records and amounts in |tojson: as stored, not a TypeError"


def test_what_is_no_number_stays_as_it_is() -> None:
    """None (an order without a total) and text that is no number: comparing them is an error, traced."""
    for total in (None, "n/a", "nan"):
        context = _context(total)
        assert context["order"].total == total
        with pytest.raises(TypeError):
            bool(Templates().expression("order.total > 100", SCOPE)(**context))
    assert str(_context(1500)["order"].total) == "1500", "a JSON number in a `rules test` event file"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("order.total == '10.00'", "order.total is a number: compare it with a number (order.total == 10.00)"),
        ("order.total > '100'", "order.total is a number: compare it with a number (order.total > 100)"),
        ("'100' < order.total", "order.total is a number: compare it with a number (order.total > 100)"),
        ("{% if order.total != 'x' %}y{% endif %}", "order.total is a number: compare it with a number"),
        ("event.data.total == '1500.00'", "event.data.total is a number: compare it with a number"),
    ],
)
def test_an_amount_compared_with_text_is_a_problem_when_the_rules_load(source: str, message: str) -> None:
    """Never true (or always) without an error: the rule would silently never match."""
    templates = Templates()
    with pytest.raises(TemplateProblem, match=message.replace("(", r"\(").replace(")", r"\)")):
        if "{%" in source:
            templates.inline(source, SCOPE)
        else:
            templates.expression(source, SCOPE)


def test_rules_test_runs_a_rule_on_the_order_total(tmp_path: Path) -> None:
    """The dry run, like the daemon: 'survey only for orders over 100'."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "rules:\n  - id: big\n    on: order.completed\n    if: order.total > 100\n"
        '    do: [{create_task: {title: "big order {{ order.total }} {{ order.currency }}"}}]\n'
    )
    for total, outcome in (("99.00", "not matched: condition is false"), ("1500.00", "matched")):
        event = {"type": "order.completed", "data": {"order_id": "o1"}}
        event["order"] = {"id": "o1", "status": "completed", "total": total, "currency": "EUR"}
        (tmp_path / "e.json").write_text(json.dumps(event))
        run = run_leadhub("rules", "test", "e.json", "--rules", str(rules), cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert f"rule 'big': {outcome}" in run.stdout, run.stdout
    assert "big order 1500.00 EUR" in run.stdout, run.stdout


def test_a_webhook_sends_the_event_with_its_amounts_as_stored() -> None:
    """The default webhook body is the event as published: the total stays the text it was, not 1500.0."""
    from leadhub.triggers.context import plain

    event = plain(_context("1500.00")["event"])
    assert event == {"id": "e", "type": "order.paid", "data": {"order_id": "o", "total": "1500.00"}}
    assert plain(_context("1500.00")["order"])["items"] == ITEMS
