"""The streams' duplicate window (`stream_duplicate_window`): what NATS answers as a repeat, and for how long.

The window costs NATS memory per message id it remembers, so it is short by default; a repeat after it must
still be stored once, because the store's keys are unique.
"""

from __future__ import annotations

from typing import Any

from leadhub.hub.queue import DEAD, EVENTS, INBOUND
from tests.conftest import HubFactory
from tests.helpers import wait_for

FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def _windows(queue: Any) -> list[float]:
    return [(await queue.jetstream.stream_info(name)).config.duplicate_window for name in (INBOUND, EVENTS, DEAD)]


async def test_every_stream_takes_the_configured_window_and_an_existing_stream_is_updated(
    make_hub: HubFactory,
) -> None:
    hub = await make_hub([FORM], stream_duplicate_window="45s")
    queue = hub.hub.queue
    assert await _windows(queue) == [45.0, 45.0, 45.0]
    queue.duplicate_window = 9.0  # what a restart with another setting declares over the existing streams
    await queue.declare_streams()
    assert await _windows(queue) == [9.0, 9.0, 9.0]


async def test_the_default_window_is_thirty_seconds(make_hub: HubFactory) -> None:
    hub = await make_hub([FORM], roles="http")
    assert await _windows(hub.hub.queue) == [30.0, 30.0, 30.0]


async def test_a_repeat_after_the_window_is_not_answered_as_one_but_is_stored_once(make_hub: HubFactory) -> None:
    hub = await make_hub([FORM], stream_duplicate_window="1s")
    post = {"json": {"name": "Ivan", "phone": "+79161234567"}, "headers": {"Idempotency-Key": "late-retry-1"}}
    answers: list[bool] = []

    async def answered_new_again() -> bool:
        async with await hub.post("/hooks/site-form", **post) as response:
            assert response.status == 202
            answers.append((await response.json())["duplicate"])
        return len(answers) > 1 and not answers[-1]

    await wait_for(answered_new_again, timeout=15, what="the stream to forget the key after its 1 s window")
    assert answers[0] is False and all(answers[1:-1]), answers  # inside the window every repeat was a duplicate

    async def inbound_drained() -> bool:
        return (await hub.hub.queue.jetstream.stream_info(INBOUND)).state.messages == 0

    await wait_for(inbound_drained, timeout=15, what="the pipeline to take both published copies")
    inquiries = (await hub.api("/api/inquiries"))["items"]
    assert len(inquiries) == 1
    await hub.wait_items("/api/leads", 1)
