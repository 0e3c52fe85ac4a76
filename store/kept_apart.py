"""A person's keep-apart decisions: which contacts are not one person, remembered two by two and read through merges.

A decision is stored for every two contacts a review named, by their ids (both directions). It is about the people,
so it is read through the merges made before or since: a contact stands for everyone merged into it, and a merged
contact for the one it was merged into and all merged into that. An unmerge needs nothing undone here: the contact
that comes back is again itself only, and the pairs naming it hold for it as before the merge.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store.models import Contact, ContactApart
from leadhub.store.one_of import one_of
from leadhub.store.triggers import insert_ignore

contact_t = Contact.__table__
apart_t = ContactApart.__table__
Pair = frozenset[str]


async def keep_apart(conn: AsyncConnection, contact_ids: Sequence[str], now: datetime) -> None:
    """Remember that these contacts are not one person, every two of them; two merged into one since the review named
    them are one person, and nobody decided otherwise."""
    person = await persons(conn, contact_ids)
    pairs = [(a, b) for a, b in itertools.permutations(dict.fromkeys(contact_ids), 2) if b not in person[a]]
    await insert_ignore(conn, apart_t, [{"contact_id": a, "other_id": b, "decided_at": now} for a, b in pairs])


async def persons(conn: AsyncConnection, contact_ids: Iterable[str]) -> dict[str, set[str]]:
    """Each contact with every contact that is the same person now: the one it was merged into (if it was) and every
    contact merged into that. There are no chains: a merge points the contacts merged into the merged one at the
    survivor (store/identity.py `merge`)."""
    ids = sorted(set(contact_ids))
    if not ids:
        return {}
    rows = await conn.execute(select(contact_t.c.id, contact_t.c.merged_into).where(one_of(conn, contact_t.c.id, ids)))
    root = {c: c for c in ids} | {contact_id: into for contact_id, into in rows if into}
    members: dict[str, set[str]] = {r: {r} for r in root.values()}
    rows = await conn.execute(
        select(contact_t.c.id, contact_t.c.merged_into).where(one_of(conn, contact_t.c.merged_into, sorted(members)))
    )
    for contact_id, into in rows:
        members[into].add(contact_id)
    return {c: members[root[c]] for c in ids}


async def decided(conn: AsyncConnection, groups: Mapping[str, Iterable[str]]) -> set[Pair]:
    """The pairs of keys a person kept apart: some contact of one key's group and some of the other's were decided not
    one person. A group is the contacts known to be that key's person (a batch's unions); each is read through its
    merges too. Two keys that are one person now are never a pair (a merge by hand overrules an older keep-apart)."""
    person = await persons(conn, {c for group in groups.values() for c in group})
    members = {key: {m for c in group for m in person[c]} for key, group in groups.items()}
    keys_of: dict[str, list[str]] = {}
    for key, group in members.items():
        for m in group:
            keys_of.setdefault(m, []).append(key)
    if len(members) < 2:
        return set()
    everyone = sorted(keys_of)
    rows = await conn.execute(
        select(apart_t.c.contact_id, apart_t.c.other_id).where(
            one_of(conn, apart_t.c.contact_id, everyone), one_of(conn, apart_t.c.other_id, everyone)
        )
    )
    return {
        frozenset((mine, theirs))
        for a, b in rows
        for mine in keys_of[a]
        for theirs in keys_of[b]
        if not members[mine] & members[theirs]
    }


def undecided(contact_id: str, others: Iterable[str], pairs: set[Pair]) -> list[str]:
    """The others nobody decided about with `contact_id`."""
    return [o for o in others if o != contact_id and frozenset((contact_id, o)) not in pairs]


async def narrow_reviews(
    conn: AsyncConnection, contact_ids: Sequence[str], now: datetime
) -> dict[str, dict[str, Any] | None]:
    """Take out of these contacts' reviews every contact a person kept apart from them, and every contact that is one
    person with them now (merged since); a review left naming nobody is cleared. Returns each reviewed contact's
    review as it stands now (None: cleared); the contacts not flagged are left out.

    A review is the latest refused merge about the contact: another one may name contacts this decision did not, and
    those stay listed.
    """
    rows = await conn.execute(select(contact_t.c.id, contact_t.c.review).where(contact_t.c.id.in_(contact_ids)))
    reviews = {contact_id: review for contact_id, review in rows if review is not None}  # JSON null reads as None
    standing: dict[str, dict[str, Any] | None] = {}
    for contact_id, review in sorted(reviews.items()):
        others = review.get("with", [])
        pairs = await decided(conn, {c: [c] for c in [contact_id, *others]})
        same = (await persons(conn, [contact_id]))[contact_id]  # merged since: nothing left to decide about them
        left = [o for o in undecided(contact_id, others, pairs) if o not in same]
        narrowed = None if not left else review | {"with": left, "consent": _consent_of(review, [contact_id, *left])}
        if left != others:
            await conn.execute(
                update(contact_t).where(contact_t.c.id == contact_id).values(review=narrowed, updated_at=now)
            )
        standing[contact_id] = narrowed if left != others else review
    return standing


def _consent_of(review: dict[str, Any], contact_ids: list[str]) -> dict[str, Any]:
    consent = review.get("consent") or {}
    return {c: consent[c] for c in contact_ids if c in consent}
