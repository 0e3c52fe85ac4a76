"""Identity resolution: one person, one contact, however many ways they reach in; merges that can be taken back.

An inquiry's identifiers (email, phone, messenger id, shop customer id) are matched exactly. When one
inquiry names several contacts they are one person: inside the intake transaction the batch unites them
(`Unions`), and after the batch's rows are written `apply_merges` merges each group into its oldest
contact, writing a journal of every row it moved. `unmerge` reads the journal and puts every row back; it takes
back the merge, not what came after it: columns changed since keep their value, an opt-out received since ends
on both contacts, and rows recorded since stay with the survivor unless their lead goes back (store/merge_journal.py).

Two contacts whose consent disagrees (one unsubscribed or withdrew consent, the other granted it) are
never merged automatically: both are flagged for review instead, visible in the API, until a person merges them
by hand or keeps them apart (store/contact_review.py). Contacts a person kept apart are neither merged nor flagged
about each other again, whatever merges came before or since (store/kept_apart.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.ids import new_id
from leadhub.store import kept_apart, leads, merge_journal
from leadhub.store.db import lock_for_writing
from leadhub.store.models import (
    Contact,
    ContactIdentifier,
    ContactMerge,
    EmailSuppression,
    Feedback,
    Inquiry,
    Lead,
    Order,
    OutboxEvent,
    Task,
)
from leadhub.store.one_of import one_of, update_one_of
from leadhub.store.outbox import outbox_event
from leadhub.store.policy import IdentityPolicy
from leadhub.store.suppression_keys import lookup_keys

if TYPE_CHECKING:
    from leadhub.store.intake import Batch

contact_t = Contact.__table__
identifier_t = ContactIdentifier.__table__
merge_t = ContactMerge.__table__
suppression_t = EmailSuppression.__table__
lead_t = Lead.__table__
outbox_t = OutboxEvent.__table__

# Rows that belong to a contact by `contact_id` and move with it in a merge: (journal name, table, key).
CONTACT_LINKS = (
    ("lead", lead_t, "id"),
    ("inquiry", Inquiry.__table__, "id"),
    ("shop_order", Order.__table__, "id"),
    ("task", Task.__table__, "id"),
    ("feedback", Feedback.__table__, "id"),
)
# Contact columns a survivor takes from the merged contact when it has none of its own.
FILLED = ("name", "email", "phone", "company", "consent")
OPTED_OUT = ("unsubscribe", "complaint")


async def known_identifiers(conn: AsyncConnection, idents: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The contact each known identifier belongs to (the contact it was merged into, if it was).

    On PostgreSQL the contacts are locked (first in id order, so two batches rarely deadlock on them): a
    concurrent batch about the same person waits for this one and then sees its leads and merges, so
    two workers never open two leads for one request or link a row to a contact merged meanwhile.
    """
    if not idents:
        return {}
    by_kind: dict[str, list[str]] = {}
    for kind, value in idents:
        by_kind.setdefault(kind, []).append(value)
    clauses = [
        and_(identifier_t.c.kind == kind, one_of(conn, identifier_t.c.value, values))
        for kind, values in by_kind.items()
    ]
    query = (
        select(identifier_t.c.kind, identifier_t.c.value, contact_t.c.id, contact_t.c.merged_into)
        .join(contact_t, contact_t.c.id == identifier_t.c.contact_id)
        .where(or_(*clauses))
    )
    if conn.dialect.name == "postgresql":
        return await _locked_owners(conn, query)
    return {
        (kind, value): merged_into or contact_id for kind, value, contact_id, merged_into in await conn.execute(query)
    }


async def _locked_owners(conn: AsyncConnection, query: Any) -> dict[tuple[str, str], str]:
    """Lock the contacts the identifiers name, then read again until every contact the identifiers name is locked.

    A lock that was waited for is released by a commit that may have moved identifiers (an unmerge gives the
    phone back to its contact) or merged the contact into one this batch has not locked; the rows read before
    the wait then name the wrong contact. Each read after the locks is a new snapshot (READ COMMITTED) that sees
    those commits. Usually one locking read and one plain read; later locks are out of id order, and a deadlock
    that makes is ended by PostgreSQL and the batch retried like any lost race.
    """
    locking = query.order_by(contact_t.c.id).with_for_update(of=contact_t)
    locked = {contact_id for _, _, contact_id, _ in await conn.execute(locking)}
    while True:
        rows = (await conn.execute(query)).all()
        named = {c for _, _, contact_id, merged_into in rows for c in (contact_id, merged_into) if c}
        if named <= locked:
            return {(kind, value): merged_into or contact_id for kind, value, contact_id, merged_into in rows}
        await conn.execute(
            select(contact_t.c.id)
            .where(contact_t.c.id.in_(sorted(named - locked)))
            .order_by(contact_t.c.id)
            .with_for_update()
        )
        locked |= named


@dataclass(slots=True)
class Unions:
    """Contacts found to be one person within a batch (union-find), with the inquiry that showed it."""

    parent: dict[str, str] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)  # contact -> inquiry id that joined it to its group
    # root -> every contact of its group: every row asks, and walking every union for each answer made a batch of
    # 5,000 rows naming two contacts each take 17 s.
    members: dict[str, list[str]] = field(default_factory=dict)

    def find(self, contact_id: str) -> str:
        root = contact_id
        while (up := self.parent.get(root, root)) != root:
            root = up
        while contact_id != root:  # path compression
            self.parent[contact_id], contact_id = root, self.parent.get(contact_id, root)
        return root

    def unite(self, contact_ids: Sequence[str], inquiry_id: str) -> str:
        root = self.find(contact_ids[0])
        for other in contact_ids[1:]:
            other_root = self.find(other)
            if other_root != root:
                self.parent[other_root] = root
                self.evidence.setdefault(other_root, inquiry_id)
                mine, theirs = self.members.pop(root, [root]), self.members.pop(other_root, [other_root])
                if len(mine) < len(theirs):  # the longer list is extended: each contact is copied a few times only
                    mine, theirs = theirs, mine
                mine.extend(theirs)
                self.members[root] = mine
        return root

    def members_or_self(self, contact_id: str) -> list[str]:
        """Every contact united with `contact_id` in this batch (itself included)."""
        return list(self.members.get(self.find(contact_id), [contact_id]))

    def groups(self) -> list[list[str]]:
        grouped: dict[str, list[str]] = {}
        for contact_id in sorted({*self.parent, *self.parent.values()}):
            grouped.setdefault(self.find(contact_id), []).append(contact_id)
        return [members for members in grouped.values() if len(members) > 1]


async def consent_states(conn: AsyncConnection, contact_ids: Sequence[str], batch: Batch) -> dict[str, str | None]:
    """`granted`, `withdrawn` (consent withdrawn, or an address unsubscribed or complained) or None per contact.

    A contact this batch already united with others speaks for all of them (`withdrawn` when one withdrew,
    else `granted` when one granted): the group's root alone let a withdrawn member merge with a granted one.
    """
    members = {c: batch.unions.members_or_self(c) for c in contact_ids}
    each = await _consent_each(conn, list(dict.fromkeys(m for group in members.values() for m in group)), batch)
    return {c: _combined([each[m] for m in group]) for c, group in members.items()}


def _combined(states: Sequence[str | None]) -> str | None:
    return "withdrawn" if "withdrawn" in states else "granted" if "granted" in states else None


async def _consent_each(conn: AsyncConnection, contact_ids: Sequence[str], batch: Batch) -> dict[str, str | None]:
    """Each contact's own state, with consent this batch set but has not written yet (the latest word)."""
    pending = {c["id"]: c for c in batch.contacts}
    stored = [c for c in contact_ids if c not in pending]
    consent: dict[str, str | None] = {c: pending[c].get("consent") for c in contact_ids if c in pending}
    emails: dict[str, set[str]] = {c: set() for c in contact_ids}
    for values in batch.identifiers:
        if values["kind"] == "email" and values["contact_id"] in emails:
            emails[values["contact_id"]].add(values["value"])
    for contact_id, address in ((c["id"], c["email"]) for c in batch.contacts if c["id"] in emails and c["email"]):
        emails[contact_id].add(address)
    if stored:
        rows = await conn.execute(
            select(contact_t.c.id, contact_t.c.consent, contact_t.c.email).where(contact_t.c.id.in_(stored))
        )
        for contact_id, given, address in rows:
            consent[contact_id] = given
            if address:
                emails[contact_id].add(address)
        # By contact only (its index), the kind checked here: with `kind = 'email'` in the query SQLite
        # walks every email identifier by the primary key's first column.
        rows = await conn.execute(
            select(identifier_t.c.contact_id, identifier_t.c.kind, identifier_t.c.value).where(
                identifier_t.c.contact_id.in_(stored)
            )
        )
        for contact_id, kind, value in rows:
            if kind == "email":
                emails[contact_id].add(value)
    for contact_id in stored:
        queued = batch.contact_updates.get(contact_id, {}).get("consent")
        if queued:
            consent[contact_id] = queued
    opted_out = await _opted_out_addresses(conn, {a for group in emails.values() for a in group})
    return {
        c: "withdrawn" if consent.get(c) == "withdrawn" or emails[c] & opted_out else consent.get(c)
        for c in contact_ids
    }


async def _opted_out_addresses(conn: AsyncConnection, addresses: set[str]) -> set[str]:
    """Those of `addresses` that unsubscribed or complained, however the suppression list spells them."""
    keys = {address: lookup_keys(address) for address in addresses}
    wanted = sorted(set().union(*keys.values()))
    if not wanted:
        return set()
    query = select(suppression_t.c.address).where(
        one_of(conn, suppression_t.c.address, wanted), suppression_t.c.reason.in_(OPTED_OUT)
    )
    found = set((await conn.execute(query)).scalars())
    return {address for address, looked_for in keys.items() if looked_for & found}


async def _opted_out(conn: AsyncConnection, contacts: Sequence[dict[str, Any]]) -> bool:
    """Whether any of the contacts withdrew consent or has an address that unsubscribed or complained: the review
    counts the suppression list as an opt-out (`consent_states`), so a merge must too. Call after the merge moved
    the identifiers: the survivor's then hold every address of both."""
    if any(c["consent"] == merge_journal.WITHDRAWN for c in contacts):
        return True
    addresses = {c["email"] for c in contacts if c["email"]}
    rows = await conn.execute(
        select(identifier_t.c.value).where(
            identifier_t.c.contact_id.in_([c["id"] for c in contacts]), identifier_t.c.kind == "email"
        )
    )
    addresses.update(rows.scalars())
    return bool(await _opted_out_addresses(conn, addresses))


def conflicting(states: dict[str, str | None]) -> bool:
    given = {s for s in states.values() if s}
    return len(given) > 1


async def decided_apart(conn: AsyncConnection, contact_ids: Sequence[str], batch: Batch) -> set[kept_apart.Pair]:
    """The pairs of these contacts a person decided are not one person (`keep-apart`), counting those this batch
    united with them and those merged before: an inquiry naming two of them must not merge them, whether or not
    their consent agrees today, nor flag them for review again."""
    groups = {c: [m for m in batch.unions.members_or_self(c) if m not in batch.created] for c in contact_ids}
    if sum(1 for group in groups.values() if group) < 2:
        return set()
    return await kept_apart.decided(conn, groups)


def flag_for_review(
    batch: Batch,
    contact_ids: Sequence[str],
    states: dict[str, str | None],
    inquiry_id: str,
    decided: set[kept_apart.Pair],
) -> None:
    """Mark every contact of a refused merge with the others nobody decided about (the pairs a person kept apart are
    not asked again); the API lists them with `?review=true`."""
    for contact_id in contact_ids:
        others = kept_apart.undecided(contact_id, contact_ids, decided)
        if not others:
            continue
        batch.reviews[contact_id] = {
            "reason": "consent_conflict",
            "detail": "one inquiry names contacts whose consent disagrees; merge them by hand (POST "
            "/api/contacts/{id}/merge) or keep them apart (POST /api/contacts/{id}/keep-apart)",
            "with": others,
            "consent": {c: states[c] for c in [contact_id, *others]},
            "inquiry_id": inquiry_id,
            "at": batch.now.isoformat(),
        }


async def write_reviews(conn: AsyncConnection, batch: Batch) -> None:
    for contact_id, review in batch.reviews.items():
        await conn.execute(
            update(contact_t).where(contact_t.c.id == contact_id).values(review=review, updated_at=batch.now)
        )
        batch.event(
            "contact.review_needed",
            contact_id,
            contact_id=contact_id,
            reason=review["reason"],
            other_ids=review["with"],
        )
    batch.reviews.clear()


async def apply_merges(conn: AsyncConnection, batch: Batch, policy: IdentityPolicy) -> None:
    """Merge every group the batch united into its oldest contact; run after the batch's rows are written."""
    for group in batch.unions.groups():
        query = select(contact_t.c.id, contact_t.c.created_at).where(contact_t.c.id.in_(group))
        if conn.dialect.name == "postgresql":
            query = query.order_by(contact_t.c.id).with_for_update()
        ages = {cid: leads.aware(created) for cid, created in await conn.execute(query)}
        survivor, *others = sorted(group, key=lambda c: (ages[c], c))
        for merged in others:
            evidence = batch.unions.evidence.get(merged) or next(
                (batch.unions.evidence[c] for c in group if c in batch.unions.evidence), None
            )
            batch.events.extend(
                await merge(
                    conn,
                    survivor_id=survivor,
                    merged_id=merged,
                    inquiry_id=evidence,
                    now=batch.now,
                    policy=policy,
                )
            )


async def merge(
    conn: AsyncConnection,
    *,
    survivor_id: str,
    merged_id: str,
    inquiry_id: str | None,
    now: datetime,
    policy: IdentityPolicy,
    by_hand: bool = False,
) -> list[dict[str, Any]]:
    """Move everything of `merged_id` to `survivor_id`, fold their open leads, and journal it; returns events.

    An opt-out wins: a `withdrawn` consent of either contact, or an address of theirs that unsubscribed or
    complained, makes the survivor's consent `withdrawn` (only a merge by hand can meet one beside a `granted`:
    automatic merges refuse those). `by_hand` (a person decided, store/contact_review.py)
    also clears both contacts' review flags; any merge clears a flag about the two of them only. These changes are
    journalled, so an unmerge takes them back.
    """
    contacts = {
        row["id"]: dict(row)
        for row in (
            await conn.execute(select(contact_t).where(contact_t.c.id.in_([survivor_id, merged_id])))
        ).mappings()
    }
    survivor, merged = contacts[survivor_id], contacts[merged_id]
    journal: dict[str, Any] = {"moved": {}, "before": {"contact": {}}}
    moved = journal["moved"]
    idents = (
        await conn.execute(
            select(identifier_t.c.kind, identifier_t.c.value).where(identifier_t.c.contact_id == merged_id)
        )
    ).all()
    moved["contact_identifier"] = [[kind, value] for kind, value in idents]
    if idents:
        await conn.execute(
            update(identifier_t).where(identifier_t.c.contact_id == merged_id).values(contact_id=survivor_id)
        )
    for name, table, key in CONTACT_LINKS:
        ids = list((await conn.execute(select(table.c[key]).where(table.c.contact_id == merged_id))).scalars())
        await update_one_of(conn, table, table.c[key], ids, {"contact_id": survivor_id})
        moved[name] = ids
    fill = {name: merged[name] for name in FILLED if survivor[name] is None and merged[name] is not None}
    if survivor["consent"] != merge_journal.WITHDRAWN and await _opted_out(conn, [survivor, merged]):
        fill["consent"] = merge_journal.WITHDRAWN  # whichever contact it was recorded on, and however
    gone: dict[str, Any] = {"merged_into": survivor_id}
    pair = {survivor_id, merged_id}
    if by_hand or _settled(survivor["review"], pair):
        fill |= {"review": None} if survivor["review"] is not None else {}
    if by_hand or _settled(merged["review"], pair):
        gone |= {"review": None} if merged["review"] is not None else {}
    journal["before"]["contact"][survivor_id] = {name: survivor[name] for name in [*fill, "updated_at"]}
    journal["before"]["contact"][merged_id] = {name: merged[name] for name in [*gone, "updated_at"]}
    await conn.execute(update(contact_t).where(contact_t.c.id == survivor_id).values(**fill, updated_at=now))
    await conn.execute(update(contact_t).where(contact_t.c.id == merged_id).values(**gone, updated_at=now))
    # Contacts merged into `merged_id` earlier now point at the survivor too (no chains); journalled.
    earlier = list((await conn.execute(select(contact_t.c.id).where(contact_t.c.merged_into == merged_id))).scalars())
    for contact_id in earlier:
        journal["before"]["contact"][contact_id] = {"merged_into": merged_id}
    if earlier:
        await conn.execute(update(contact_t).where(contact_t.c.id.in_(earlier)).values(merged_into=survivor_id))
    events = await leads.fold_open_leads(conn, survivor_id, policy, now, journal)
    moved["columns_set"] = await merge_journal.columns_set(conn, journal["before"], [survivor_id, merged_id])
    merge_id = new_id()
    await conn.execute(
        merge_t.insert().values(
            id=merge_id,
            survivor_id=survivor_id,
            merged_id=merged_id,
            inquiry_id=inquiry_id,
            moved=moved,
            before=merge_journal.jsonable(journal["before"]),
            created_at=now,
            undone_at=None,
        )
    )
    events.insert(
        0,
        outbox_event(
            "contact.merged",
            survivor_id,
            now,
            contact_id=survivor_id,
            merged_id=merged_id,
            merge_id=merge_id,
            inquiry_id=inquiry_id,
        ),
    )
    events[1:1] = [
        review_cleared(contact_id, "merged", [other_id], now, merge_id=merge_id)
        for contact_id, other_id, changed in ((survivor_id, merged_id, fill), (merged_id, survivor_id, gone))
        if "review" in changed
    ]
    return events


def review_cleared(contact_id: str, decision: str, other_ids: list[str], now: datetime, **more: Any) -> dict[str, Any]:
    """`contact.review_cleared`: a contact's review flag was cleared by a merge or a person's keep-apart, so that a
    rule can close what it opened on `contact.review_needed`."""
    return outbox_event(
        "contact.review_cleared", contact_id, now, contact_id=contact_id, decision=decision, other_ids=other_ids, **more
    )


def _settled(review: dict[str, Any] | None, pair: set[str]) -> bool:
    """A review about these two contacts only is settled by their merge (their consent agrees now, or a person
    merged them): left, the contact that stayed was listed for review naming one merged into it."""
    return review is not None and set(review.get("with", [])) <= pair


class UnmergeError(LookupError):
    """Nothing to take back; `missing` when there is no such merge (else: undone already, or the survivor)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


async def find_merge(conn: AsyncConnection, ident: str) -> dict[str, Any]:
    """The merge to take back: by merge id, or the latest live merge that absorbed contact `ident`."""
    row = (await conn.execute(select(merge_t).where(merge_t.c.id == ident))).mappings().first()
    if row is None:  # the contact's live merge, else its latest one (to say it was undone already)
        query = (
            select(merge_t)
            .where(merge_t.c.merged_id == ident)
            .order_by(merge_t.c.undone_at.is_not(None), merge_t.c.created_at.desc(), merge_t.c.id.desc())
        )
        row = (await conn.execute(query)).mappings().first()
    if row is None:
        absorbed = list(
            (
                await conn.execute(
                    select(merge_t.c.merged_id).where(merge_t.c.survivor_id == ident, merge_t.c.undone_at.is_(None))
                )
            ).scalars()
        )
        if absorbed:
            raise UnmergeError(
                f"contact {ident} is the one that stayed; unmerge the contact merged into it: {', '.join(absorbed)}"
            )
        raise UnmergeError(f"no merge of contact {ident} (give the id of a merged contact or of a merge)", missing=True)
    if row["undone_at"] is not None:
        raise UnmergeError(f"merge {row['id']} was already undone at {row['undone_at']}")
    return dict(row)


async def unmerge(conn: AsyncConnection, ident: str, now: datetime) -> dict[str, Any]:
    """Put back every row a merge moved and every column it changed and nobody changed since; returns the merge."""
    await lock_for_writing(conn)
    found = await find_merge(conn, ident)
    if conn.dialect.name == "postgresql":
        found = await _locked_merge(conn, found)
    await _refuse_a_link_merged_on(conn, found)
    moved, before = found["moved"], found["before"]
    merged_id = found["merged_id"]
    await leads.unfold(conn, moved.get("lead_folds", []))
    by_kind: dict[str, list[str]] = {}
    for kind, value in moved.get("contact_identifier", []):
        by_kind.setdefault(kind, []).append(value)
    for kind, values in by_kind.items():  # not one statement per identifier: 40,000 of them took 25 s
        back = {"contact_id": merged_id}
        await update_one_of(conn, identifier_t, identifier_t.c.value, values, back, identifier_t.c.kind == kind)
    for name, table, key in CONTACT_LINKS:
        await update_one_of(conn, table, table.c[key], moved.get(name) or [], {"contact_id": merged_id})
    await _follow_leads(conn, moved.get("lead", []), found["survivor_id"], merged_id)
    set_by_merge = moved.get("columns_set")
    pair = [found["survivor_id"], merged_id]
    opted_out = await merge_journal.opted_out_since(conn, pair, set_by_merge)
    await merge_journal.restore_columns(conn, before, set_by_merge, now)
    if opted_out:
        await merge_journal.withdraw_all(conn, pair, now)
    await conn.execute(update(merge_t).where(merge_t.c.id == found["id"]).values(undone_at=now))
    event = outbox_event(
        "contact.unmerged",
        found["survivor_id"],
        now,
        contact_id=found["survivor_id"],
        restored_id=merged_id,
        merge_id=found["id"],
    )
    await conn.execute(outbox_t.insert(), [event, *await _reviews_back(conn, before, pair, now)])
    return found | {"undone_at": now}


async def _reviews_back(
    conn: AsyncConnection, before: dict[str, dict[str, dict[str, Any]]], pair: list[str], now: datetime
) -> list[dict[str, Any]]:
    """`contact.review_needed` again for each contact whose review flag the merge had cleared and the unmerge put
    back: what a rule closed on `contact.review_cleared` is needed again. A flag comes back without the contacts a
    person kept apart from it meanwhile (a keep-apart decided while the two were one), and not at all when that
    leaves nobody to decide about."""
    cleared = [c for c in pair if (before.get("contact", {}).get(c) or {}).get("review") is not None]
    if not cleared:
        return []
    reviews = await kept_apart.narrow_reviews(conn, cleared, now)
    return [
        outbox_event("contact.review_needed", c, now, contact_id=c, reason=review["reason"], other_ids=review["with"])
        for c in cleared
        if (review := reviews.get(c)) is not None
    ]


async def _refuse_a_link_merged_on(conn: AsyncConnection, found: dict[str, Any]) -> None:
    """A into B, then B into C points A at C: taking back A into B first would leave A merged into C (its
    `merged_into` is not the one the journal wrote). Merges are taken back latest first, so B comes back first."""
    merged_id, survivor_id = found["merged_id"], found["survivor_id"]
    now_into = (await conn.execute(select(contact_t.c.merged_into).where(contact_t.c.id == merged_id))).scalar()
    if now_into in (None, survivor_id):
        return
    later = (
        await conn.execute(
            select(merge_t.c.id).where(merge_t.c.merged_id == survivor_id, merge_t.c.undone_at.is_(None))
        )
    ).scalar()
    raise UnmergeError(
        f"contact {merged_id} was merged into {survivor_id}, which was merged into {now_into} since"
        f"{f' (merge {later})' if later else ''}: unmerge {survivor_id} first"
    )


async def _follow_leads(conn: AsyncConnection, lead_ids: list[str], survivor_id: str, merged_id: str) -> None:
    """Rows recorded after the merge on a lead that now goes back to the merged contact go with their lead."""
    if not lead_ids:
        return
    for name, table, _ in CONTACT_LINKS:
        if name != "lead":
            changes = {"contact_id": merged_id}
            await update_one_of(conn, table, table.c.lead_id, lead_ids, changes, table.c.contact_id == survivor_id)


async def _locked_merge(conn: AsyncConnection, found: dict[str, Any]) -> dict[str, Any]:
    """Lock the merge's contacts, then read the merge again: a concurrent unmerge may have taken it back meanwhile.

    Without the second read, two unmerges at once (a double click, two admins) both restored the rows and both
    announced `contact.unmerged`.
    """
    await conn.execute(
        select(contact_t.c.id)
        .where(contact_t.c.id.in_([found["survivor_id"], found["merged_id"]]))
        .order_by(contact_t.c.id)
        .with_for_update()
    )
    row = dict(
        (await conn.execute(select(merge_t).where(merge_t.c.id == found["id"]).with_for_update())).mappings().one()
    )
    if row["undone_at"] is not None:
        raise UnmergeError(f"merge {row['id']} was already undone at {row['undone_at']}")
    return row
