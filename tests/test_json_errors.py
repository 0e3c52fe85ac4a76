"""`json_errors.loads` refuses JSON nested deeper than the pipeline can write back, wherever the brackets are."""

from __future__ import annotations

import json

import pytest

from leadhub.json_errors import MAX_JSON_DEPTH, JsonTooDeep, json_error_text, loads


def _nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


@pytest.mark.parametrize(
    "text",
    [
        _nested(MAX_JSON_DEPTH + 1),
        '{"a": ' + _nested(MAX_JSON_DEPTH) + "}",
        '{"a": ' + '{"b": ' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH + "}",
        "[" + "1, " * 200 + _nested(MAX_JSON_DEPTH) + "]",  # deep at the end of a wide list
        _nested(940),  # json.loads reads it, json.dumps from deeper in the stack cannot write it
        _nested(100_000),  # json.loads itself fails: RecursionError
    ],
    ids=["array", "in an object", "objects", "wide then deep", "940", "100000"],
)
def test_json_nested_deeper_than_the_limit_is_refused(text: str) -> None:
    for data in (text, text.encode()):
        with pytest.raises(JsonTooDeep) as refused:
            loads(data)
        assert json_error_text(refused.value) == f"JSON nested deeper than {MAX_JSON_DEPTH} levels"


@pytest.mark.parametrize(
    "text",
    [
        _nested(MAX_JSON_DEPTH),
        '{"a": ' + _nested(MAX_JSON_DEPTH - 1) + "}",
        json.dumps({"x": "[" * 5000, "y": [[1]] * 500}),  # brackets in strings, many shallow arrays
        '"' + "[" * 100 + '"',
    ],
    ids=["array at the limit", "object at the limit", "many brackets, shallow", "a string"],
)
def test_json_up_to_the_limit_reads_as_json_loads_reads_it(text: str) -> None:
    assert loads(text) == json.loads(text)
