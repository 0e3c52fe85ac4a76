"""Typed application state shared by the HTTP handlers (aiohttp AppKeys)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.hub.config import Settings
from leadhub.hub.metrics import Metrics


@dataclass
class HttpDeps:
    settings: Settings
    metrics: Metrics
    connectors: dict[str, Any]
    engine: Callable[[], AsyncEngine | None]
    queue_ready: Callable[[], Awaitable[bool]]
    store_problem: Callable[[], Awaitable[str | None]]  # None when usable, else why not (hub/store_health.py)
    readiness_detail: Callable[[], dict[str, Any]] = field(default=lambda: {})
    clock: Any = None  # the rule engine's clock (survey link expiry); None: the system clock
    worker: int = 0  # which process answers: 0 the primary, 1.. its worker processes


DEPS = web.AppKey("deps", HttpDeps)
