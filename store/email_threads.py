"""Email threading and bounce suppression inside the intake transaction.

Two calls from `write_batch`: `thread_links` before the batch opens leads (a reply joins the lead of
the message it answers: an earlier inquiry's Message-ID, or one leadhub sent), and `record` after
(remember each stored message's Message-ID with its lead, and put undeliverable bounced addresses and
complainants on the suppression list). Both run in the batch's transaction, so a retried batch repeats them exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store.models import EmailMessage, EmailSuppression, Inquiry, Lead
from leadhub.store.one_of import one_of
from leadhub.store.suppression_keys import suppression_key

if TYPE_CHECKING:
    from leadhub.store.intake import Batch, InquiryRow

message_t = EmailMessage.__table__
lead_t = Lead.__table__
inquiry_t = Inquiry.__table__
suppression_t = EmailSuppression.__table__
MAX_ID = 500  # the column's length; longer ids are not real Message-IDs
MAX_REFS = 50
MAX_COPIES = 8  # rows of one batch holding the same Message-ID that a reply in it may join
MAX_FOLDS = 10  # a chain of folds longer than this is not followed to its end


def _variants(message_id: str) -> tuple[str, str]:
    """A Message-ID with and without angle brackets: outbound rows may have been written either way."""
    bare = message_id.strip().strip("<>")
    return f"<{bare}>", bare


Ref = tuple[str, str | None]  # (a Message-ID spelling, the sender it must be from: None for any)


def _sender(row: InquiryRow) -> str:
    return (row.email or "").strip().lower()


class ThreadLinks(dict[str, str]):
    """Inquiry key -> the lead a reply joins. `get` also resolves replies to a message stored earlier in the
    same batch, whose lead only exists once the batch loop has reached it."""

    def __init__(self, batch: Batch, pending: dict[str, list[Ref]], rows: Sequence[InquiryRow]) -> None:
        super().__init__()
        self._batch = batch
        self._pending = pending  # key -> refs (both spellings) not found in the store
        # Message-ID (both spellings) -> (inquiry id, sender) of the rows in this batch holding it (one per mailbox)
        self._batch_ids: dict[str, list[tuple[str, str]]] = {}
        for row in rows:
            for variant in _variants(row.message_id) if row.message_id else ():
                copies = self._batch_ids.setdefault(variant, [])
                if len(copies) < MAX_COPIES:  # a flood of one Message-ID must not make each lookup long
                    copies.append((row.id, _sender(row)))
        self._leads: dict[str, str] = {}  # inquiry id -> lead id of the rows the batch loop has done
        self._seen = 0

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key in self:
            return self[key]
        refs = self._pending.get(key)
        if not refs:
            return default
        done = self._batch.inquiries
        self._leads.update({v["id"]: v["lead_id"] for v in done[self._seen :] if v.get("lead_id")})
        self._seen = len(done)
        for ref, sender in refs:
            for inquiry_id, written_by in self._batch_ids.get(ref, ()):
                if inquiry_id in self._leads and sender in (None, written_by):
                    return self._leads[inquiry_id]
        return default


def in_thread_order(rows: list[InquiryRow]) -> list[InquiryRow]:
    """`rows` with the replies to a message of the batch after the others (each group in its order): a reply
    ahead of its message (two mailboxes backfilled together) found no lead yet, and the thread got two."""
    ids = {v for row in rows if row.message_id and not row.dropped for v in _variants(row.message_id)}
    if not ids:
        return rows
    replies = [any(v in ids for ref in row.thread_refs[:MAX_REFS] for v in _variants(ref)) for row in rows]
    if not any(replies):
        return rows
    return [row for row, reply in zip(rows, replies, strict=True) if not reply] + [
        row for row, reply in zip(rows, replies, strict=True) if reply
    ]


async def thread_links(conn: AsyncConnection, rows: Sequence[InquiryRow], batch: Batch) -> ThreadLinks:
    """Find, for each reply in `rows`, the lead of the first message it refers to that leadhub knows.

    A mail's own Message-ID (the same message through a second mailbox) joins only a copy from the same sender: a
    mailer that writes one Message-ID for every message put each stranger's inquiry into the first one's lead.
    """
    wanted: dict[str, list[Ref]] = {}
    for row in rows:
        if row.dropped or not (row.thread_refs or row.message_id):
            continue
        replied = [ref for ref in row.thread_refs[:MAX_REFS] if len(ref) <= MAX_ID]
        refs: list[Ref] = [(v, None) for ref in replied for v in _variants(ref)]
        if row.message_id and len(row.message_id) <= MAX_ID:
            refs.extend((v, _sender(row)) for v in _variants(row.message_id))
        wanted[row.key] = refs
    links = ThreadLinks(batch, wanted, rows)
    known = await _known_leads(conn, {ref for refs in wanted.values() for ref, _ in refs})
    for key, refs in wanted.items():
        lead_id = next((known[r][0] for r, by in refs if r in known and by in (None, known[r][1])), None)
        if lead_id:
            links[key] = lead_id
    return links


async def _known_leads(conn: AsyncConnection, ids: set[str]) -> dict[str, tuple[str, str]]:
    """Message-ID -> (its lead, who wrote it: the sender of an inbound one, "" for one leadhub sent)."""
    if not ids:
        return {}
    found: dict[str, tuple[str, str]] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), 500):  # keep the IN list within every driver's parameter limit
        result = await conn.execute(
            select(message_t.c.message_id, message_t.c.lead_id, inquiry_t.c.email)
            .outerjoin(inquiry_t, inquiry_t.c.id == message_t.c.inquiry_id)
            .where(one_of(conn, message_t.c.message_id, ordered[start : start + 500]), message_t.c.lead_id.is_not(None))
        )
        found.update({mid: (lead_id, (email or "").strip().lower()) for mid, lead_id, email in result})
    into = await _folded_into(conn, {lead_id for lead_id, _ in found.values()})
    return {mid: (into.get(lead_id, lead_id), by) for mid, (lead_id, by) in found.items()}


async def _folded_into(conn: AsyncConnection, lead_ids: set[str]) -> dict[str, str]:
    """Folded lead -> the live lead it became, for those of `lead_ids` a contact merge folded into another.

    A fold moves the lead's Message-IDs, but the scheduler records a sent mail after the SMTP send, with the lead it
    loaded before: one recorded while a fold ran still names the folded lead, which lists leave out.
    """
    into: dict[str, str] = {}
    pending = {lead_id: lead_id for lead_id in lead_ids}  # lead asked about -> the folded lead it has got to
    for _ in range(MAX_FOLDS):
        if not pending:
            break
        query = select(lead_t.c.id, lead_t.c.merged_into).where(
            one_of(conn, lead_t.c.id, sorted(set(pending.values()))), lead_t.c.merged_into.is_not(None)
        )
        moved = {lead_id: merged_into for lead_id, merged_into in await conn.execute(query)}
        pending = {asked: moved[at] for asked, at in pending.items() if at in moved}
        into.update(pending)
    return into


async def record(conn: AsyncConnection, rows: Sequence[InquiryRow], batch: Batch) -> None:
    """Remember the Message-IDs of the stored email inquiries with a lead, and suppress permanently bounced addresses.

    A dropped mail's id joins nothing, and kept it would hide a later record of the same id: a copy of a survey
    leadhub sent, reaching the mailbox before the scheduler recorded the send, left the survey without its lead.
    """
    stored = {v["id"]: v.get("lead_id") for v in batch.inquiries}
    messages: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.message_id and stored.get(row.id) and len(row.message_id) <= MAX_ID:
            messages.setdefault(
                row.message_id,
                {
                    "message_id": row.message_id,
                    "direction": "in",
                    "inquiry_id": row.id,
                    "lead_id": stored[row.id],
                    "created_at": batch.now,
                },
            )
    await _insert_new(conn, message_t, message_t.c.message_id, messages)
    suppress: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.id in stored and row.dropped and isinstance(row.fields, dict):
            for address, reason, detail in _suppressions(row):
                suppress.setdefault(
                    address, {"address": address, "reason": reason, "detail": detail, "created_at": batch.now}
                )
    await _insert_new(conn, suppression_t, suppression_t.c.address, suppress)


def _suppressions(row: InquiryRow) -> Iterable[tuple[str, str, str]]:
    """(address, reason, detail) for each address a stored bounce reports undeliverable or a complaint names."""
    report = row.fields.get("bounce")
    for item in report if isinstance(report, list) else []:
        if isinstance(item, dict) and item.get("undeliverable") and _usable(item.get("address")):
            yield suppression_key(item["address"]), "bounce", f"status {item.get('status') or 'unknown'} in {row.id}"
    complaint = row.fields.get("complaint")
    for address in complaint if isinstance(complaint, list) else []:
        if _usable(address):
            yield suppression_key(address), "complaint", f"complaint report {row.id}"


def _usable(address: object) -> bool:
    return isinstance(address, str) and "@" in address and len(address.strip()) <= 320


async def _insert_new(conn: AsyncConnection, table: Any, column: Any, values: dict[str, dict[str, Any]]) -> None:
    """Insert the values whose key is not stored yet (a concurrent writer makes the batch fail and retry)."""
    if not values:
        return
    existing = set((await conn.execute(select(column).where(one_of(conn, column, values)))).scalars())
    fresh = [v for k, v in values.items() if k not in existing]
    if fresh:
        await conn.execute(table.insert(), fresh)
