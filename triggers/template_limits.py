"""Limits on what an admin's template may build and how long it may run.

Jinja's sandbox keeps Python's internals out of reach, not resources: `{{ "a" * 10**10 }}` in a rule file took
every byte of memory (Jinja even folds such a constant while the rules load, so a hot reload could take the
daemon down), and loops nested over `range(100000)` held the event loop for hours. Here every operator, filter
and string or bytes method that builds something in proportion to a number it is given, or to how often it
writes an operand (`%` converting one argument 20,000 times, a `.translate()` table, `~` and `+` doubling a
string at each step), is checked before it runs: C code building gigabytes cannot be stopped by the alarm.

Sizes multiply without any such number: `[s] * 100000` holds one string 100,000 times, small in memory, but
joined, printed or turned into text it is 100,000 times that string. So what turns a value into text (printing
it, `~`, `%`, `|join`, `.join()`, `|string` and the other text filters) counts the text first, `|wordwrap`
counts its lines with the separator, and what `|map` makes and a template's whole output are capped. Every
template and every condition Jinja runs gets a time limit (a condition compiled to a closure only reads and
compares).
"""

from __future__ import annotations

import _signal
import functools
import re
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, ValuesView
from contextlib import contextmanager
from typing import Any

from jinja2 import Template, filters, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_BUILT = 100_000  # characters or items one operator, filter or method may build
MAX_OUTPUT = 1_000_000  # characters a whole template may render
MAX_POWER_BITS = 4_096  # `**` on whole numbers: the result's size in bits
RENDER_SECONDS = 1.0  # a template's or condition's render time
# One `%` conversion: `%%` (a literal %, nothing converted) or key, flags, width, precision, length and type.
_PERCENT_SPEC = re.compile(
    r"%(?:(?P<literal>%)|(?:\((?P<key>[^)]*)\))?[-#0 +]*"
    r"(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?[hlL]?(?P<type>.?))",
    re.DOTALL,
)
_TEXTS = (str, bytes, bytearray)
_SEQUENCES = (*_TEXTS, list, tuple)


class TemplateLimit(ValueError):
    """A template asked for more than a message needs; the message says what and where the limit is."""


def _too_big(what: str, size: int) -> TemplateLimit:
    return TemplateLimit(f"{what} would build {size:,} characters or items; the limit is {MAX_BUILT:,}")


def _check_repeat(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, _SEQUENCES) and isinstance(count, int) and len(seq) * count > MAX_BUILT:
            raise _too_big("'*'", len(seq) * count)


def _past_limit(what: str, size: int) -> TemplateLimit:
    """The message for a size counted only until it passed the limit (the text is never built)."""
    return TemplateLimit(f"{what} would build at least {size:,} characters; the limit is {MAX_BUILT:,}")


_CONTAINERS = (list, tuple, set, frozenset, dict, KeysView, ValuesView, ItemsView)


def _text_length(value: Any, limit: int = MAX_BUILT) -> int:
    """About `len(str(value))`, counted without building the text, and only until it passes `limit`.

    Each item adds at least one character, so counting stops after at most `limit` items however many times a
    list holds the same big one.
    """
    if not isinstance(value, _CONTAINERS):
        return len(value) if isinstance(value, str) else len(str(value))
    size, pending = 0, [value]
    while pending and size <= limit:
        item = pending.pop()
        if isinstance(item, dict):
            size += 2 + 4 * len(item)  # braces; ": " and ", " per pair
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, _CONTAINERS):
            size += 2 + 2 * len(item)  # brackets; ", " per item
            pending.extend(item)
        else:
            size += len(item) + 2 if isinstance(item, str) else len(repr(item))  # an item prints as its repr
    return size


def _check_text(what: str, value: Any) -> None:
    """`value` is about to become text (printed, joined, filtered as a string): a list or mapping counts first."""
    if isinstance(value, _CONTAINERS) and (size := _text_length(value)) > MAX_BUILT:
        raise _past_limit(what, size)


def _joinable(what: str, separator: Any, iterable: Iterable[Any]) -> list[Any]:
    """The items a join will join, read once (a generator cannot be read again) and counted as they come, with
    the separator between each two: a `|map` over many items stops at the first item past the limit."""
    items: list[Any] = []
    size, between = 0, _text_length(separator)
    for item in iterable:
        size += _text_length(item, MAX_BUILT - size) + (between if items else 0)
        if size > MAX_BUILT:
            raise _past_limit(what, size)
        items.append(item)
    return items


def _counted(what: str, items: Iterable[Any]) -> Iterator[Any]:
    """`items` as they come, stopping once the strings among them pass MAX_OUTPUT characters together."""
    size = 0
    for item in items:
        if isinstance(item, str):
            size += len(item)
            if size > MAX_OUTPUT:
                raise TemplateLimit(f"{what} would make at least {size:,} characters; the limit is {MAX_OUTPUT:,}")
        yield item


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        bits = max(abs(base).bit_length() - 1, 1) * exponent  # 2**n has n+1 bits; 1**n and 0**n stay small
        if abs(base) > 1 and bits > MAX_POWER_BITS:
            raise TemplateLimit(f"'**' would make a number of ~{bits:,} bits; the limit is {MAX_POWER_BITS:,}")


def _check_concat(left: Any, right: Any) -> None:
    """`+` on two strings, bytes, lists or tuples: `{% set s = s + s %}` doubles a string at each step."""
    if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES) and len(left) + len(right) > MAX_BUILT:
        raise _too_big("'+'", len(left) + len(right))


def _check_percent(fmt: str | bytes, args: Any) -> None:
    """`fmt % args` (and `|format`), bounded before formatting: the format's own text, and for each conversion
    its width and precision plus the longest argument it could be given. `("%(a)s" * 20000) % {"a": s}` repeats
    one argument 20,000 times, so each conversion counts, not the arguments once."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes | bytearray) else fmt
    keys: set[str] = set()
    conversions = unkeyed = padding = 0
    quoted = False
    for spec in _PERCENT_SPEC.finditer(text):
        if spec["literal"]:
            continue
        for number in (spec["width"], spec["precision"]):
            if number == "*":
                raise TemplateLimit("'%*' widths are not supported in templates; write the width as a number")
            if number and int(number) > MAX_BUILT:
                raise _too_big(f"the format {fmt[:40]!r}", int(number))
        key = spec["key"]
        if key is None:
            unkeyed += 1
        elif "(" in key:  # Python matches nested parentheses, the pattern does not: what follows would go unread
            raise TemplateLimit(f"'%(...)' keys with parentheses are not supported in templates: {key!r}")
        else:
            keys.add(key)
        conversions += 1
        padding += int(spec["width"] or 0) + int(spec["precision"] or 0) + 3  # a sign and a `0x` prefix
        quoted = quoted or spec["type"] in ("r", "a")
    if not conversions:
        return
    longest = max((_argument_length(value, quoted) for value in _arguments(fmt, args, keys, unkeyed)), default=0)
    if hasattr(fmt, "__html__"):
        longest *= 5  # Markup's `%` escapes each argument: `"` becomes `&#34;`
    size = len(text) + padding + conversions * longest
    if size > MAX_BUILT:
        raise _past_limit("'%'", size) if longest > MAX_BUILT else _too_big("'%'", size)


def _arguments(fmt: str | bytes, args: Any, keys: set[str], unkeyed: int) -> Iterable[Any]:
    """What the conversions of `fmt % args` can be given: a tuple's items, the values of the keys the format
    names (looked up as `%` will, in a dict or a record), or `args` itself."""
    if isinstance(args, tuple):
        return args
    if not keys:
        return (args,)
    values = [args] if unkeyed else []
    for key in keys:
        try:
            values.append(args[key.encode("latin-1") if isinstance(fmt, bytes | bytearray) else key])
        except (LookupError, TypeError):  # `%` raises it, and says it better
            continue
    return values


def _argument_length(value: Any, quoted: bool) -> int:
    """At most how many characters one conversion writes for `value`, besides width and precision."""
    if isinstance(value, float):
        return 310  # `%f` and `%d` write every digit of 1e308
    if quoted and isinstance(value, _TEXTS):
        return len(ascii(value))  # `%r` and `%a` write escapes: one character can take ten
    return _text_length(value)


def _check_translate(text: Any, table: Any) -> None:
    """`str.translate`: each character can become any string the table maps it to (`{120: "y" * 99000}`)."""
    if not isinstance(text, str) or isinstance(table, (*_TEXTS, range)):
        return  # bytes translate one byte to one byte; a str, bytes or range table gives one character
    if isinstance(table, dict):
        longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
        if len(text) * longest > MAX_BUILT:  # the cheap bound failed: count the characters each key replaces
            size = len(text) + sum(
                text.count(chr(k)) * (len(v) - 1)
                for k, v in table.items()
                if isinstance(k, int) and 0 <= k <= sys.maxunicode and isinstance(v, str) and len(v) > 1
            )
            if size > MAX_BUILT:
                raise _too_big("translate", size)
    elif isinstance(table, list | tuple):
        longest = max((len(v) for v in table if isinstance(v, str)), default=1)
        if len(text) * longest > MAX_BUILT:
            raise _too_big("translate", len(text) * longest)
    else:
        raise TemplateLimit(f"translate takes a dict, list or str table in templates, not {type(table).__name__}")


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    if isinstance(text, _TEXTS) and isinstance(old, _TEXTS) and isinstance(new, _TEXTS) and len(new) > len(old):
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


def _tabs_width(text: str | bytes, tabsize: Any) -> int:
    tab = "\t" if isinstance(text, str) else b"\t"
    return tabsize * text.count(tab) if isinstance(tabsize, int) else 0


def _check_str_join(separator: str, iterable: Iterable[Any]) -> tuple[Any, ...]:
    return (_joinable("join", separator, iterable),)


# str and bytes methods a template can call whose result grows with what it passes (name -> check of arguments).
# A check that has to read an iterable to measure it returns the arguments to call the method with instead.
_STR_METHODS: dict[str, Callable[..., tuple[Any, ...] | None]] = {
    "ljust": lambda s, width, *_: _check_size("ljust", width),
    "rjust": lambda s, width, *_: _check_size("rjust", width),
    "center": lambda s, width, *_: _check_size("center", width),
    "zfill": lambda s, width: _check_size("zfill", width),
    "expandtabs": lambda s, tabsize=8: _check_size("expandtabs", _tabs_width(s, tabsize)),
    "replace": _check_replace,
    "join": _check_str_join,
    "translate": _check_translate,
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


def _check_urlize(
    text: Any,
    trim_url_limit: Any = None,
    nofollow: Any = False,
    target: Any = None,
    rel: Any = None,
    *_: Any,
    **__: Any,
) -> None:
    """`|urlize` writes `target` and `rel` into every link it makes, and each link has a `.`, `@` or `:`."""
    text = filters.soft_str(text)
    links = text.count(".") + text.count("@") + text.count(":")
    _check_size("|urlize", links * (len(filters.soft_str(target or "")) + len(filters.soft_str(rel or ""))))


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": lambda value, width=80: _check_size("center", width),
    "indent": _check_indent,
    "replace": _check_replace,
    "batch": lambda value, linecount, fill_with=None: _check_size("batch", linecount),
    "slice": lambda value, slices, fill_with=None: _check_size("slice", slices),
    "format": lambda value, *args, **kwargs: _check_percent(filters.soft_str(value), kwargs or args),
    "urlize": _check_urlize,
}


def _value_as_text(what: str) -> Callable[..., None]:
    return lambda value, *_, **__: _check_text(what, value)


# Filters that turn their value into text first: a list or mapping given to one is counted as text.
_TEXT_FILTERS = (
    *("string", "e", "escape", "forceescape", "upper", "lower", "title", "capitalize", "trim", "striptags"),
    *("truncate", "wordcount", "urlize", "urlencode", "tojson", "pprint", "center", "indent", "replace", "format"),
)


@filters.pass_eval_context
def _join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    """`|join`, its size (the items' text and a separator between each two) counted before joining."""
    if attribute is not None:
        value = map(filters.make_attrgetter(eval_ctx.environment, attribute), value)
    return filters.sync_do_join(eval_ctx, _joinable("|join", d, value), d)


@filters.pass_environment
def _wordwrap(  # noqa: PLR0917 - Jinja's signature: templates pass these by position
    environment: Any,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    """`|wordwrap` as Jinja does it, its size (the lines and `wrapstring` between each two) counted before joining:
    a long `wrapstring` after every one-character line multiplied the text."""
    separator = environment.newline_sequence if wrapstring is None else wrapstring
    wrap = functools.partial(
        textwrap.wrap,
        width=width,
        expand_tabs=False,
        replace_whitespace=False,
        break_long_words=break_long_words,
        break_on_hyphens=break_on_hyphens,
    )
    paragraphs = [wrap(line) for line in s.splitlines()]
    lines = sum(len(p) for p in paragraphs) + sum(1 for p in paragraphs if not p)  # an empty one still separates
    size = sum(len(line) for p in paragraphs for line in p) + len(separator) * max(lines - 1, 0)
    if size > MAX_BUILT:
        raise _too_big("|wordwrap", size)
    return separator.join(separator.join(p) for p in paragraphs)


def _counted_map(original: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """`|map`, its strings counted: it is how one big value (`|map("default", s)`) becomes 100,000 new strings
    (`|map("upper")`), each within the limit but not together."""

    @functools.wraps(original)  # keeps Jinja's pass_context marker
    def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
        return _counted("|map", original(*args, **kwargs))

    return counted


# Filters whose size shows only once their input is read: done here, counted before the result is built.
_MEASURED_FILTERS: dict[str, Callable[..., str]] = {"join": _join, "wordwrap": _wordwrap}


class LimitedTemplate(Template):
    """A template that stops with TemplateLimit when it runs past `deadline` seconds."""

    deadline: float | None = RENDER_SECONDS

    def render(self, *args: Any, **kwargs: Any) -> str:
        if self.deadline is None:
            return super().render(*args, **kwargs)
        with time_limit(self.deadline):
            return super().render(*args, **kwargs)


class TextCheckingCodeGenerator(CodeGenerator):
    """Jinja's code generator, with the operands of `~` measured together as text before `~` joins them."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """Jinja's own, the operands passed through `environment.concatenable` first."""
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.concatenable((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write(")))")


def capped_concat(parts: Iterable[str]) -> str:
    """How Jinja joins a template's output (and a block's): counted as it comes, so a loop printing a big value
    100,000 times stops at MAX_OUTPUT instead of joining 100,000 copies after the time limit could not help."""
    collected, size = [], 0
    for part in parts:
        size += len(part)
        if size > MAX_OUTPUT:
            raise TemplateLimit(f"the template would render at least {size:,} characters; the limit is {MAX_OUTPUT:,}")
        collected.append(part)
    return "".join(collected)


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the size checks above; `*`, `**`, `%` and `+` are never folded at compile time."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    template_class = LimitedTemplate
    code_generator_class = TextCheckingCodeGenerator
    concat = staticmethod(capped_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name, check in _FILTER_CHECKS.items():
            self.filters[name] = _checked_filter(self.filters[name], check)
        for name in _TEXT_FILTERS:  # outermost: a list is counted before a check above makes it text
            self.filters[name] = _checked_filter(self.filters[name], _value_as_text(f"|{name}"))
        self.filters.update(_MEASURED_FILTERS)
        self.filters["map"] = _counted_map(self.filters["map"])
        self.finalize = _printing(self.finalize)

    @staticmethod
    def concatenable(parts: tuple[Any, ...]) -> tuple[Any, ...]:
        """The operands of one `~`, once the text they make together is known to be within the limit."""
        size = 0
        for part in parts:
            size += _text_length(part, MAX_BUILT - size)
            if size > MAX_BUILT:
                raise _past_limit("'~'", size)
        return parts

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":
            _check_concat(left, right)
        elif operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, _TEXTS):
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        check = _STR_METHODS.get(getattr(__obj, "__name__", ""))
        if check is not None and isinstance(getattr(__obj, "__self__", None), _TEXTS):
            args = check(__obj.__self__, *args, **kwargs) or args
        return super().call(__context, __obj, *args, **kwargs)


def _printing(finalize: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """The environment's `finalize` (what `{{ value }}` goes through), with the value checked as text first."""

    def printed(value: Any) -> Any:
        _check_text("printing a value", value)
        return value if finalize is None else finalize(value)

    return printed


def limited(expression: Callable[..., Any]) -> Callable[..., Any]:
    """A condition Jinja runs (filters, operators, calls), under the same time limit as a template."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        with time_limit(RENDER_SECONDS):
            return expression(*args, **kwargs)

    return timed


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TemplateLimit in the code under it after `seconds` (SIGALRM, so only on the main thread).

    A Python loop in a template checks for no deadline of its own; a signal interrupts it between any two
    bytecodes. Off the main thread the code runs unlimited. A timer someone else set (pytest-timeout's) is
    put back afterwards with what is left of it, or left alone when it is due first. The handler is swapped with
    `_signal.signal`, the call `signal.signal` makes before wrapping the old handler in an enum: that wrapping
    took 5 of the 7 µs this costs every render and every condition Jinja runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    theirs, their_interval = signal.getitimer(signal.ITIMER_REAL)
    if theirs and theirs <= seconds:
        yield
        return

    def expired(_signum: int, _frame: Any) -> None:
        raise TemplateLimit(f"the template ran longer than {seconds:g} s; loops or filters over fewer items would do")

    started = time.monotonic()
    previous = _signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _signal.signal(signal.SIGALRM, previous)
        if theirs:
            signal.setitimer(signal.ITIMER_REAL, max(theirs - (time.monotonic() - started), 0.001), their_interval)
