"""The publish window (leadhub/publish_window.py) in the outbox relay: one publish per claim while NATS takes
everything, smaller parts while it refuses.

The publish here is a stand-in that refuses parts over a bound the way a stream with a full ingest queue does;
the real server's refusal is in test_relay_ingest_limit.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.connectors.base import QueueBusy, QueueUnavailable
from leadhub.ids import new_id
from leadhub.pipelines import outbox_relay
from leadhub.pipelines.outbox_relay import Message, OutboxRelay
from leadhub.publish_window import PublishWindow
from leadhub.store import outbox
from leadhub.store.db import create_engine, upgrade
from leadhub.store.models import OutboxEvent


class BoundedStream:
    """Takes parts of up to `bound` messages; refuses larger ones after storing `bound` of them (as NATS does)."""

    def __init__(self, bound: int, fail_after: int | None = None) -> None:
        self.bound = bound
        self.fail_after = fail_after  # stored messages after which every publish times out
        self.parts: list[int] = []
        self.stored: dict[str, int] = {}  # message id: times stored (the real stream would drop repeats)

    async def publish(self, messages: list[Message], stream: str) -> None:
        self.parts.append(len(messages))
        for _, _, headers in messages[: self.bound]:
            if self.fail_after is not None and len(self.stored) >= self.fail_after:
                raise QueueUnavailable("TimeoutError: JetStream did not acknowledge within 3s")
            self.stored[headers["Nats-Msg-Id"]] = self.stored.get(headers["Nats-Msg-Id"], 0) + 1
        if len(messages) > self.bound:
            raise QueueBusy("APIError: nats: APIError: code=429 err_code=10167 description='too many requests'")


def test_window_halves_to_one_and_grows_back_to_a_claim() -> None:
    window = PublishWindow(2000)
    sizes = [window.size]
    while window.shrink():
        sizes.append(window.size)
    assert sizes == [2000, 1000, 500, 250, 125, 62, 31, 15, 7, 3, 1]
    for _ in range(11):
        window.grow()
    assert window.size == 2000


@pytest.fixture
async def engine(database_url: str) -> AsyncEngine:
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine  # type: ignore[misc]
    await engine.dispose()


async def _outbox_with(engine: AsyncEngine, count: int) -> list[str]:
    now = datetime.now(UTC)
    rows = [outbox.outbox_event("lead.created", new_id(), now, n=n) for n in range(count)]
    async with engine.begin() as conn:
        await conn.execute(insert(OutboxEvent.__table__), rows)
    return [row["id"] for row in rows]


async def test_a_claim_nats_takes_whole_is_one_publish(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_relay, "BATCH", 40)
    await _outbox_with(engine, 40)
    stream = BoundedStream(bound=1000)
    relay = OutboxRelay(engine, stream.publish, lambda n: None)
    assert await relay.relay_once() == 40
    assert stream.parts == [40], "no extra round trip when nothing is refused"


async def test_refused_claims_go_through_in_parts_each_event_once(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_relay, "BATCH", 40)
    ids = await _outbox_with(engine, 100)
    stream = BoundedStream(bound=6)
    published: list[int] = []
    relay = OutboxRelay(engine, stream.publish, published.append)
    while await relay.relay_once():
        pass
    assert sorted(stream.stored) == sorted(ids), "every event reached the stream"
    assert published == [40, 40, 20], "each claim got through in one relay_once"
    assert relay.window.size <= 2 * 6, "the window settled near the bound"


async def test_what_was_acked_before_a_failure_is_marked(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_relay, "BATCH", 40)
    ids = await _outbox_with(engine, 40)
    stream = BoundedStream(bound=5, fail_after=12)
    published: list[int] = []
    relay = OutboxRelay(engine, stream.publish, published.append)
    with pytest.raises(QueueUnavailable, match="did not acknowledge"):
        await relay.relay_once()
    async with engine.connect() as conn:
        left = [row.id for row in await outbox.claim_unpublished(conn, 100)]
    assert published and ids[: published[0]] == sorted(set(ids) - set(left)), "the acked parts, from the oldest"
    assert 0 < published[0] <= 12

    stream.fail_after = None  # NATS answers again: the rest follows, nothing twice
    while await relay.relay_once():
        pass
    assert sorted(stream.stored) == ids
    assert sum(published) == 40, "no event relayed twice"
