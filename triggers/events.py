"""The event catalogue: which event types rules may listen to, and which objects and fields each one offers."""

from __future__ import annotations

from typing import Any

from leadhub.store.models import Contact, Inquiry, Lead, Order

ORDER_OBJECTS = ("order", "contact", "lead", "inquiry")

# Event type -> the objects its conditions and templates see (besides `event` and `now`).
EVENT_OBJECTS: dict[str, tuple[str, ...]] = {
    "contact.created": ("contact",),
    "contact.merged": ("contact",),
    "contact.unmerged": ("contact",),
    "contact.review_needed": ("contact",),
    "contact.review_cleared": ("contact",),
    "inquiry.received": ("inquiry", "contact", "lead"),
    "lead.created": ("lead", "contact", "inquiry"),
    "lead.updated": ("lead", "contact"),
    "lead.status_changed": ("lead", "contact"),
    "lead.owner_changed": ("lead", "contact"),
    "lead.tags_changed": ("lead", "contact"),
    "lead.merged": ("lead", "contact"),
    "order.created": ORDER_OBJECTS,
    "order.status_changed": ORDER_OBJECTS,
    "order.paid": ORDER_OBJECTS,
    "order.fulfilled": ORDER_OBJECTS,
    "order.completed": ORDER_OBJECTS,
    "order.cancelled": ORDER_OBJECTS,
    "order.refunded": ORDER_OBJECTS,
    "feedback.received": ("feedback", "order", "contact", "lead"),
    "task.created": ("task", "lead", "contact"),
    "task.status_changed": ("task", "lead", "contact"),
}
SCHEDULE_OBJECTS: tuple[str, ...] = ()


def _columns(model: type, *, drop: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> frozenset[str]:
    return frozenset(c.name for c in model.__table__.columns if c.name not in drop) | frozenset(add)  # type: ignore[attr-defined]


FEEDBACK_FIELDS = frozenset({"id", "order_id", "contact_id", "lead_id", "score", "comment", "created_at"})
TASK_FIELDS = frozenset(
    {"id", "title", "note", "due_at", "assignee", "lead_id", "contact_id", "rule_id", "status", "created_at"}
)

# Object -> its fields, as conditions and templates see them (the columns, plus derived ones).
OBJECT_FIELDS: dict[str, frozenset[str]] = {
    "contact": _columns(Contact, add=("unsubscribed", "orders_count", "last_order_at", "phone_digits")),
    "lead": _columns(Lead),
    "inquiry": _columns(Inquiry, drop=("payload",)),
    "order": _columns(Order),
    "feedback": FEEDBACK_FIELDS,
    "task": TASK_FIELDS,
    "event": frozenset({"id", "type", "subject_id", "occurred_at", "data"}),
}
# Money amounts, stored as exact text (`"403.00"`), that rules see as numbers (triggers/context.py `Amount`).
AMOUNT_FIELDS: dict[str, tuple[str, ...]] = {"order": ("total",)}
ITEM_AMOUNTS = ("price", "total")  # of each of `order.items`
EVENT_AMOUNTS: dict[str, tuple[str, ...]] = {
    kind: ("total",) for kind, objects in EVENT_OBJECTS.items() if objects is ORDER_OBJECTS
}
# Date fields a `wait:` may be anchored to.
DATE_FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(f for f in fields if f.endswith("_at")) for name, fields in OBJECT_FIELDS.items()
}


def event_objects(event: dict[str, Any]) -> tuple[str, ...]:
    """The objects to load for a stored event; a schedule tick for one contact (`for_each`) has that contact."""
    if event.get("type") == "schedule":
        return ("contact",) if (event.get("data") or {}).get("contact_id") else ()
    return EVENT_OBJECTS.get(event.get("type", ""), ())


def objects_for(event_types: list[str] | None) -> tuple[str, ...]:
    """The objects every one of `event_types` offers (a rule listening to several sees what they share)."""
    if event_types is None:
        return ("event", *SCHEDULE_OBJECTS)
    common: set[str] | None = None
    for kind in event_types:
        offered = set(EVENT_OBJECTS.get(kind, ()))
        common = offered if common is None else common & offered
    order = [name for name in OBJECT_FIELDS if name in (common or set())]
    return ("event", *order)
