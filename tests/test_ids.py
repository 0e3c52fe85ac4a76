"""Ids: new ids are ULIDs in time order; an inquiry's id is the base32 of its key's SHA-256, as it always was."""

from __future__ import annotations

import base64
import hashlib
import time

from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from leadhub.ids import id_for_key, new_id


def test_new_ids_are_ulids_strictly_increasing() -> None:
    before = time.time()
    ids = [new_id() for _ in range(20_000)]  # many in one millisecond: the random part counts up
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 and i == i.lower() for i in ids)
    stamp = ULID.from_str(ids[-1].upper()).timestamp
    assert before - 1 <= stamp <= time.time() + 1


@given(st.text())
def test_id_for_key_is_the_base32_of_the_keys_sha256(key: str) -> None:
    try:
        encoded = key.encode()
    except UnicodeEncodeError:
        return  # keys are text from JSON or headers: never lone surrogates
    expected = base64.b32encode(hashlib.sha256(encoded).digest()).decode()[:26].lower()
    assert id_for_key(key) == expected
