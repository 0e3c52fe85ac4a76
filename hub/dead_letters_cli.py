"""Dead-letter commands: list them, show one, and replay them through the intake pipeline against the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from leadhub.envelope import Envelope
from leadhub.hub.config import HubConfig
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store import dead_letters
from leadhub.store.db import create_engine, require_heads, upgrade

REPLAY_PAGE = 100  # ids read per query; each payload is read alone, when its turn comes


@dataclass
class ReplayOutcome:
    id: str
    result: str


async def list_dead(config: HubConfig, limit: int, include_resolved: bool) -> Sequence[Any]:
    engine = create_engine(config.settings.effective_database_url, existing=True)
    try:
        await require_heads(engine)  # a listing creates no tables (in a database named by mistake, say)
        async with engine.connect() as conn:
            return await dead_letters.list_open(conn, limit, include_resolved)
    finally:
        await engine.dispose()


async def get_dead(config: HubConfig, dead_id: str) -> Any | None:
    """One dead letter with its headers and payload, or None."""
    engine = create_engine(config.settings.effective_database_url, existing=True)
    try:
        await require_heads(engine)
        async with engine.connect() as conn:
            return await dead_letters.get(conn, dead_id)
    finally:
        await engine.dispose()


async def replay_dead(config: HubConfig, dead_id: str | None) -> list[ReplayOutcome]:
    """Replaying is idempotent: an envelope whose key is already stored changes nothing."""
    engine = create_engine(config.settings.effective_database_url)
    sources = {c.name: SourceSpec(c.type, c.model_dump(mode="json")) for c in config.connectors}
    pipeline = IntakePipeline(
        engine,
        sources,
        default_region=config.settings.default_region,
        policy=config.settings.identity_policy,
    )
    outcomes: list[ReplayOutcome] = []
    try:
        await upgrade(engine)
        if dead_id is not None:
            return [await _replay_by_id(engine, pipeline, dead_id)]
        after: str | None = None
        while page := await _open_page(engine, after):
            outcomes += [await _replay_by_id(engine, pipeline, each) for each in page]
            after = page[-1]
    finally:
        await engine.dispose()
    return outcomes


async def _open_page(engine: Any, after: str | None) -> list[str]:
    async with engine.connect() as conn:
        return await dead_letters.open_ids(conn, after, REPLAY_PAGE)


async def _replay_by_id(engine: Any, pipeline: IntakePipeline, dead_id: str) -> ReplayOutcome:
    """One dead letter, read when its turn comes: payloads can be up to the queue's largest message each."""
    async with engine.connect() as conn:
        row = await dead_letters.get(conn, dead_id)
    if row is None:
        return ReplayOutcome(dead_id, "not found")
    return await _replay_one(engine, pipeline, row)


async def _replay_one(engine: Any, pipeline: IntakePipeline, row: Any) -> ReplayOutcome:
    if row.source != "inbound":
        return ReplayOutcome(row.id, f"failed: replay of {row.source!r} dead letters is not supported")
    reason = None
    try:
        envelope = Envelope.from_message(row.headers, row.payload)
        await pipeline.store([pipeline.prepare(envelope)])
    except Exception as exc:  # recorded on the dead letter; the operator sees it in `dead list`
        reason = f"{exc}"
    async with engine.begin() as conn:
        await dead_letters.record_replay(conn, row.id, datetime.now(UTC), resolved=reason is None, reason=reason)
    return ReplayOutcome(row.id, "resolved" if reason is None else f"failed again: {reason}")
