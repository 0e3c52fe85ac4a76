"""`send` (leadhub/publish_window.py): the count it returns covers only messages the stream acknowledged, from the
first; refusals shrink the parts, any other failure stops the run. The stream is a stand-in (a pure unit test); the
real server's refusals are in tests/pipelines/test_relay_ingest_limit.py and tests/connectors/test_imap_ingest_limit.py.
"""

from __future__ import annotations

from leadhub.publish_window import PublishWindow, send
from leadhub.queue_errors import QueueBusy, QueueUnavailable


class Stream:
    """Stores up to `bound` messages of a part and refuses the rest with a 429; after `fail_after` stored
    messages every publish times out instead. `acks` is each message's acknowledgement, as a caller would see it."""

    def __init__(self, bound: int, fail_after: int | None = None) -> None:
        self.bound, self.fail_after = bound, fail_after
        self.parts: list[list[int]] = []
        self.stored: list[int] = []

    async def publish(self, part: list[int]) -> None:
        self.parts.append(part)
        for item in part[: self.bound]:
            if self.fail_after is not None and len(set(self.stored)) >= self.fail_after:
                raise QueueUnavailable("TimeoutError: JetStream did not acknowledge within 3s")
            self.stored.append(item)
        if len(part) > self.bound:
            raise QueueBusy("APIError: code=429 description='too many requests'")


async def test_a_run_nothing_refuses_is_one_publish() -> None:
    stream = Stream(bound=1000)
    sent = await send(list(range(100)), stream.publish, PublishWindow(100))
    assert (sent.acked, sent.error) == (100, None)
    assert [len(part) for part in stream.parts] == [100]


async def test_refusals_shrink_the_parts_and_everything_gets_in() -> None:
    stream, window = Stream(bound=10), PublishWindow(100)
    refused: list[int] = []
    sent = await send(list(range(100)), stream.publish, window, on_refused=refused.append)
    assert (sent.acked, sent.error) == (100, None)
    assert refused[:4] == [100, 50, 25, 12], "halved per refusal"
    assert sorted(set(stream.stored)) == list(range(100))
    assert window.size <= 2 * 10, "the window settled near the bound"


async def test_the_count_stops_before_the_part_that_failed() -> None:
    stream = Stream(bound=8, fail_after=30)
    items = list(range(100))
    sent = await send(items, stream.publish, PublishWindow(100))
    assert isinstance(sent.error, QueueUnavailable) and not isinstance(sent.error, QueueBusy)
    assert 0 < sent.acked <= 30
    assert set(items[: sent.acked]) <= set(stream.stored), "every message counted was acknowledged"
    failed_part = stream.parts[-1]
    assert failed_part[0] == sent.acked, "the part that failed is not counted, not even its stored messages"


async def test_a_refusal_of_one_message_ends_the_run_with_the_refusal() -> None:
    stream = Stream(bound=0)
    sent = await send(list(range(5)), stream.publish, PublishWindow(4))
    assert sent.acked == 0 and isinstance(sent.error, QueueBusy)
    assert [len(part) for part in stream.parts] == [4, 2, 1]
