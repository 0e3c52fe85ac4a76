"""Conditions and templates cannot reach Python internals; inbound data is only ever data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from leadhub.triggers.actions.base import RenderEnv
from leadhub.triggers.compile import compile_rule
from leadhub.triggers.context import build_context
from leadhub.triggers.sandbox import Scope, TemplateProblem, Templates
from leadhub.triggers.schema import Rule

SCOPE = Scope(("event", "lead", "contact", "inquiry"))
EXPRESSIONS = [
    "lead.__class__",
    "lead['__class__']",
    "''.__class__.__mro__[1].__subclasses__()",
    "lead|attr('__class__')",
    "cycler.__init__.__globals__",
    "lipsum.__globals__['os']",
    "self.__init__.__globals__",
    "range.__class__",
    "'{0.__class__}'.format(lead)",
    "lead.title.format_map(lead)",
    "(contact|map(attribute='__class__'))|list",
    "(contact|selectattr('__class__'))|list",
    "(contact|groupby('__class__'))|list",
    "(contact|sort(false, false, '__class__'))|list",
    "(contact|max(false, '_data'))",
    "lead.mro()",
    "config.items()",
    "namespace(a=1)",
    "_private",
    "lead._data",
    "event.data.gi_frame",
]
TEMPLATES = [
    "{% include 'email/survey.txt' %}",
    "{% import 'email/survey.txt' as x %}",
    "{% from 'email/survey.txt' import x %}",
    "{% extends 'email/survey.txt' %}",
    "{% autoescape false %}{{ contact.name }}{% endautoescape %}",
    "{{ contact.name|safe }}",
    "{{ lead.__class__ }}",
    "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
    "{{ (lead|attr('_data')) }}",
]


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_condition_payloads_are_rejected_at_check_time(source: str) -> None:
    with pytest.raises(TemplateProblem):
        Templates().expression(source, SCOPE)


@pytest.mark.parametrize("source", TEMPLATES)
def test_template_payloads_are_rejected_at_check_time(source: str) -> None:
    with pytest.raises(TemplateProblem):
        Templates().inline(source, SCOPE, html=True)


def test_the_runtime_sandbox_stops_what_the_check_would_miss() -> None:
    """Second line of defence: compiled without the check, internals still raise SecurityError."""
    env = Templates().expressions
    with pytest.raises((SecurityError, UndefinedError)):
        env.compile_expression("x.__class__.__mro__")(x="a")
    with pytest.raises(SecurityError):
        env.compile_expression("x.append(1)")(x=[])  # immutable: no mutation of lists


def test_inbound_data_is_never_evaluated_and_html_is_escaped() -> None:
    rule = Rule.model_validate(
        {"id": "r", "on": "lead.created", "do": [{"create_task": {"title": "call {{ contact.name }}"}}]}
    )
    compiled = compile_rule(rule, Templates())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    hostile = "{{ 7*7 }}{% include 'x' %}{{ ''.__class__ }}"
    context = build_context({"id": "e", "type": "lead.created", "data": {}}, {"contact": {"name": hostile}}, now)
    rendered = compiled.actions[0].render(context, RenderEnv(b"k", None, now))
    assert rendered["title"] == f"call {hostile}"
    html = Templates().inline("<b>{{ contact.name }}</b>", SCOPE, html=True)
    assert html.render(**build_context({}, {"contact": {"name": "<script>x</script>"}}, now)) == (
        "<b>&lt;script&gt;x&lt;/script&gt;</b>"
    )


def test_a_field_named_like_a_dict_method_is_the_field() -> None:
    """`order.items` is the order's items, not dict.items (records are not dicts)."""
    scope = Scope(("event", "order"))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    function = Templates().expression("order.items | length == 2", scope)
    assert function(**build_context({}, {"order": {"items": [{"sku": "a"}, {"sku": "b"}]}}, now)) is True
