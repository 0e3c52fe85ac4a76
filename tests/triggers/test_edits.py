"""A run finds its action in the rule as edited since it was scheduled: each action's digest, and following it."""

from __future__ import annotations

from typing import Any

from leadhub.triggers.edits import action_digest, follow
from leadhub.triggers.schema import Rule


def _webhook(**options: Any) -> Any:
    rule = Rule.model_validate({"id": "r", "on": ["lead.created"], "do": [{"webhook": options}]})
    return rule.do[0]


def test_an_actions_digest_is_what_it_does_not_how_it_is_written_nor_its_secret() -> None:
    plain = action_digest(_webhook(url="https://crm.example/leads"))
    assert action_digest(_webhook(url="https://crm.example/leads", timeout="10s")) == plain, "a default written out"
    assert action_digest(_webhook(url="https://crm.example/leads", secret="rotated")) == plain, "kept out of the runs"
    assert action_digest(_webhook(url="https://crm.example/other")) != plain


def test_follow_finds_an_action_moved_or_edited_in_place_and_gives_up_when_it_cannot_be_told() -> None:
    assert [follow(["a", "b"], ["b", "a"], i) for i in range(2)] == [1, 0]
    assert [follow(["a", "b", "c"], ["a", "x", "c"], i) for i in range(3)] == [0, 1, 2]
    assert [follow(["a", "a"], ["a"], i) for i in range(2)] == [0, None], "one of two alike removed"
    assert [follow(["a", "b"], ["c", "a"], i) for i in range(2)] == [1, None]
    assert follow(["s"], ["t", "s2"], 0) is None, "added in front and edited in the same change"
