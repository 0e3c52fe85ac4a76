"""JSON responses: timestamps as ISO-8601 UTC, errors as {"error": ..., "detail": ...}."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return None
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(data: Any) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False, separators=(",", ":"))


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": error, "detail": detail}, status=status, headers=headers)
