"""Dead-letter commands: list them, show one, and replay them through the intake pipeline against the store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from leadhub.hub.config import HubConfig
from leadhub.hub.dead_letter_replay import ReplayOutcome, replay_by_id, replay_pipeline
from leadhub.store import dead_letters
from leadhub.store.db import engine_at_heads

REPLAY_PAGE = 100  # ids read per query; each payload is read alone, when its turn comes


async def list_dead(config: HubConfig, limit: int, include_resolved: bool) -> Sequence[Any]:
    async with engine_at_heads(config.settings.effective_database_url) as engine, engine.connect() as conn:
        return await dead_letters.list_open(conn, limit, include_resolved)


async def get_dead(config: HubConfig, dead_id: str) -> Any | None:
    """One dead letter with its headers and payload, or None."""
    async with engine_at_heads(config.settings.effective_database_url) as engine, engine.connect() as conn:
        return await dead_letters.get(conn, dead_id)


async def replay_dead(config: HubConfig, dead_id: str | None) -> list[ReplayOutcome]:
    """Every outcome of `replay_each`, for one dead letter or a few; `dead replay --all` prints them as they come."""
    return [outcome async for outcome in replay_each(config, dead_id)]


async def replay_each(config: HubConfig, dead_id: str | None) -> AsyncIterator[ReplayOutcome]:
    """Replay one dead letter, or every open one (`None`), yielding each outcome when it is known, so that a backlog
    of 100,000 shows its progress and is not held in memory. Replaying is idempotent: an envelope whose key is
    already stored changes nothing.

    It does not migrate: run from the wrong directory, it created and migrated an empty database there."""
    async with engine_at_heads(config.settings.effective_database_url) as engine:
        pipeline = replay_pipeline(engine, config.settings, config.connectors)
        if dead_id is not None:
            yield await replay_by_id(engine, pipeline, dead_id) or ReplayOutcome(dead_id, False, missing=True)
            return
        after: str | None = None
        while page := await _open_page(engine, after):
            for each in page:
                yield await replay_by_id(engine, pipeline, each) or ReplayOutcome(each, False, missing=True)
            after = page[-1]


async def _open_page(engine: Any, after: str | None) -> list[str]:
    async with engine.connect() as conn:
        return await dead_letters.open_ids(conn, after, REPLAY_PAGE)
