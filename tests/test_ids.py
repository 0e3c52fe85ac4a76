"""Ids: new ids are ULIDs in time order; an inquiry's id is the base32 of its key's SHA-256, as it always was."""

from __future__ import annotations

import base64
import hashlib
import time

from hypothesis import example, given
from hypothesis import strategies as st
from ulid import ULID

from leadhub.ids import _ulid_text, id_for_key, new_id


def test_new_ids_are_ulids_strictly_increasing() -> None:
    before = time.time()
    ids = [new_id() for _ in range(20_000)]  # many in one millisecond: the random part counts up
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 and i == i.lower() for i in ids)
    stamp = ULID.from_str(ids[-1].upper()).timestamp
    assert before - 1 <= stamp <= time.time() + 1


@given(st.lists(st.tuples(st.integers(0, 2**48 - 1), st.integers(0, 2**80 - 1), st.integers(0, 3)), min_size=1))
@example([(5, 1023, 2), (5, 2047, 1), (6, 2047, 0), (6, 2**80 - 1, 0)])  # the last character carries over
def test_an_ids_text_is_its_ulid_whatever_id_came_before(steps: list[tuple[int, int, int]]) -> None:
    # new_id reuses the previous id's first 24 characters while the millisecond and the random part's upper bits
    # are the same: counting up within a millisecond, and jumps to another millisecond or random value, must both
    # give exactly the ULID of (ms, random).
    for ms, first, more in steps:
        for random in range(first, min(first + more, 2**80 - 1) + 1):
            expected = str(ULID.from_bytes(((ms << 80) | random).to_bytes(16, "big"))).lower()
            assert _ulid_text(ms, random) == expected


@given(st.text())
def test_id_for_key_is_the_base32_of_the_keys_sha256(key: str) -> None:
    try:
        encoded = key.encode()
    except UnicodeEncodeError:
        return  # keys are text from JSON or headers: never lone surrogates
    expected = base64.b32encode(hashlib.sha256(encoded).digest()).decode()[:26].lower()
    assert id_for_key(key) == expected
