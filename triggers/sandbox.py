"""Locked-down Jinja2: sandboxed environments, and a static check that rejects Python internals before anything runs."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    nodes,
)
from jinja2.parser import Parser

from leadhub.triggers.comparisons import comparison_problems
from leadhub.triggers.context import dumps
from leadhub.triggers.events import OBJECT_FIELDS
from leadhub.triggers.fastexpr import compile_fast
from leadhub.triggers.template_limits import LimitedSandbox, TemplateLimit, limited
from leadhub.triggers.url_template import url_value

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FORBIDDEN_TAGS: dict[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
    nodes.Extends: "extends",
    nodes.ScopedEvalContextModifier: "autoescape",
    nodes.EvalContextModifier: "autoescape",
}
FORBIDDEN_FILTERS = frozenset({"safe", "attr", "xmlattr"})
# Attribute names that lead from a value to the interpreter, beyond every name starting with `_`.
INTERNAL_NAMES = frozenset(
    {
        "mro",
        "format",
        "format_map",
        "func_globals",
        "func_code",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
        "tb_frame",
        "tb_next",
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "co_code",
        "im_func",
        "im_self",
    }
)
GLOBALS = frozenset({"now", "range", "dict", "days"})


def days(count: float) -> timedelta:
    """`now - days(90)` in conditions: date arithmetic without exposing the datetime module."""
    return timedelta(days=float(count))


class TemplateProblem(ValueError):
    """A condition or template that must not be used; the message says why."""


@dataclass(frozen=True)
class Scope:
    """What an expression may name: the objects of the rule's events (and extra names like `survey_url`)."""

    objects: tuple[str, ...]
    extra: frozenset[str] = frozenset()

    def allowed(self) -> frozenset[str]:
        return frozenset(self.objects) | self.extra | GLOBALS


def _environment(**options: Any) -> LimitedSandbox:
    env = LimitedSandbox(undefined=StrictUndefined, **options)
    for name in ("lipsum", "cycler", "joiner", "namespace"):
        env.globals.pop(name, None)
    env.globals["days"] = days
    env.policies["json.dumps_function"] = dumps  # `|tojson` of a record or an amount
    return env


class Templates:
    """The four environments (conditions, text, HTML, URLs), loading admin templates before the shipped ones."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        dirs = [str(templates_dir)] if templates_dir else []
        loader = ChoiceLoader([FileSystemLoader([*dirs, str(PACKAGE_TEMPLATES)])])
        self.expressions = _environment()
        self.text = _environment(loader=loader, autoescape=False, keep_trailing_newline=True, finalize=_blank)
        self.html = _environment(loader=loader, autoescape=True, keep_trailing_newline=True, finalize=_blank)
        self.urls = _environment(autoescape=False, finalize=url_value)

    def expression(self, source: str, scope: Scope) -> Callable[..., Any]:
        """Compile a condition once; the result is called with the context as keyword arguments."""
        try:
            parser = Parser(self.expressions, source, state="variable")
            tree = parser.parse_expression()
            if parser.stream.current.type != "eof":
                raise TemplateSyntaxError(f"unexpected {parser.stream.current.value!r}", 1)
            problems = unknown_filters_and_tests(tree, self.expressions) or (
                check_tree(tree, scope, names=_names(tree)) + constant_problems(tree, self.expressions)
            )
            if problems:
                raise TemplateProblem("; ".join(problems))
            compiled = self.expressions.compile_expression(source, undefined_to_none=False)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"expression syntax error: {exc.message}") from None
        except TemplateError as exc:
            raise TemplateProblem(f"expression error: {exc.message}") from None
        return compile_fast(tree, self.expressions) or limited(compiled)

    def inline(self, source: str, scope: Scope, *, html: bool = False) -> Template:
        """Compile a template string from a rule (a `to:`, a `title:`)."""
        return self._inline(self.html if html else self.text, source, scope)

    def url(self, source: str, scope: Scope) -> Template:
        """Compile a URL template (a webhook's `url:`): every `{{ value }}` is percent-encoded as one path segment
        or query value, so a contact's name cannot add a path, a query or a fragment; literal text stays as written.
        """
        return self._inline(self.urls, source, scope)

    def _inline(self, env: LimitedSandbox, source: str, scope: Scope) -> Template:
        try:
            return _checked(env, source, scope)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax error (line {exc.lineno}): {exc.message}") from None
        except TemplateError as exc:
            raise TemplateProblem(f"template error: {exc.message}") from None

    def file(self, name: str, scope: Scope, *, html: bool) -> Template | None:
        """A template file by name, checked like an inline one; None when no directory has it."""
        env = self.html if html else self.text
        try:
            source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            return _checked(env, source, scope, name, filename)
        except TemplateNotFound:
            return None
        except UnicodeDecodeError as exc:  # saved in a legacy encoding (cp1251, Latin-1)
            line = exc.object[: exc.start].count(b"\n") + 1
            raise TemplateProblem(f"{name}:{line}: not UTF-8 text; save the file as UTF-8") from None
        except OSError as exc:
            raise TemplateProblem(f"{name}: cannot read: {exc.strerror or exc}") from None
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"{name}:{exc.lineno}: template syntax error: {exc.message}") from None
        except TemplateError as exc:
            raise TemplateProblem(f"{name}: template error: {exc.message}") from None
        except TemplateProblem as exc:
            raise TemplateProblem(f"{name}: {exc}") from None


def _checked(
    env: LimitedSandbox, source: str, scope: Scope, name: str | None = None, filename: str | None = None
) -> Template:
    """Parse, check and compile a template; TemplateProblem, or Jinja's TemplateError for the caller to word."""
    tree = env.parse(source, name, filename)
    problems = unknown_filters_and_tests(tree, env) or (
        check_tree(tree, scope, names=meta.find_undeclared_variables(tree)) + constant_problems(tree, env)
    )
    if problems:
        raise TemplateProblem("; ".join(problems))
    return env.from_string(source)


def unknown_filters_and_tests(tree: nodes.Node, env: LimitedSandbox) -> list[str]:
    """A misspelt filter or test (`|capitalise`, `is nonexistenttest`), with the names it was likely meant to be.

    Jinja finds one only when compiling (and one inside `{% if %}` only when that branch renders); finding them in
    the tree lets the rule be reported like any other mistake, at load time."""
    problems: list[str] = []
    for kind, found, known in (("filter", nodes.Filter, env.filters), ("test", nodes.Test, env.tests)):
        for node in _all(tree, found):
            if node.name not in known:
                likely = difflib.get_close_matches(node.name, sorted(known), n=3, cutoff=0.75)
                hint = f"; did you mean {' or '.join(map(repr, likely))}?" if likely else ""
                problems.append(f"unknown {kind} {node.name!r}{hint}")
    return list(dict.fromkeys(problems))


def _blank(value: Any) -> Any:
    """A missing value (a lead nobody owns, a contact without a phone) prints as nothing, not as the word None:
    `assignee: "{{ lead.owner }}"` made a task for a manager called "None", a webhook body sent "None" as a phone."""
    return "" if value is None else value


def _all(tree: nodes.Node, kinds: type[nodes.Node] | tuple[type[nodes.Node], ...]) -> list[Any]:
    """Every node of `kinds` in the tree, the root included (an expression's root is often the culprit)."""
    return [*([tree] if isinstance(tree, kinds) else []), *tree.find_all(kinds)]


def _names(tree: nodes.Node) -> set[str]:
    return {n.name for n in _all(tree, nodes.Name) if n.ctx == "load"}


def check_tree(tree: nodes.Node, scope: Scope, *, names: Iterable[str]) -> list[str]:
    """Everything wrong with a parsed expression or template, as messages (empty when it is safe)."""
    problems: list[str] = []
    allowed = scope.allowed()
    for name in sorted(set(names)):
        if name.startswith("_"):
            problems.append(f"{name!r} is not allowed (names starting with '_' reach Python internals)")
        elif name in OBJECT_FIELDS and name not in allowed:
            problems.append(f"{name!r} is not available here; available: {', '.join(sorted(allowed))}")
        elif name not in allowed:
            problems.append(f"unknown name {name!r}; available: {', '.join(sorted(allowed))}")
    problems.extend(
        f"{{% {FORBIDDEN_TAGS[type(node)]} %}} is not allowed in rule templates"
        for node in _all(tree, tuple(FORBIDDEN_TAGS))
    )
    for node in _all(tree, nodes.Filter):
        if node.name in FORBIDDEN_FILTERS:
            problems.append(f"the |{node.name} filter is not allowed")
        problems += _keyword_problems(node)
    for node in _all(tree, nodes.Getattr):
        problems += _attribute_problems(node.node, node.attr, allowed)
    for node in _all(tree, nodes.Getitem):
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            problems += _attribute_problems(node.node, node.arg.value, allowed)
    problems += comparison_problems(tree)
    return list(dict.fromkeys(problems))


def constant_problems(tree: nodes.Node, env: LimitedSandbox) -> list[str]:
    """Operators on constants that break a limit (`"a" * 10**10`), found when the rules load, not at send time."""
    problems: list[str] = []
    for node in _all(tree, nodes.BinExpr):
        try:
            _constant(node, env)
        except TemplateLimit as exc:
            problems.append(str(exc))
        except Exception:  # noqa: S110 - not a constant, or an error Jinja reports at render time
            pass
    return list(dict.fromkeys(problems))


def _constant(node: nodes.Node, env: LimitedSandbox) -> Any:
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.BinExpr) and node.operator in env.intercepted_binops:
        return env.call_binop(None, node.operator, _constant(node.left, env), _constant(node.right, env))
    if isinstance(node, nodes.BinExpr | nodes.UnaryExpr):
        return node.as_const()
    raise nodes.Impossible()


# Filters that read an attribute named by a positional argument: the argument's index (after the value).
ATTRIBUTE_ARGUMENT = {
    "selectattr": 0,
    "rejectattr": 0,
    "groupby": 0,
    "sum": 0,
    "sort": 2,
    "unique": 1,
    "min": 1,
    "max": 1,
}


def _keyword_problems(node: nodes.Filter) -> list[str]:
    """Attribute names given to a filter (`attribute=` or, for `selectattr` and the like, by position)."""
    given = [kw.value for kw in node.kwargs]
    index = ATTRIBUTE_ARGUMENT.get(node.name)
    if index is not None and index < len(node.args):
        given.append(node.args[index])
    return [
        f"attribute {value.value!r} is not allowed (Python internals)"
        for value in given
        if isinstance(value, nodes.Const) and isinstance(value.value, str) and _internal(value.value)
    ]


def _internal(attr: str) -> bool:
    return attr.startswith("_") or attr in INTERNAL_NAMES or "._" in attr


def _attribute_problems(target: nodes.Node, attr: str, allowed: frozenset[str]) -> list[str]:
    if _internal(attr):
        return [f"attribute {attr!r} is not allowed (Python internals)"]
    if isinstance(target, nodes.Name) and target.name in OBJECT_FIELDS and target.name in allowed:
        fields = OBJECT_FIELDS[target.name]
        if attr not in fields:
            return [f"{target.name} has no field {attr!r}; fields: {', '.join(sorted(fields))}"]
    return []
