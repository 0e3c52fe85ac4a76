"""The EVENTS message the relay writes by hand: the same bytes as the `json.dumps` head it replaced."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from leadhub.pipelines.outbox_relay import event_message
from leadhub.store.db import json_dumps

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    event_id=st.text(min_size=1),
    event_type=st.text(min_size=1),
    subject_id=st.none() | st.text(),
    created=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    offset_minutes=st.none() | st.integers(-720, 720),
    data=st.dictionaries(st.text(), JSON, max_size=4),
)
def test_event_message_is_the_json_of_the_event(  # noqa: PLR0917
    event_id: str,
    event_type: str,
    subject_id: str | None,
    created: datetime,
    offset_minutes: int | None,
    data: dict,
) -> None:
    if offset_minutes is not None:  # a stored time with its zone; SQLite gives it back naive, meaning UTC
        created = created.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    data_json = json_dumps(data)
    subject, body, headers = event_message((event_id, event_type, subject_id, data_json, created))
    occurred = created if created.tzinfo else created.replace(tzinfo=UTC)
    head = {"id": event_id, "type": event_type, "subject_id": subject_id, "occurred_at": occurred.isoformat()}
    # What the relay wrote before: the head through json.dumps, the stored data JSON spliced in.
    assert body == f'{json.dumps(head, separators=(",", ":"))[:-1]},"data":{data_json}}}'.encode()
    assert json.loads(body) == {**head, "data": json.loads(data_json)}
    assert subject == f"events.{event_type}"
    assert headers == {"Nats-Msg-Id": event_id, "Leadhub-Event-Type": event_type}


def test_the_same_instant_in_other_zones_is_written_in_each_zone() -> None:
    """Times are formatted once and remembered; equal instants in other zones still keep their own offset."""
    naive = datetime(2026, 12, 3, 12, 0, 0, 250000)
    zoned = [naive, naive.replace(tzinfo=UTC), naive.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=3)))]
    for _ in range(2):  # the second pass is answered from what the first remembered
        written = [json.loads(event_message(("e", "t", None, "{}", when))[1])["occurred_at"] for when in zoned]
        assert written == [
            "2026-12-03T12:00:00.250000+00:00",
            "2026-12-03T12:00:00.250000+00:00",
            "2026-12-03T15:00:00.250000+03:00",
        ]
