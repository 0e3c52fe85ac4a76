"""Leads: coalescing a person's touches into one open lead, folding leads together, and changes from outside.

Coalescing follows the inquiries' own times (`received_at`), not the order they are processed in: an
inquiry joins the contact's open lead whose first touch is within the window of it, and a touch earlier
than the lead's first one becomes the first (source channel and attribution move with it). So a stream
processed in any order, in any batches, ends in the same leads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store.db import lock_for_writing
from leadhub.store.models import EmailMessage, Inquiry, Lead, Order, OutboxEvent, Task
from leadhub.store.one_of import one_of, update_one_of
from leadhub.store.outbox import outbox_event
from leadhub.store.policy import IdentityPolicy

if TYPE_CHECKING:
    from leadhub.store.intake import Batch, InquiryRow

lead_t = Lead.__table__
inquiry_t = Inquiry.__table__
order_t = Order.__table__
task_t = Task.__table__
email_t = EmailMessage.__table__
outbox_t = OutboxEvent.__table__

LEAD_STATUSES = ("new", "in_progress", "won", "lost", "closed")
OPEN_STATUSES = ("new", "in_progress")
# Columns that follow the first touch: the lead's source and its first-touch attribution.
FIRST_TOUCH_COLUMNS = ("first_touch_at", "channel", "connector", "attribution", "title", "message")
# Rows that point at a lead and move with it when it is folded into another.
LEAD_LINKS = (("inquiry", inquiry_t, "id"), ("shop_order", order_t, "id"), ("task", task_t, "id"))


def aware(value: datetime | None) -> datetime | None:
    """SQLite gives naive UTC, PostgreSQL aware: compare them as aware."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(slots=True)
class OpenLead:
    """An open lead as coalescing sees it; `values` is the pending insert for a lead opened in this batch."""

    id: str
    contact_id: str
    channel: str
    first_touch_at: datetime
    last_touch_at: datetime
    values: dict[str, Any] | None = None
    tags: list[str] = field(default_factory=list)


async def load_open_leads(
    conn: AsyncConnection, contact_ids: Iterable[str], rows: Sequence[InquiryRow], policy: IdentityPolicy
) -> dict[str, list[OpenLead]]:
    """The open leads of `contact_ids` whose first touch is near enough to some row's time to be joined."""
    ids = sorted(set(contact_ids))
    times = [r.received_at for r in rows]
    widest = policy.widest_window
    if not ids or not times or not widest:
        return {}
    query = select(
        lead_t.c.id,
        lead_t.c.contact_id,
        lead_t.c.channel,
        lead_t.c.first_touch_at,
        lead_t.c.last_touch_at,
        lead_t.c.tags,
    ).where(
        one_of(conn, lead_t.c.contact_id, ids),
        lead_t.c.status.in_(OPEN_STATUSES),
        lead_t.c.merged_into.is_(None),
        lead_t.c.first_touch_at > min(times) - widest,
        lead_t.c.first_touch_at < max(times) + widest,
    )
    found: dict[str, list[OpenLead]] = {}
    for lead_id, contact_id, channel, first_at, last_at, tags in await conn.execute(query):
        first = aware(first_at)
        lead = OpenLead(lead_id, contact_id, channel, first, aware(last_at) or first, tags=list(tags or []))
        found.setdefault(contact_id, []).append(lead)
    return found


def nearest_open_lead(
    candidates: Iterable[OpenLead], channel: str, at: datetime, policy: IdentityPolicy
) -> OpenLead | None:
    """The open lead whose first touch is nearest to `at` within its channel pair's window (ties: the earlier)."""
    best: OpenLead | None = None
    for lead in candidates:
        distance = abs(at - lead.first_touch_at)
        if distance >= policy.window(lead.channel, channel):
            continue
        if best is None or (distance, lead.first_touch_at, lead.id) < (
            abs(at - best.first_touch_at),
            best.first_touch_at,
            best.id,
        ):
            best = lead
    return best


def touch(lead: OpenLead, row: InquiryRow, batch: Batch) -> None:
    """Record `row` as a touch of `lead`; an earlier touch than the first becomes the lead's source.

    The row's tags are added to the lead's: a missed call from a customer whose form lead is open joins that lead
    and still asks for a callback (`lead.tags_changed`, as a tag change through the API).
    """
    at = row.received_at
    changes: dict[str, Any] = {}
    if at < lead.first_touch_at:
        lead.first_touch_at = at
        lead.channel = row.channel
        changes = {
            "first_touch_at": at,
            "channel": row.channel,
            "connector": row.connector,
            "attribution": row.attribution,
            "title": (row.title or "").replace("\x00", "")[:300] or None,
            "message": row.message.replace("\x00", "") if row.message else None,
        }
    if at > lead.last_touch_at:
        lead.last_touch_at = at
        changes["last_touch_at"] = at
    added = [tag for tag in dict.fromkeys(row.tags) if tag not in lead.tags]
    if added:
        changes["tags"] = _add_tags(lead, added, row, batch)
    if not changes:
        return
    if lead.values is not None:
        lead.values.update(changes)
    else:
        batch.lead_updates.setdefault(lead.id, {}).update(changes, updated_at=batch.now)


def _add_tags(lead: OpenLead, added: list[str], row: InquiryRow, batch: Batch) -> list[str]:
    """The lead's tags with `added`, and the events the API emits for such a change; a new list, not the old one
    changed in place (the lead's `lead.created` event and pending insert may hold it)."""
    before, lead.tags = lead.tags, [*lead.tags, *added]
    base = {"lead_id": lead.id, "contact_id": lead.contact_id, "inquiry_id": row.id}
    batch.event("lead.updated", lead.id, **base, changes=["tags"], source="inquiry")
    batch.event("lead.tags_changed", lead.id, **base, **{"from": before, "to": lead.tags})
    return lead.tags


def touch_by_id(lead_id: str, row: InquiryRow, batch: Batch) -> None:
    """A row attached to a known lead (a reply in its thread, an update of its order) is a touch of it too."""
    lead = next((lead for leads in batch.open_leads.values() for lead in leads if lead.id == lead_id), None)
    if lead is not None:
        touch(lead, row, batch)
    else:
        batch.remote_touches.append((lead_id, row))


async def write_lead_updates(conn: AsyncConnection, batch: Batch) -> None:
    """One executemany per shape of change (last touch only, or a new first touch), not one statement per lead."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for lead_id, values in batch.lead_updates.items():
        shapes.setdefault(tuple(sorted(values)), []).append({"lead_id_": lead_id, **values})
    for columns, rows in shapes.items():
        statement = update(lead_t).where(lead_t.c.id == bindparam("lead_id_"))
        await conn.execute(statement.values({c: bindparam(c) for c in columns}), rows)
    batch.lead_updates.clear()
    for lead_id, row in batch.remote_touches:  # leads this batch did not load: compare in the database
        at = row.received_at
        await conn.execute(
            update(lead_t)
            .where(lead_t.c.id == lead_id, lead_t.c.first_touch_at > at)
            .values(
                first_touch_at=at,
                channel=row.channel,
                connector=row.connector,
                attribution=row.attribution,
                updated_at=batch.now,
            )
        )
        await conn.execute(
            update(lead_t).where(lead_t.c.id == lead_id, lead_t.c.last_touch_at < at).values(last_touch_at=at)
        )
    batch.remote_touches.clear()


async def fold_open_leads(
    conn: AsyncConnection, contact_id: str, policy: IdentityPolicy, now: datetime, journal: dict[str, Any]
) -> list[dict[str, Any]]:
    """Fold the contact's open leads that are one episode (within the window of the earliest) into the earliest.

    Called after a contact merge: two strangers' leads that turn out to be one person's request become
    one lead. Every move is written to `journal` (the merge's) so an unmerge can take it back.
    Returns the events to emit.
    """
    rows = (
        (
            await conn.execute(
                select(lead_t)
                .where(
                    lead_t.c.contact_id == contact_id,
                    lead_t.c.status.in_(OPEN_STATUSES),
                    lead_t.c.merged_into.is_(None),
                )
                .order_by(lead_t.c.first_touch_at, lead_t.c.id)
            )
        )
        .mappings()
        .all()
    )
    events: list[dict[str, Any]] = []
    heads: deque[dict[str, Any]] = deque()  # by first touch, as the rows come
    for row in rows:
        first = aware(row["first_touch_at"]) or aware(row["created_at"])
        while heads and first - aware(heads[0]["first_touch_at"]) >= policy.widest_window:  # type: ignore[operator]
            heads.popleft()  # no later lead is near enough to it: years of open leads made this loop quadratic
        head = next(
            (
                h
                for h in heads
                if first - aware(h["first_touch_at"]) < policy.window(h["channel"], row["channel"])  # type: ignore[operator]
            ),
            None,
        )
        if head is None:
            heads.append(dict(row))
            continue
        events.extend(await _fold(conn, dict(row), head, now, journal))
    return events


def _carried_over(lead: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    """What the folded lead's manager work adds to the head: its tags, its owner when the head has none, and
    `in_progress` when either was being worked on. A lead a manager took must not drop back to `new` unowned
    because a stranger's earlier lead turned out to be the same person's."""
    changes: dict[str, Any] = {}
    tags = [*head["tags"], *(t for t in lead["tags"] if t not in head["tags"])]
    if tags != head["tags"]:
        changes["tags"] = tags
    if not head["owner"] and lead["owner"]:
        changes["owner"] = lead["owner"]
    if head["status"] == "new" and lead["status"] == "in_progress":
        changes["status"] = "in_progress"
    return changes


async def _fold(
    conn: AsyncConnection, lead: dict[str, Any], head: dict[str, Any], now: datetime, journal: dict[str, Any]
) -> list[dict[str, Any]]:
    moved: dict[str, Any] = {"lead": lead["id"], "into": head["id"]}
    for name, table, key in LEAD_LINKS:
        ids = list((await conn.execute(select(table.c[key]).where(table.c.lead_id == lead["id"]))).scalars())
        await update_one_of(conn, table, table.c[key], ids, {"lead_id": head["id"]})
        moved[name] = ids
    mids = list((await conn.execute(select(email_t.c.message_id).where(email_t.c.lead_id == lead["id"]))).scalars())
    await update_one_of(conn, email_t, email_t.c.message_id, mids, {"lead_id": head["id"]})
    moved["email_message"] = mids
    before = journal["before"].setdefault("lead", {})
    before.setdefault(lead["id"], {"merged_into": None, "updated_at": lead["updated_at"]})
    await conn.execute(update(lead_t).where(lead_t.c.id == lead["id"]).values(merged_into=head["id"], updated_at=now))
    changes = _carried_over(lead, head)
    last = max(aware(head["last_touch_at"]) or now, aware(lead["last_touch_at"]) or now)
    if last != aware(head["last_touch_at"]):
        changes["last_touch_at"] = last
    if changes:
        kept = before.setdefault(head["id"], {"updated_at": head["updated_at"]})
        for name in changes:
            kept.setdefault(name, head[name])
        old = {name: head[name] for name in changes}
        head.update(changes)
        await conn.execute(update(lead_t).where(lead_t.c.id == head["id"]).values(**changes, updated_at=now))
    journal["moved"].setdefault("lead_folds", []).append(moved)
    base = {"lead_id": head["id"], "contact_id": head["contact_id"]}
    events = [outbox_event("lead.merged", head["id"], now, **base, merged_id=lead["id"])]
    worked = sorted(set(changes) - {"last_touch_at"})
    if worked:
        events.append(outbox_event("lead.updated", head["id"], now, **base, changes=worked, source="merge"))
        for name, kind in (
            ("status", "lead.status_changed"),
            ("owner", "lead.owner_changed"),
            ("tags", "lead.tags_changed"),
        ):
            if name in changes:
                events.append(outbox_event(kind, head["id"], now, **base, **{"from": old[name], "to": changes[name]}))
    return events


async def unfold(conn: AsyncConnection, folds: Sequence[dict[str, Any]]) -> None:
    """Take back `fold_open_leads` moves, newest first (the lead columns are restored by the caller)."""
    for moved in reversed(folds):
        back = {"lead_id": moved["lead"]}
        for name, table, key in LEAD_LINKS:
            await update_one_of(conn, table, table.c[key], moved.get(name) or [], back)
        await update_one_of(conn, email_t, email_t.c.message_id, moved.get("email_message") or [], back)


class LeadChangeError(ValueError):
    """A change the API refuses: an unknown status, a lead folded into another, ..."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


async def change_lead(
    conn: AsyncConnection, lead_id: str, changes: dict[str, Any], now: datetime, *, source: str = "api"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set status, owner and/or tags (from the API, or a rule's `update_lead`); emits `lead.*` events.

    Returns (the lead after, {field: [before, after]} of what changed). Events: `lead.updated` with the
    changes, and `lead.status_changed` / `lead.owner_changed` / `lead.tags_changed` for each kind.
    """
    await lock_for_writing(conn)
    query = select(lead_t).where(lead_t.c.id == lead_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).mappings().first()
    if row is None:
        raise LeadChangeError(404, "not_found", "no lead with that id")
    lead = dict(row)
    if lead["merged_into"]:
        raise LeadChangeError(
            409, "lead_merged", f"lead {lead_id} was merged into {lead['merged_into']}; change that lead instead"
        )
    diff = {name: [lead[name], value] for name, value in changes.items() if lead[name] != value}
    if not diff:
        return lead, {}
    await conn.execute(
        update(lead_t).where(lead_t.c.id == lead_id).values(**{k: v[1] for k, v in diff.items()}, updated_at=now)
    )
    lead.update({k: v[1] for k, v in diff.items()}, updated_at=now)
    base = {"lead_id": lead_id, "contact_id": lead["contact_id"]}
    events = [outbox_event("lead.updated", lead_id, now, **base, changes=sorted(diff), source=source)]
    for name, kind in (
        ("status", "lead.status_changed"),
        ("owner", "lead.owner_changed"),
        ("tags", "lead.tags_changed"),
    ):
        if name in diff:
            events.append(outbox_event(kind, lead_id, now, **base, **{"from": diff[name][0], "to": diff[name][1]}))
    await conn.execute(outbox_t.insert(), events)
    return lead, diff
