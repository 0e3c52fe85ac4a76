"""Read rule files, validate and compile each rule alone; problems read `file:line:col: rule 'id': path: msg`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from leadhub.triggers.compile import CompiledRule, HoursBook, RuleProblems, compile_rule
from leadhub.triggers.hours import quiet, weekly
from leadhub.triggers.sandbox import Templates
from leadhub.triggers.schema import ACTION_MODELS, BusinessHours, QuietHours, Rule, Schedule, Throttle, WaitSpec
from leadhub.yaml_text import YamlProblem, read_yaml

Loc = tuple[str | int, ...]
HOURS_MODELS: dict[str, type[BusinessHours] | type[QuietHours]] = {
    "business_hours": BusinessHours,
    "quiet_hours": QuietHours,
}
TOP_LEVEL = ("rules", *HOURS_MODELS)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    rule: str | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        rule = f" rule {self.rule!r}:" if self.rule else ""
        path = f" {self.path}:" if self.path else ""
        return f"{where}:{rule}{path} {self.message}"


@dataclass
class RuleSet:
    rules: list[CompiledRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def by_id(self) -> dict[str, CompiledRule]:
        return {rule.id: rule for rule in self.rules}


def rule_files(directory: Path) -> list[Path]:
    """The rule files in `directory`. Hidden names are editors' and systems' files, not rules: Emacs's lock
    (`.#a.yaml`, a symlink to nowhere), macOS's `._a.yaml`, an editor's temporary copy."""
    found = [*directory.glob("*.yaml"), *directory.glob("*.yml")]
    return sorted(path for path in found if not path.name.startswith("."))


def rules_dir_problem(directory: Path) -> str | None:
    """Why `directory` holds no rule files to load (None: it is a directory)."""
    if directory.is_dir():
        return None
    return "is a file, not a rules directory" if directory.exists() else "rules directory not found"


def load_rules(directory: Path, templates: Templates, *, include_disabled: bool = False) -> RuleSet:
    """Every valid rule in `directory`; a bad rule is reported and left out, the others load."""
    result = RuleSet()
    if problem := rules_dir_problem(directory):
        result.problems.append(Problem(str(directory), 1, 1, None, "", problem))
        return result
    seen: dict[str, str] = {}
    files = rule_files(directory)
    book, result.problems = load_hours(files)
    for path in files:
        rules, problems = load_file(path, templates, book)
        result.problems += problems
        for rule, where in rules:
            if rule.id in seen:
                result.problems.append(
                    Problem(
                        str(path),
                        where[0],
                        where[1],
                        rule.id,
                        "id",
                        f"duplicate rule id; first defined at {seen[rule.id]}",
                    )
                )
                continue
            seen[rule.id] = f"{path}:{where[0]}"
            if rule.rule.enabled or include_disabled:
                result.rules.append(rule)
    return result


def _read(path: Path) -> tuple[yaml.Node | None, Any, Problem | None]:
    label = str(path)
    try:
        node, data = read_yaml(path)
    except OSError as exc:
        return None, None, Problem(label, 1, 1, None, "", f"cannot read: {exc.strerror}")
    except YamlProblem as exc:
        return None, None, Problem(label, exc.line, exc.column, None, "", exc.message)
    return node, data, None


def load_hours(paths: list[Path]) -> tuple[HoursBook, list[Problem]]:
    """The `business_hours:` and `quiet_hours:` every file defines; names are shared by the whole directory."""
    book: HoursBook = {}
    where: dict[tuple[str, str], str] = {}
    problems: list[Problem] = []
    for path in paths:
        root, data, _ = _read(path)  # unreadable files are reported by load_file
        if not isinstance(data, dict):
            continue
        for kind, model in HOURS_MODELS.items():
            section = data.get(kind)
            node = _child(root, kind)
            if section is None:
                continue
            if not isinstance(section, dict):
                problems.append(Problem(str(path), *_mark(root, (kind,)), None, kind, "a mapping of name -> hours"))
                continue
            for name, spec in section.items():
                loc = (kind, str(name))
                try:
                    hours = model.model_validate(spec)
                except ValidationError as exc:
                    problems += [_hours_problem(path, root, loc, err, model) for err in exc.errors()]
                    continue
                if (kind, str(name)) in book:
                    message = f"{kind.replace('_', ' ')} {name!r} already defined at {where[(kind, str(name))]}"
                    problems.append(Problem(str(path), *_mark(node, (name,)), None, _dotted(loc), message))
                    continue
                where[(kind, str(name))] = f"{path}:{_mark(node, (name,))[0]}"
                if isinstance(hours, BusinessHours):
                    book[(kind, str(name))] = weekly(str(name), hours.timezone, hours.days)
                else:
                    book[(kind, str(name))] = quiet(str(name), hours.timezone, hours.quiet)
    return book, problems


def _hours_problem(path: Path, root: yaml.Node | None, loc: Loc, err: Any, model: type[BaseModel]) -> Problem:
    full = (*loc, *err["loc"])
    if err["type"] == "extra_forbidden":
        message = f"unknown key {err['loc'][-1]!r}; allowed keys: {', '.join(sorted(model.model_fields))}"
    else:
        message = str(err["msg"]).removeprefix("Value error, ")
    return Problem(str(path), *_mark(root, full), None, _dotted(full), message)


def load_file(
    path: Path, templates: Templates, hours: HoursBook | None = None
) -> tuple[list[tuple[CompiledRule, tuple[int, int]]], list[Problem]]:
    label = str(path)
    root, data, unreadable = _read(path)
    if unreadable is not None:
        return [], [unreadable]
    has_hours = isinstance(data, dict) and any(key in data for key in HOURS_MODELS)
    if has_hours and "rules" not in data:
        data = {**data, "rules": []}  # a file may hold only the hours other files use
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        return [], [Problem(label, 1, 1, None, "", "a rule file is a mapping with a list under `rules:`")]
    extra = sorted(set(data) - set(TOP_LEVEL), key=str)
    allowed = ", ".join(f"`{key}:`" for key in TOP_LEVEL)
    problems = [
        Problem(label, *_mark(root, (key,)), None, str(key), f"unknown top-level key; allowed: {allowed}")
        for key in extra
    ]
    rules_node = _child(root, "rules")
    compiled: list[tuple[CompiledRule, tuple[int, int]]] = []
    for index, item in enumerate(data["rules"]):
        node = _child(rules_node, index)
        rule, found = _load_one(item, node, label, templates, hours or {})
        problems += found
        if rule is not None:
            compiled.append((rule, _mark_of(node)))
    return compiled, problems


def _load_one(
    item: Any, node: yaml.Node | None, label: str, templates: Templates, hours: HoursBook
) -> tuple[CompiledRule | None, list[Problem]]:
    rule_id = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None

    def problem(loc: Loc, message: str) -> Problem:
        return Problem(label, *_mark(node, loc), rule_id, _dotted(loc), message)

    if not isinstance(item, dict):
        return None, [problem((), "a rule is a mapping with id, on or schedule, and do")]
    if True in item:  # YAML 1.1 reads the key `on:` as the boolean true
        item = {("on" if key is True else key): value for key, value in item.items()}
    try:
        rule = Rule.model_validate(item)
    except ValidationError as exc:
        return None, [problem(_loc(err), _message(err)) for err in exc.errors()]
    try:
        return compile_rule(rule, templates, label, hours), []
    except RuleProblems as exc:
        return None, [problem(loc, message) for loc, message in exc.problems]


def _loc(err: Any) -> Loc:
    loc = tuple(err["loc"])
    if not loc:
        return loc
    # `late` and `wait` are unions: pydantic puts the member's name in the path, which is not in the file
    kept = tuple(p for p in loc[:-1] if not _member(p))
    return kept if err["type"] != "extra_forbidden" and _member(loc[-1]) else (*kept, loc[-1])


def _member(part: str | int) -> bool:
    return isinstance(part, str) and (part.startswith("literal[") or part[:1].isupper())


def _message(err: Any) -> str:
    kind, loc = err["type"], _loc(err)
    if kind == "union_tag_invalid":
        return f"unknown action type {err['ctx']['tag']!r}; valid types: {', '.join(sorted(ACTION_MODELS))}"
    if kind in ("union_tag_not_found", "model_attributes_type") and loc[:1] == ("do",):
        return "an action is a mapping with one key, the action type, e.g. `- send_email: {template: survey, to: ...}`"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = sorted(f.alias or name for name, f in model.model_fields.items() if name != "type")
        return f"unknown key {loc[-1]!r}; allowed keys: {', '.join(allowed)}"
    message = str(err["msg"])
    return message.removeprefix("Value error, ")


def _model_at(loc: Loc) -> type[BaseModel]:
    if len(loc) == 3 and loc[0] == "do" and loc[2] in ACTION_MODELS:
        return ACTION_MODELS[str(loc[2])]
    return {("schedule",): Schedule, ("throttle",): Throttle, ("wait",): WaitSpec}.get(tuple(loc), Rule)


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(key, str):
        return next((v for k, v in node.value if k.value == key), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return node.value[key]
    return None


def _key_node(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((k for k, _ in node.value if k.value == key), None)
    return _child(node, key)


def _mark_of(node: yaml.Node | None) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None else (1, 1)


def _mark(node: yaml.Node | None, loc: Loc) -> tuple[int, int]:
    """Line and column of the deepest node `loc` reaches (the key itself for the last mapping step)."""
    current = node
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        target = _key_node(current, part) if last else _child(current, part)
        if target is None:
            break
        current = target
    return _mark_of(current)
