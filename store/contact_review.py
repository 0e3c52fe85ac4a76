"""What a person decides about contacts the identity rules would not merge on their own (a consent conflict
flags them for review, store/identity.py): merge them by hand, or keep them apart.

A merge by hand is a merge like any other (journalled; `unmerge` takes it back) that also clears the review
flags; an opt-out still wins. Keeping them apart is remembered for every two of the contact and those its review
names, and read through merges and unmerges (store/kept_apart.py): a later inquiry naming any of them goes to one
of them without flagging them again. It takes them out of each other's reviews and clears a review left naming
nobody.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store import identity, kept_apart
from leadhub.store.db import lock_for_writing
from leadhub.store.policy import IdentityPolicy

contact_t = identity.contact_t


class ReviewError(LookupError):
    """The decision cannot be applied; `missing` when a contact does not exist (else: the contacts' state)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


async def merge_by_hand(
    conn: AsyncConnection, merged_id: str, survivor_id: str, now: datetime, policy: IdentityPolicy
) -> dict[str, Any]:
    """Merge `merged_id` into `survivor_id`; returns `{"merge_id", "survivor_id", "merged_id"}`."""
    if merged_id == survivor_id:
        raise ReviewError("a contact cannot be merged into itself")
    contacts = await _locked(conn, [merged_id, survivor_id])
    if missing := [c for c in (merged_id, survivor_id) if c not in contacts]:
        raise ReviewError(f"no contact {', '.join(missing)}", missing=True)
    for contact_id in (merged_id, survivor_id):
        if into := contacts[contact_id]["merged_into"]:
            raise ReviewError(f"contact {contact_id} was merged into {into} already; name that one")
    events = await identity.merge(
        conn, survivor_id=survivor_id, merged_id=merged_id, inquiry_id=None, now=now, policy=policy, by_hand=True
    )
    await conn.execute(identity.outbox_t.insert(), events)
    merge_id = next(e for e in events if e["type"] == "contact.merged")["data"]["merge_id"]
    return {"merge_id": merge_id, "survivor_id": survivor_id, "merged_id": merged_id}


async def keep_apart(conn: AsyncConnection, contact_id: str, now: datetime) -> list[str]:
    """Remember that `contact_id` and the contacts its review names are not one person, every two of them, and take
    them out of each other's reviews; the ids whose review flag that cleared (a review naming someone else as well
    stays, naming them)."""
    contacts = await _locked(conn, [contact_id])
    if contact_id not in contacts:
        raise ReviewError(f"no contact {contact_id}", missing=True)
    review = contacts[contact_id]["review"]
    if review is None:  # JSON null reads as None
        raise ReviewError(f"contact {contact_id} is not flagged for review")
    flagged = list(dict.fromkeys([contact_id, *review.get("with", [])]))
    await kept_apart.keep_apart(conn, flagged, now)
    standing = await kept_apart.narrow_reviews(conn, flagged, now)
    cleared = sorted(c for c, left in standing.items() if left is None)
    if cleared:  # an event per contact, as `contact.review_needed` was
        decided = [identity.review_cleared(c, "kept_apart", sorted(set(cleared) - {c}), now) for c in cleared]
        await conn.execute(identity.outbox_t.insert(), decided)
    return cleared


async def _locked(conn: AsyncConnection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The contacts, locked against a concurrent merge (SQLite: the write lock; PostgreSQL: their rows)."""
    await lock_for_writing(conn)
    query = select(contact_t).where(contact_t.c.id.in_(ids)).order_by(contact_t.c.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {row["id"]: dict(row) for row in (await conn.execute(query)).mappings()}
