"""The equality index spares rules that cannot match, and the evaluations (traces) are exactly the full ones."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from leadhub.triggers.context import build_context
from leadhub.triggers.engine import RuleIndex, evaluate, evaluate_all
from leadhub.triggers.loader import load_rules
from leadhub.triggers.sandbox import Templates

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CONDITIONS = [
    "lead.channel == 'form'",
    "lead.channel == 'phone' and 'vip' in lead.tags",
    "'email' == lead.channel",
    "lead.status == 'new' or lead.channel == 'form'",  # an `or`: not indexable
    "lead.channel == 'form' and contact.email",
    "contact.email == 'a@example.com'",
    "lead.missing_field == 'x'",
]


def _index(tmp_path: Path) -> RuleIndex:
    lines = ["rules:"]
    for n, condition in enumerate(CONDITIONS):
        if "missing_field" in condition:
            continue  # rejected at check time; the undefined case is covered by lead being absent
        lines += [
            f"  - id: r{n}",
            "    on: lead.created",
            f'    if: "{condition}"',
            "    do: [{create_task: {title: x}}]",
        ]
    lines += ["  - id: always", "    on: lead.created", "    do: [{create_task: {title: x}}]"]
    (tmp_path / "r.yaml").write_text("\n".join(lines) + "\n")
    loaded = load_rules(tmp_path, Templates())
    assert loaded.problems == []
    return RuleIndex(loaded.rules)


LEADS: list[Any] = [
    {"id": "l", "channel": "form", "status": "new", "tags": []},
    {"id": "l", "channel": "phone", "status": "won", "tags": ["vip"]},
    {"id": "l", "channel": "email", "status": "new", "tags": []},
    {"id": "l", "channel": "chat", "status": "lost", "tags": []},
    {"id": "l", "channel": ["not", "hashable"], "status": "new", "tags": []},
    None,
]


@pytest.mark.parametrize("lead", LEADS)
def test_index_gives_the_same_evaluations(tmp_path: Path, lead: Any) -> None:
    index = _index(tmp_path)
    context = build_context(
        {"id": "e", "type": "lead.created", "data": {}}, {"lead": lead, "contact": {"email": "a@example.com"}}, NOW
    )
    full = {r.id: evaluate(r, context, NOW) for r in index.listeners("lead.created")}
    fast = {e.rule.id: e for e in evaluate_all(index, "lead.created", context, NOW)}
    assert set(full) == set(fast)
    for rule_id, expected in full.items():
        got = fast[rule_id]
        assert (got.matched, got.reason, got.conditions) == (expected.matched, expected.reason, expected.conditions)
    _, skipped = index.split("lead.created", context)
    if lead is not None and lead["channel"] == "chat":
        assert {e.rule.id for e in skipped} == {"r0", "r1", "r2", "r4"}
