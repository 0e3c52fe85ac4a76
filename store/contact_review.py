"""What a person decides about contacts the identity rules would not merge on their own (a consent conflict
flags them for review, store/identity.py): merge them by hand, or keep them apart.

A merge by hand is a merge like any other (journalled; `unmerge` takes it back) that also clears the review
flags; an opt-out still wins. Keeping them apart clears the flags of the contact and of those its review names,
and is remembered: a later inquiry naming the same contacts goes to one of them without flagging them again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store import identity
from leadhub.store.db import lock_for_writing
from leadhub.store.policy import IdentityPolicy
from leadhub.store.queries import flagged_for_review

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
    """Clear the review flag of `contact_id` and of the contacts its review names, and remember the decision;
    the ids cleared."""
    contacts = await _locked(conn, [contact_id])
    if contact_id not in contacts:
        raise ReviewError(f"no contact {contact_id}", missing=True)
    review = contacts[contact_id]["review"]
    if review is None:  # JSON null reads as None
        raise ReviewError(f"contact {contact_id} is not flagged for review")
    flagged = [contact_id, *review.get("with", [])]
    await identity.keep_apart(conn, await _as_they_stand(conn, flagged), now)
    cleared = list(
        (
            await conn.execute(
                update(contact_t)
                .where(contact_t.c.id.in_(flagged), flagged_for_review())
                .values(review=None, updated_at=now)
                .returning(contact_t.c.id)
            )
        ).scalars()
    )
    if cleared:  # an event per contact, as `contact.review_needed` was
        decided = [identity.review_cleared(c, "kept_apart", sorted(set(cleared) - {c}), now) for c in sorted(cleared)]
        await conn.execute(identity.outbox_t.insert(), decided)
    return sorted(cleared)


async def _as_they_stand(conn: AsyncConnection, ids: list[str]) -> list[str]:
    """Each contact, or the one it was merged into since the review named it: the decision is about the people, and
    an inquiry names the one a merged contact became (remembering the merged one flagged them again)."""
    rows = await conn.execute(select(contact_t.c.id, contact_t.c.merged_into).where(contact_t.c.id.in_(ids)))
    into = {contact_id: merged_into for contact_id, merged_into in rows if merged_into}
    return list(dict.fromkeys(into.get(c, c) for c in ids))


async def _locked(conn: AsyncConnection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The contacts, locked against a concurrent merge (SQLite: the write lock; PostgreSQL: their rows)."""
    await lock_for_writing(conn)
    query = select(contact_t).where(contact_t.c.id.in_(ids)).order_by(contact_t.c.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {row["id"]: dict(row) for row in (await conn.execute(query)).mappings()}
