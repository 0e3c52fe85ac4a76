"""What templates and webhooks make of the context's values: records, dates and amounts as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from leadhub.triggers.actions.webhook import BoundWebhook
from leadhub.triggers.context import build_context
from leadhub.triggers.matcher import _context_event
from leadhub.triggers.sandbox import Scope, Templates

PUBLISHED = {
    "id": "e1",
    "type": "order.paid",
    "subject_id": "o1",
    "occurred_at": "2026-03-01T10:00:00.250000+00:00",  # as the outbox relay writes it
    "data": {"order_id": "o1", "total": "99.00"},
}
PLACED = datetime(2026, 2, 28, 23, 30, tzinfo=UTC)


def _context() -> dict:
    order = {"id": "o1", "total": "99.00", "placed_at": PLACED, "items": [{"price": "99.00"}]}
    return build_context(_context_event(PUBLISHED), {"order": order}, datetime(2026, 3, 1, tzinfo=UTC))


def test_a_webhooks_default_body_is_the_event_as_published() -> None:
    """`occurred_at` went out as `2026-03-01 10:00:00.250000+00:00` (Python's str, not ISO 8601's `T`), unlike the
    event on the queue and the docs; a receiver parsing ISO 8601 strictly refused it."""
    webhook = BoundWebhook(spec=None, url=Templates().url("https://crm.example/h", Scope(("event",))), body=None)  # type: ignore[arg-type]
    body = webhook.render(_context(), env=None)["body"]  # type: ignore[arg-type]
    assert json.loads(json.dumps(body, default=str)) == {"event": PUBLISHED}


def test_tojson_takes_records_dates_and_amounts() -> None:
    """`{{ order | tojson }}` raised TypeError (a record, a datetime are not JSON): the action failed."""
    scope = Scope(("event", "order"))
    out = Templates().inline("{{ {'order': order, 'at': order.placed_at} | tojson }}", scope).render(**_context())
    data = json.loads(out)
    assert data["at"] == "2026-02-28T23:30:00+00:00"
    assert data["order"]["total"] == "99.00" and data["order"]["items"] == [{"price": "99.00"}]
