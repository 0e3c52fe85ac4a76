"""Replaying a dead letter through the intake pipeline, for `leadhub dead replay` and `POST /api/dead-letters/…`.

Replaying is idempotent: an envelope whose key is already stored changes nothing. The outcome is recorded on the
dead letter (its replays, and its new reason when it fails again) either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.envelope import Envelope
from leadhub.hub.config import Settings
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store import dead_letters, outbox


@dataclass(frozen=True)
class ReplayOutcome:
    id: str
    resolved: bool
    reason: str | None = None  # why it failed again (or was not replayed)
    missing: bool = False  # no dead letter has this id
    already: bool = False  # resolved by an earlier replay: not run again

    @property
    def result(self) -> str:
        if self.missing:
            return "not found"
        if self.already:
            return "already resolved"
        return "resolved" if self.resolved else f"failed again: {self.reason}"


def replay_pipeline(engine: AsyncEngine, settings: Settings, connectors: Iterable[Any]) -> IntakePipeline:
    """The intake pipeline as the daemon runs it, for the configured `connectors`."""
    sources = {c.name: SourceSpec(c.type, c.model_dump(mode="json")) for c in connectors}
    return IntakePipeline(engine, sources, default_region=settings.default_region, policy=settings.identity_policy)


async def replay_by_id(engine: AsyncEngine, pipeline: IntakePipeline, dead_id: str) -> ReplayOutcome | None:
    """One dead letter, read when its turn comes (payloads can be up to the queue's largest message each); None
    when there is no such dead letter."""
    async with engine.connect() as conn:
        row = await dead_letters.get(conn, dead_id)
    return None if row is None else await replay_one(engine, pipeline, row)


async def replay_one(engine: AsyncEngine, pipeline: IntakePipeline, row: Any) -> ReplayOutcome:
    if row.resolved_at is not None:  # `dead replay ID` run twice: nothing to do, and no replay to count
        return ReplayOutcome(row.id, True, already=True)
    if row.source == outbox.DEAD_LETTER_SOURCE:
        return await _back_to_the_outbox(engine, row)
    if row.source != "inbound":
        return ReplayOutcome(row.id, False, f"replay of {row.source!r} dead letters is not supported")
    reason = None
    try:
        envelope = Envelope.from_message(row.headers, row.payload)
        await pipeline.store_one(pipeline.prepare(envelope))  # a lost race is tried again at once
    except Exception as exc:  # recorded on the dead letter; the operator sees it in `dead list`
        reason = f"{exc}"
    async with engine.begin() as conn:
        await dead_letters.record_replay(conn, row.id, datetime.now(UTC), resolved=reason is None, reason=reason)
    return ReplayOutcome(row.id, reason is None, reason)


async def _back_to_the_outbox(engine: AsyncEngine, row: Any) -> ReplayOutcome:
    """An event the relay could not publish (too large for the queue) goes back to the relay, which publishes it once
    the queue takes it (the server's `max_payload` raised) and otherwise opens this dead letter again."""
    async with engine.begin() as conn:
        returned = await outbox.unpublish(conn, row.key or "")
        reason = None if returned else f"the event {row.key} is no longer in the outbox"
        await dead_letters.record_replay(conn, row.id, datetime.now(UTC), resolved=returned, reason=reason)
    return ReplayOutcome(row.id, returned, reason)
