"""The closure-compiled conditions agree with Jinja2's own evaluation, errors included."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser

from leadhub.triggers.context import build_context
from leadhub.triggers.fastexpr import compile_fast
from leadhub.triggers.sandbox import Templates

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CONTEXTS = [
    build_context(
        {"id": "e", "type": "order.completed", "data": {"n": 3}},
        {
            "order": {"id": "o", "status": "completed", "total": "10.00", "items": [{"sku": "a"}]},
            "contact": {"id": "c", "email": "a@example.com", "unsubscribed": False, "name": None},
            "lead": {"id": "l", "tags": ["vip", "callback"], "owner": None, "channel": "shop"},
        },
        NOW,
    ),
    build_context({"id": "e", "type": "order.completed", "data": {}}, {"order": None, "contact": None}, NOW),
]
EXPRESSIONS = [
    "contact.email and not contact.unsubscribed",
    "order.status == 'refunded' or order.status == 'cancelled'",
    "'vip' in lead.tags",
    "'x' not in lead.tags",
    "lead.owner is none",
    "contact.name is defined",
    "event.data.n > 2 and event.data.n <= 3",
    "1 < event.data.n < 5",
    "order.status in ['completed', 'fulfilled']",
    "order.total == '10.00'",
    "event.data.missing",
    "lead.nothing == 1",
    "not lead",
    "order['status'] != 'new'",
    "lead.tags | length > 1",  # a filter: Jinja keeps this one
]


def _outcome(fn: Any, context: dict[str, Any]) -> Any:
    try:
        return ("value", bool(fn(**context)))
    except Exception as exc:
        return ("error", type(exc).__name__)


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_fast_conditions_agree_with_jinja(source: str) -> None:
    env = Templates().expressions
    jinja = env.compile_expression(source, undefined_to_none=False)
    tree = Parser(env, source, state="variable").parse_expression()
    fast = compile_fast(tree, env)
    if "|" in source:
        assert fast is None
        return
    assert fast is not None
    for context in CONTEXTS:
        assert _outcome(fast, context) == _outcome(jinja, context), (source, context)


def test_fast_path_keeps_the_sandbox() -> None:
    env = Templates().expressions
    tree = Parser(env, "x.__class__", state="variable").parse_expression()
    fast = compile_fast(tree, env)
    assert fast is not None
    with pytest.raises(SecurityError):
        bool(fast(x="a"))


def test_a_data_key_named_like_a_record_method_is_the_value_in_conditions_and_templates() -> None:
    """`inquiry.fields.plain` (a form field called `plain`) is the field: Jinja's getattr found Record's own
    `plain` method first, so the condition was false (the fast path said true) and a template printed
    `<bound method Record.plain of Record({...every field...})>`."""
    from leadhub.triggers.sandbox import Scope

    templates = Templates()
    context = build_context({"id": "e", "type": "t", "data": {"form": {"plain": "yes"}}}, {}, NOW)
    source = "event.data.form.plain == 'yes'"
    jinja = templates.expressions.compile_expression(source, undefined_to_none=False)
    assert _outcome(jinja, context) == ("value", True)
    assert _outcome(templates.expression(source, Scope(("event",))), context) == ("value", True)
    assert templates.inline("{{ event.data.form.plain }}", Scope(("event",))).render(context) == "yes"
