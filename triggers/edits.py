"""A run scheduled under one version of a rule finds its action in the rule as edited since, or is told it is gone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

# Left out of an action's digest: the digest is stored with each run (and listed by /api/actions), where a weak
# secret could be guessed from it; a secret rotated is the same action anyway.
SECRETS = frozenset({"secret", "bot_token"})


def action_digest(spec: Any) -> str:
    """A short digest of one action as written: its type and its options (defaults left out, so an option
    written out at its default, or a new option a later release adds, is the same action)."""
    options = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude=set(SECRETS))
    text = json.dumps({"type": spec.type, **options}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def do_digest(specs: Sequence[Any]) -> str:
    """The digests of a rule's `do`, space-separated: what a run stores of the rule it was scheduled under."""
    return " ".join(action_digest(spec) for spec in specs)


def follow(then: Sequence[str], now: Sequence[str], index: int) -> int | None:
    """Where the action at `index` of a rule's actions as they were (`then`, their digests) is in them now.

    Actions added, removed or moved around it are followed: a survey still sends the survey once a task is added
    in front of it. One edited in place (between the same unchanged neighbours, as many actions as before) is the
    action at its place, as edited: a new template, URL or text applies to the runs waiting. One moved elsewhere
    is found by its digest. None when it was removed, or when the actions around it changed so that no one can
    tell which it is now (one edited and another added or removed next to it in the same change).
    """
    if list(then) == list(now):
        return index
    if not 0 <= index < len(then):
        return None
    placed: dict[int, int] = {}  # then -> now, for the actions unchanged or edited in place
    for tag, then_from, then_to, now_from, now_to in SequenceMatcher(None, then, now, autojunk=False).get_opcodes():
        if tag == "equal" or (tag == "replace" and then_to - then_from == now_to - now_from):
            placed.update({then_from + k: now_from + k for k in range(then_to - then_from)})
    if index in placed:
        return placed[index]
    taken = set(placed.values())
    moved = [at for at, digest in enumerate(now) if digest == then[index] and at not in taken]
    return moved[0] if len(moved) == 1 else None
