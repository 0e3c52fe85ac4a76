"""Repair of broken header sections before parsing: mbox lines, junk before the headers, unindented folds."""

from __future__ import annotations

import re

MAX_HEADER_BYTES = 256 * 1024  # a header section longer than this is left as it is
_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")
_BLANK = re.compile(rb"\r?\n\r?\n")


def repair_headers(raw: bytes) -> bytes:
    """`raw` with a leading mbox `From ` line and non-header junk lines removed, and header lines that lost
    their folding whitespace (between two fields) indented again; the body is never touched. Unchanged when
    nothing is wrong."""
    end = _BLANK.search(raw, 0, MAX_HEADER_BYTES)
    if end is None:
        return raw
    head, rest = raw[: end.start()], raw[end.start() :]
    lines = head.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if _FIELD.match(line)), None)
    if first is None or first > 3:  # no header at all, or too much junk to call this a message
        return raw
    lines = lines[first:]
    changed = first > 0
    last = max(i for i, line in enumerate(lines) if _FIELD.match(line))
    for i, line in enumerate(lines[:last]):  # after the last field it may be a body missing its blank line
        if i and line.strip() and not line[:1].isspace() and not _FIELD.match(line):
            lines[i] = b" " + line  # a continuation whose indent a broken mailer dropped
            changed = True
    return b"".join(lines) + rest if changed else raw


_DELIMITER = re.compile(rb"^--([\x21-\x7e]{1,70}?)(--)?[ \t]*\r?$", re.M)


def repair_boundary(raw: bytes, declared: str) -> bytes | None:
    """`raw` with its top-level boundary parameter replaced by the delimiter the body really uses, or None
    when the body holds no delimiter line."""
    end = _BLANK.search(raw, 0, MAX_HEADER_BYTES)
    if end is None or not declared:
        return None
    used = _DELIMITER.search(raw, end.end())
    if used is None or used.group(1).decode("ascii") == declared:
        return None
    head = raw[: end.start()]
    fixed = head.replace(declared.encode("ascii", "replace"), used.group(1), 1)
    return fixed + raw[end.start() :] if fixed != head else None
