"""Readable text from an HTML mail body in one linear pass: blocks become lines, scripts and styles vanish.

Not html.parser: on unclosed tags (`<a <a <a ...`, `<a b="...`, `<a\\n...`) it re-scans the rest of the document
from every `<` (CVE-2025-6069, fixed only in later Python releases), so a 50 KB body took over a minute and a
1 MB one hours, on the event loop, stopping the whole daemon. Here no match crosses the next `<`, so every
character is looked at a bounded number of times.
"""

from __future__ import annotations

import re
from html import unescape

_BLOCK = frozenset(
    {
        *("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset", "figcaption"),
        *("figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav"),
        *("ol", "p", "pre", "section", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul"),
    }
)
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
_RAW_TEXT = frozenset({"script", "style"})  # their content is not markup: skipped up to their end tag
# A comment (an unclosed one runs to the end, as browsers read it), a tag that closes before the next `<` (a
# quoted value may hold `>`; `*+` never backtracks), or a declaration / processing instruction. A `<` that starts
# none of these is text: also one inside an attribute value, which only hand-broken mail has.
_MARKUP = re.compile(
    r"<!--(?:.*?--!?>|.*\Z)|<(/?)([a-zA-Z][a-zA-Z0-9:-]*)((?:\"[^\"<]*\"|'[^'<]*'|[^<>])*+)>|<[!?/][^<>]*>",
    re.S,
)
_SPACES = re.compile(r"[ \t\u00a0\u200b\r\f\v]+")
_BLANKS = re.compile(r"\n\s*\n+")


def html_to_text(html: str) -> str:
    """The visible text of `html`, one line per block element, runs of blank lines collapsed."""
    parts: list[str] = []
    skipping = 0
    pos = 0
    while (match := _MARKUP.search(html, pos)) is not None:
        if not skipping:
            parts.append(unescape(html[pos : match.start()]))
        pos = match.end()
        name = (match.group(2) or "").lower()
        if not name:  # comment, declaration, processing instruction
            continue
        closing, self_closing = bool(match.group(1)), match.group(3).endswith("/")
        if name in _BLOCK:
            parts.append("\n")
        elif closing and name in _SKIP:
            skipping = max(0, skipping - 1)
        elif not self_closing and name in _RAW_TEXT:
            end = re.compile(rf"</{name}\b[^<>]*>", re.I).search(html, pos)
            pos = end.end() if end else len(html)
        elif not closing and not self_closing and name in _SKIP:
            skipping += 1
    if not skipping:
        parts.append(unescape(html[pos:]))
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parts).split("\n"))
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()
