"""Checks every config model shares: the hub's settings and each connector's keys are written by people in YAML."""

from __future__ import annotations

from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin


def takes_a_number(annotation: Any) -> bool:
    """An `int` or `float` setting (ByteSize too), optional or not; not `bool`, which is an int to Python."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    numbers = [m for m in members if m is not NoneType]
    return bool(numbers) and all(
        isinstance(m, type) and issubclass(m, int | float) and not issubclass(m, bool) for m in numbers
    )


def refuse_a_boolean_number(value: Any, annotation: Any) -> Any:
    """`workers: true` would be read as 1 (and `yes`, `on` are true in YAML): a number must be written as one."""
    if isinstance(value, bool) and takes_a_number(annotation):
        raise ValueError(
            f"{str(value).lower()} is a yes/no value, not a number (YAML reads an unquoted true, yes or on as one); "
            "write a number"
        )
    return value
