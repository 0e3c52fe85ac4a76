"""bench/identity.py measures what it says: its scores on hand-made cases, and a small run end to end."""

from __future__ import annotations

import pytest

from bench.identity import dataset, linkable_pairs, run, scores


def test_scores_count_pairs_of_inquiries() -> None:
    truth = {"a1": 1, "a2": 1, "a3": 1, "b1": 2, "b2": 2}
    perfect = scores(truth, {"a1": "x", "a2": "x", "a3": "x", "b1": "y", "b2": "y"}, linkable=4)
    assert (perfect["precision"], perfect["recall"], perfect["duplicate_rate"]) == (1.0, 1.0, 0.0)
    split = scores(truth, {"a1": "x", "a2": "x", "a3": "z", "b1": "y", "b2": "y"}, linkable=4)
    assert split["precision"] == 1.0 and split["recall"] == pytest.approx(2 / 4)  # 1 of 3 a-pairs + the b pair
    assert split["duplicate_rate"] == pytest.approx(0.5)
    lumped = scores(truth, dict.fromkeys(truth, "x"), linkable=4)
    assert lumped["precision"] == pytest.approx(4 / 10) and lumped["recall"] == 1.0


def test_linkable_pairs_follow_chains_of_shared_identifiers() -> None:
    envelopes, truth = dataset(300, seed=3)
    assert 0 < linkable_pairs(envelopes, truth) <= sum(1 for _ in truth) ** 2


async def test_a_small_run_end_to_end() -> None:
    result = await run(people=60, preload=500, database_url=None, batch=50)
    assert result["precision"] == 1.0
    assert result["recall_of_linkable"] == 1.0
    assert result["per_s_empty"] > 0 and result["per_s_preloaded"] > 0
