"""Conditions as Python closures over the (already checked) Jinja2 tree: same results, ~10x less overhead per call.

Only the common shapes are compiled here (names, attributes, constants, comparisons, and/or/not,
`is` tests, lists); anything else returns None and the rule keeps Jinja's own compiled expression.
Attribute access still goes through the sandbox's `getattr`, and missing values are the sandbox's
StrictUndefined, so errors and protections are the same as Jinja's.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from leadhub.triggers.context import Record

Fn = Callable[[dict[str, Any]], Any]
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "gt": operator.gt,
    "lteq": operator.le,
    "gteq": operator.ge,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}


class Unsupported(Exception):
    pass


def compile_fast(tree: nodes.Expr, env: SandboxedEnvironment) -> Callable[..., Any] | None:
    """A callable taking the context as keyword arguments, or None when the tree has an unsupported node."""
    try:
        fn = _node(tree, env)
    except Unsupported:
        return None

    return FastExpression(fn, _discriminator(tree, env))


class FastExpression:
    """Called like Jinja's compiled expression (`fn(**context)`), or with the context dict as is (`evaluate`).

    `discriminator` is (path, value function, constant) when the expression is `path == constant` or
    starts with it (`path == constant and ...`): false whenever the path holds another defined value.
    """

    __slots__ = ("discriminator", "evaluate")

    def __init__(self, fn: Fn, discriminator: tuple[str, Fn, Any] | None = None) -> None:
        self.evaluate = fn
        self.discriminator = discriminator

    def __call__(self, **context: Any) -> Any:
        return self.evaluate(context)


def _node(node: nodes.Node, env: SandboxedEnvironment) -> Fn:  # noqa: PLR0911 - one branch per node type
    if isinstance(node, nodes.Const):
        value = node.value
        return lambda ctx: value
    if isinstance(node, nodes.Name):
        return _name(node.name, env)
    if isinstance(node, nodes.Getattr):
        return _getattr(_node(node.node, env), node.attr, env)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        target, key = _node(node.node, env), node.arg.value
        return lambda ctx: env.getitem(target(ctx), key)
    if isinstance(node, nodes.And):
        left, right = _node(node.left, env), _node(node.right, env)
        return lambda ctx: left(ctx) and right(ctx)
    if isinstance(node, nodes.Or):
        left, right = _node(node.left, env), _node(node.right, env)
        return lambda ctx: left(ctx) or right(ctx)
    if isinstance(node, nodes.Not):
        inner = _node(node.node, env)
        return lambda ctx: not inner(ctx)
    if isinstance(node, nodes.Compare):
        return _compare(node, env)
    if isinstance(node, nodes.Test):
        return _test(node, env)
    if isinstance(node, nodes.List | nodes.Tuple):
        items = [_node(item, env) for item in node.items]
        kind = list if isinstance(node, nodes.List) else tuple
        return lambda ctx: kind(item(ctx) for item in items)
    raise Unsupported(type(node).__name__)


def _path(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        parent = _path(node.node)
        return None if parent is None else f"{parent}.{node.attr}"
    return None


def _discriminator(tree: nodes.Node, env: SandboxedEnvironment) -> tuple[str, Fn, Any] | None:
    node = tree
    while isinstance(node, nodes.And):
        node = node.left
    if not isinstance(node, nodes.Compare) or len(node.ops) != 1 or node.ops[0].op != "eq":
        return None
    left, right = node.expr, node.ops[0].expr
    if isinstance(left, nodes.Const):
        left, right = right, left
    path = _path(left)
    if path is None or not isinstance(right, nodes.Const) or not isinstance(right.value, str | int | bool):
        return None
    return path, _node(left, env), right.value


def _getattr(target: Fn, attr: str, env: SandboxedEnvironment) -> Fn:
    """A field of a context record directly (the name is a checked constant); anything else via the sandbox."""
    undefined = env.undefined

    def get(ctx: dict[str, Any]) -> Any:
        obj = target(ctx)
        if type(obj) is Record:
            data = obj._data
            return data[attr] if attr in data else undefined(obj=obj, name=attr)
        return env.getattr(obj, attr)

    return get


def _name(name: str, env: SandboxedEnvironment) -> Fn:
    undefined = env.undefined

    def lookup(ctx: dict[str, Any]) -> Any:
        if name in ctx:
            return ctx[name]
        if name in env.globals:
            return env.globals[name]
        return undefined(name=name)

    return lookup


def _compare(node: nodes.Compare, env: SandboxedEnvironment) -> Fn:
    first = _node(node.expr, env)
    steps = []
    for operand in node.ops:
        if operand.op not in COMPARE:
            raise Unsupported(operand.op)
        steps.append((COMPARE[operand.op], _node(operand.expr, env)))
    if len(steps) == 1:
        (op, right) = steps[0]
        return lambda ctx: op(first(ctx), right(ctx))

    def chain(ctx: dict[str, Any]) -> bool:
        left = first(ctx)
        for op, right_fn in steps:
            right = right_fn(ctx)
            if not op(left, right):
                return False
            left = right
        return True

    return chain


def _test(node: nodes.Test, env: SandboxedEnvironment) -> Fn:
    if node.args or node.kwargs or node.dyn_args or node.dyn_kwargs or node.name not in env.tests:
        raise Unsupported(f"test {node.name}")
    test, target = env.tests[node.name], _node(node.node, env)
    return lambda ctx: test(target(ctx))
