"""How `leadhub dead show` prints one dead letter: its record, and its payload as text a terminal can take.

The payload is what a sender wrote, so it is hostile input: its control characters are shown escaped
(hub/terminal_text.py), and a payload that is not text is not printed at all; `--raw` gives its exact bytes.
"""

from __future__ import annotations

import json
from typing import Any

from leadhub.envelope import H_CONTENT_TYPE
from leadhub.hub.terminal_text import safe

TEXT_SHOWN = 64 * 1024  # bytes of a payload printed; `--raw` writes all of it


def describe(row: Any) -> str:
    """The dead letter as `name: value` lines, then its payload (or why it is not printed)."""
    resolved = f"{row.resolved_at:%Y-%m-%d %H:%M:%S} UTC" if row.resolved_at else "no"
    lines = [
        f"id:          {row.id}",
        f"created:     {row.created_at:%Y-%m-%d %H:%M:%S} UTC",
        f"source:      {row.source}",
        f"subject:     {safe(row.subject)}",
        f"key:         {safe(row.key or '-')}",
        f"deliveries:  {row.deliveries}",
        f"replays:     {row.replays}" + (f" (last {row.replayed_at:%Y-%m-%d %H:%M:%S} UTC)" if row.replayed_at else ""),
        f"resolved:    {resolved}",
        f"error:       {safe(row.error or '-')}",
        f"reason:      {safe(row.reason)}",
        "headers:",
        *(f"  {safe(str(name))}: {safe(_text(value))}" for name, value in sorted((row.headers or {}).items())),
        *payload_lines(row.id, row.payload, (row.headers or {}).get(H_CONTENT_TYPE)),
    ]
    return "\n".join(lines)


def payload_lines(dead_id: str, payload: bytes, content_type: str | None) -> list[str]:
    size = len(payload)
    head = f"payload:     {size:,} bytes" + (f", {safe(content_type)}" if content_type else "")
    raw_hint = f"`leadhub dead show {dead_id} --raw > FILE` writes its exact bytes"
    try:
        text = payload[:TEXT_SHOWN].decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < TEXT_SHOWN - 3 or size <= TEXT_SHOWN:  # not a character cut in two by the limit
            return [f"{head} (not UTF-8 text, not printed: {raw_hint})"]
        text = payload[: exc.start].decode("utf-8")
    shown = [head, "", *(safe(line, keep_tabs=True) for line in text.splitlines())]
    if size > len(text.encode()):
        shown += ["", f"... {size - len(text.encode()):,} more bytes not printed: {raw_hint}"]
    return shown


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
