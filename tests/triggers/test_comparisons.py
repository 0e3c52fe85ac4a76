"""Comparisons that read well and silently mislead are problems when the rules load, with the way to write them."""

from __future__ import annotations

import pytest

from leadhub.triggers.sandbox import Scope, TemplateProblem, Templates

SCOPE = Scope(("event", "inquiry", "contact", "lead"))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "inquiry.fields.budget > '100'",
            "> with the text '100' compares letters ('99' > '100'); "
            "compare numbers: inquiry.fields.budget | float > 100",
        ),
        ("'5' <= inquiry.fields['rooms count']", "inquiry.fields['rooms count'] | float >= 5"),
        ("event.data.n >= '2,5'", "event.data.n | float >= 2.5"),
        ("{% if lead.attribution.clicks < '10' %}x{% endif %}", "lead.attribution.clicks | float < 10"),
    ],
)
def test_ordering_against_text_that_reads_as_a_number_is_a_problem(source: str, message: str) -> None:
    """A form field is text: `inquiry.fields.budget > '100'` was true for a budget of 99 and false for 5000."""
    templates = Templates()
    with pytest.raises(TemplateProblem) as raised:
        if "{%" in source:
            templates.inline(source, SCOPE)
        else:
            templates.expression(source, SCOPE)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "source",
    [
        "inquiry.fields.budget | float > 100",
        "inquiry.fields.budget == '100'",  # text equal to text: fine
        "inquiry.fields.date >= '2026-01-01'",  # ISO dates as text order as dates
        "lead.status > 'a'",
    ],
)
def test_comparisons_that_mean_what_they_say_load(source: str) -> None:
    Templates().expression(source, SCOPE)
