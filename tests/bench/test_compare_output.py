"""bench.compare reads what each bench prints: log lines may come first, and bench.rules prints one object per line."""

from bench.compare import parsed


def test_an_indented_object_after_log_lines_is_the_result() -> None:
    log_line = '2026-12-05 16:29:49 [info ] starting leadhub config={"a": 1}\n'
    stdout = log_line + '{\n  "messages": 300,\n  "complete": true\n}\n'
    assert parsed(stdout) == {"result": {"messages": 300, "complete": True}}


def test_an_object_with_a_result_is_taken_whole() -> None:
    assert parsed('{"result": {"x": 1}, "machine": {}}\n') == {"result": {"x": 1}, "machine": {}}


def test_one_object_per_line_are_merged() -> None:
    assert parsed('{"matching": 1}\nnoise\n{"scheduler": 2}\n') == {"result": {"matching": 1, "scheduler": 2}}


def test_nothing_printed_is_an_empty_result() -> None:
    assert parsed("only logs\n") == {"result": {}}
