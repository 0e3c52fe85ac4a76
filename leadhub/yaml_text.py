"""Admin-edited YAML files read strictly: the data, its node tree for line numbers, located problems.

PyYAML keeps the last of two equal keys without a word (`on:` written twice in a rule, `http_port:` twice in
the config), and the admin never learns which one counts; here that is a problem at the second key's line.
Aliases (`*name`) are refused too: one that refers to itself made a cyclic tree (RecursionError), and a few
nested ones expand into millions of values ("billion laughs"), read on the event loop at a reload. A value PyYAML
reads but cannot build (`2026-02-30`, `!!int xyz`) raised ValueError and the like, not a YAML error: a traceback
for `rules check`, a daemon that would not start; here it is a problem at the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlProblem(ValueError):
    """Where in the file (1-based line and column) and what is wrong."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


def read_yaml(path: Path) -> tuple[yaml.Node | None, Any]:
    """The file's node tree and data; OSError when it cannot be read, YamlProblem when it is not clean YAML."""
    return parse_yaml(path.read_bytes())


def parse_yaml(raw: bytes) -> tuple[yaml.Node | None, Any]:
    """A file's bytes as `read_yaml` reads them (a worker gets the primary's copy, hub/workers.py)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlProblem(line, column, "not UTF-8 text; save the file as UTF-8") from None
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        _refuse_duplicate_keys(node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlProblem(line, column, f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(1, 1, f"not valid YAML: {exc}") from None
    except RecursionError:  # thousands of nested [ or {: PyYAML composes recursively
        raise YamlProblem(1, 1, "nested too deeply; write a flatter file") from None
    finally:
        loader.dispose()
    return node, data


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that stops at the first alias, before anything is expanded."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            message = "aliases (*name) are not allowed here; write the value out"
            raise YamlProblem(mark.line + 1, mark.column + 1, message)
        return super().compose_node(parent, index)  # type: ignore[no-any-return]

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Build one value; a scalar that looks like a date, or is tagged, but cannot be one is located here."""
        try:
            return super().construct_object(node, deep)
        except YamlProblem:
            raise
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            raise YamlProblem(node.start_mark.line + 1, node.start_mark.column + 1, _unbuildable(node, exc)) from None


KINDS = {"timestamp": "date or time", "int": "whole number", "float": "number", "bool": "true/false value"}


def _unbuildable(node: yaml.Node, exc: Exception) -> str:
    """What cannot be built, without echoing the value (a config file's value may be a secret)."""
    tag = node.tag.removeprefix("tag:yaml.org,2002:")
    # datetime's reasons ("day is out of range for month") never quote the value; int()'s and float()'s do
    detail = f" ({exc})" if tag == "timestamp" and isinstance(exc, ValueError) else ""
    kind = KINDS.get(tag, f"!!{tag} value")
    return f"not a valid {kind}{detail}; write a valid one, or quote the value to keep it as text"


def _refuse_duplicate_keys(node: yaml.Node | None) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if (key.tag, key.value) in seen:
                    first = seen[key.tag, key.value]
                    message = f"duplicate key {key.value!r} (first at line {first}); keep one"
                    raise YamlProblem(line, key.start_mark.column + 1, message)
                seen[key.tag, key.value] = line
            _refuse_duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item)
