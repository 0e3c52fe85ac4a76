"""Limits on what an admin's template may build and how long it may run.

Jinja's sandbox keeps Python's internals out of reach, not resources: `{{ "a" * 10**10 }}` in a rule file took
every byte of memory (Jinja even folds such a constant while the rules load, so a hot reload could take the
daemon down), and loops nested over `range(100000)` held the event loop for hours. Here every operator, filter
and string method that builds something in proportion to a number it is given is checked before it runs, and
a template with loops gets a time limit.
"""

from __future__ import annotations

import functools
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from jinja2 import Template, filters
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_BUILT = 100_000  # characters or items one operator, filter or method may build
MAX_POWER_BITS = 4_096  # `**` on whole numbers: the result's size in bits
RENDER_SECONDS = 1.0  # a template with loops; one without runs in time bounded by its size
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class TemplateLimit(ValueError):
    """A template asked for more than a message needs; the message says what and where the limit is."""


def _too_big(what: str, size: int) -> TemplateLimit:
    return TemplateLimit(f"{what} would build {size:,} characters or items; the limit is {MAX_BUILT:,}")


def _check_repeat(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int) and len(seq) * count > MAX_BUILT:
            raise _too_big("'*'", len(seq) * count)


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        bits = max(abs(base).bit_length() - 1, 1) * exponent  # 2**n has n+1 bits; 1**n and 0**n stay small
        if abs(base) > 1 and bits > MAX_POWER_BITS:
            raise TemplateLimit(f"'**' would make a number of ~{bits:,} bits; the limit is {MAX_POWER_BITS:,}")


def _check_percent(fmt: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for number in (width, precision):
            if number == "*":
                raise TemplateLimit("'%*' widths are not supported in templates; write the width as a number")
            if number and int(number) > MAX_BUILT:
                raise _too_big(f"the format {fmt[:40]!r}", int(number))


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        times = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        size = len(text) + times * (len(new) - len(old))
        if size > MAX_BUILT:
            raise _too_big("replace", size)


def _check_size(what: str, size: Any) -> None:
    """A width or count an operation builds that many characters or items for (`center(n)`, `batch(n)`)."""
    if isinstance(size, int) and size > MAX_BUILT:
        raise _too_big(what, size)


def _check_indent(text: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    lines = text.count("\n") + 1 if isinstance(text, str) else 1
    per_line = width if isinstance(width, int) else len(width) if isinstance(width, str) else 0
    if per_line * lines > MAX_BUILT:
        raise _too_big("indent", per_line * lines)


def _tabs_width(text: str, tabsize: Any) -> int:
    return tabsize * text.count("\t") if isinstance(tabsize, int) else 0


# str methods a template can call whose result grows with a number it passes: (name -> check of its arguments)
_STR_METHODS: dict[str, Callable[..., None]] = {
    "ljust": lambda s, width, *_: _check_size("ljust", width),
    "rjust": lambda s, width, *_: _check_size("rjust", width),
    "center": lambda s, width, *_: _check_size("center", width),
    "zfill": lambda s, width: _check_size("zfill", width),
    "expandtabs": lambda s, tabsize=8: _check_size("expandtabs", _tabs_width(s, tabsize)),
    "replace": _check_replace,
}


def _checked_filter(original: Callable[..., Any], check: Callable[..., None]) -> Callable[..., Any]:
    """`original` with `check` run on its arguments first, after the eval context or environment Jinja passes
    to a filter marked for it (`replace`, and every filter with an async variant such as `slice`)."""
    skip = 1 if getattr(original, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(original)  # keeps Jinja's pass_eval_context / pass_environment marker
    def checked(*args: Any, **kwargs: Any) -> Any:
        check(*args[skip:], **kwargs)
        return original(*args, **kwargs)

    return checked


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": lambda value, width=80: _check_size("center", width),
    "indent": _check_indent,
    "replace": _check_replace,
    "batch": lambda value, linecount, fill_with=None: _check_size("batch", linecount),
    "slice": lambda value, slices, fill_with=None: _check_size("slice", slices),
    "format": lambda value, *args, **kwargs: _check_percent(str(value)),
}


class LimitedTemplate(Template):
    """A template that stops with TemplateLimit when it runs past `deadline` seconds (set on those with loops)."""

    deadline: float | None = None

    def render(self, *args: Any, **kwargs: Any) -> str:
        if self.deadline is None:
            return super().render(*args, **kwargs)
        with time_limit(self.deadline):
            return super().render(*args, **kwargs)


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the size checks above; `*`, `**` and `%` are never folded at compile time."""

    intercepted_binops = frozenset({"*", "**", "%"})
    template_class = LimitedTemplate

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name, check in _FILTER_CHECKS.items():
            self.filters[name] = _checked_filter(getattr(filters, f"do_{name}"), check)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_percent(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        check = _STR_METHODS.get(getattr(__obj, "__name__", ""))
        if check is not None and isinstance(getattr(__obj, "__self__", None), str):
            check(__obj.__self__, *args, **kwargs)
        return super().call(__context, __obj, *args, **kwargs)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TemplateLimit in the code under it after `seconds` (SIGALRM, so only on the main thread).

    A Python loop in a template checks for no deadline of its own; a signal interrupts it between any two
    bytecodes. Off the main thread the code runs unlimited. A timer someone else set (pytest-timeout's) is
    put back afterwards with what is left of it, or left alone when it is due first.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    theirs, their_interval = signal.getitimer(signal.ITIMER_REAL)
    if theirs and theirs <= seconds:
        yield
        return

    def expired(_signum: int, _frame: Any) -> None:
        raise TemplateLimit(f"the template ran longer than {seconds:g} s; loops over fewer items would do")

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if theirs:
            signal.setitimer(signal.ITIMER_REAL, max(theirs - (time.monotonic() - started), 0.001), their_interval)
