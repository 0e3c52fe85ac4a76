"""Comparisons that read well and mislead: a number against text, found when the rules load.

`order.total == '1500.00'` is never true now that amounts are numbers, and `inquiry.fields.budget > '100'` (a form
field is text) compares letter by letter: '99' > '100'. Neither raises, so the rule would quietly never (or always)
match.
"""

from __future__ import annotations

import re

from jinja2 import nodes

from leadhub.triggers.events import AMOUNT_FIELDS, EVENT_AMOUNTS

AMOUNT_PATHS = frozenset(
    [f"{name}.{field}" for name, fields in AMOUNT_FIELDS.items() for field in fields]
    + [f"event.data.{field}" for fields in EVENT_AMOUNTS.values() for field in fields]
)
ORDERING = frozenset({"lt", "gt", "lteq", "gteq"})
SYMBOLS = {"eq": "==", "ne": "!=", "lt": "<", "gt": ">", "lteq": "<=", "gteq": ">="}
FLIPPED = {"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}  # `'100' < x` is `x > '100'`
NUMBER_TEXT = re.compile(r"\s*[-+]?(\d+([.,]\d*)?|[.,]\d+)\s*")


def _path(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        parent = _path(node.node)
        key = node.attr if isinstance(node, nodes.Getattr) else _text(node.arg)
        if parent is None or key is None:
            return None
        return f"{parent}.{key}" if key.isidentifier() else f"{parent}[{key!r}]"
    return None


def _text(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def comparison_problems(tree: nodes.Node) -> list[str]:
    """An amount compared with text, or any value ordered (`<`, `>`) against text that reads as a number."""
    problems: list[str] = []
    compares = [*([tree] if isinstance(tree, nodes.Compare) else []), *tree.find_all(nodes.Compare)]
    for compare in compares:
        left = compare.expr
        for operand in compare.ops:
            right, symbol = operand.expr, SYMBOLS.get(operand.op)
            for value, text, shown in ((left, _text(right), symbol), (right, _text(left), FLIPPED.get(symbol or ""))):
                if shown is None or text is None:
                    continue
                path = _path(value)
                if path in AMOUNT_PATHS:
                    problems.append(
                        f"{path} is a number: compare it with a number ({path} {shown} "
                        f"{text.strip() if NUMBER_TEXT.fullmatch(text) else 100}), not the text {text!r}"
                    )
                elif operand.op in ORDERING and NUMBER_TEXT.fullmatch(text):
                    problems.append(
                        f"{shown} with the text {text!r} compares letters ('99' > '100'); compare numbers: "
                        f"{path or 'value'} | float {shown} {text.strip().replace(',', '.')}"
                    )
            left = right
    return problems
