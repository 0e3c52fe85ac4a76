"""The reusable C encoder writes exactly what `json.dumps` with the same options writes, and fails the same way."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadhub.compact_json import compact_encoder

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("ensure_ascii", [False, True])
@given(value=VALUES)
def test_the_same_text_as_json_dumps(ensure_ascii: bool, value: object) -> None:
    expected = json.dumps(value, ensure_ascii=ensure_ascii, separators=(",", ":"))
    assert compact_encoder(ensure_ascii=ensure_ascii, allow_nan=True)(value) == expected


def test_the_same_errors_as_json_dumps() -> None:
    strict = compact_encoder(ensure_ascii=False, allow_nan=False)
    for value in (math.nan, {"a": [math.inf]}, -math.inf):
        with pytest.raises(ValueError, match="Out of range float"):
            strict(value)
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        strict({"a": {1}})
    assert strict({"a": 1.5, "b": "\ud800"}) == json.dumps(
        {"a": 1.5, "b": "\ud800"}, ensure_ascii=False, separators=(",", ":")
    )
    assert strict({"a": 1}) == '{"a":1}', "after an error the encoder still works"
