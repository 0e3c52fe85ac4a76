"""What every action type has: a compile step (templates checked once) and an execute step with typed failures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.triggers.sandbox import Scope, Templates


class CompileError(ValueError):
    """An action option that cannot work; `path` is relative to the action's options."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class Transient(Exception):
    """Worth retrying later (a server away, a timeout, a 5xx)."""


class Permanent(Exception):
    """Will fail the same way every time (a 4xx, a template error, a bad address)."""


class Skipped(Exception):
    """Deliberately not done (a suppressed address); the action is recorded as cancelled with the reason."""


BatchWrite = Callable[[Any, list[Any]], Awaitable[None]]  # (connection, rows)


@dataclass
class Job:
    """One scheduled action being executed, with the context reloaded at its due time."""

    key: str
    rule_id: str
    event: dict[str, Any]
    context: dict[str, Any]
    now: datetime
    attempt: int = 1
    # Store writes that belong to a successful run, as `(write, row)`: the scheduler calls each write once with the
    # rows of the whole batch's successful runs, in the transaction that records their outcomes (a statement per
    # run was half the scheduler's time with survey e-mails).
    batched: list[tuple[BatchWrite, Any]] = field(default_factory=list)
    # What the action type's `prefetch` read for the whole batch (absent: the action reads it itself).
    prefetched: dict[str, Any] | None = None


@dataclass
class Deps:
    """What actions may use: the store, outbound settings, the clock, the signing key, an HTTP session."""

    engine: AsyncEngine | None
    smtp_url: str | None = None
    public_url: str | None = None
    signing_key: Callable[[], Any] | None = None  # async () -> bytes
    http: Any = None  # aiohttp.ClientSession
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderEnv:
    """What rendering may need besides the context: the link signing key, the public URL, the time."""

    key: bytes
    public_url: str | None
    now: datetime


class Bound(Protocol):
    """An action with its templates compiled."""

    def render(self, context: dict[str, Any], env: RenderEnv) -> dict[str, Any]:
        """What the action would do with this context (the dry run shows this); no side effects."""
        ...

    async def execute(self, rendered: dict[str, Any], job: Job, deps: Deps) -> dict[str, Any]:
        """Do it; return a small result to record, or raise Transient, Permanent or Skipped."""
        ...


class ActionType(Protocol):
    name: str
    Spec: type[BaseModel]

    def compile(self, spec: Any, templates: Templates, scope: Scope) -> Bound: ...


def compile_text(templates: Templates, scope: Scope, source: str | None, path: str, *, html: bool = False) -> Any:
    """An inline template option, or a CompileError naming the option."""
    from leadhub.triggers.sandbox import TemplateProblem

    if source is None:
        return None
    try:
        return templates.inline(source, scope, html=html)
    except TemplateProblem as exc:
        raise CompileError((path,), str(exc)) from None


def fitting(value: str | None, option: str, limit: int) -> str | None:
    """`value` when the store's column holds it; else Permanent: the same template renders too long every retry
    (PostgreSQL refused it as an unexpected error, retried 8 times; SQLite kept it). Never cut: a cut owner name
    is another manager's, or nobody's."""
    if value is not None and len(value) > limit:
        raise Permanent(
            f"{option} renders to {len(value)} characters; at most {limit} are stored: shorten the template"
        )
    return value


def render_text(template: Any, context: dict[str, Any]) -> str | None:
    return None if template is None else template.render(**context)
