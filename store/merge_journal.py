"""The column half of a merge's journal: what the merge changed, what it set, and how an unmerge puts it back.

An unmerge takes back the merge, not what happened after it. A merge journals each column it changed twice:
the value before (`before`) and the value it left (`moved["columns_set"]`). The unmerge puts a column back only
while it still holds the value the merge left; a column changed since (a touch on the folded lead, a new consent)
keeps its later value, and the row's `updated_at` then becomes the unmerge's time. Consent is stricter: an
opt-out (`withdrawn`) either contact received after the merge ends on both, because it was the person's word
and nobody can tell which of the two it was about; a `withdrawn` on a contact written since the merge counts as
received after it, even when the merge had set the same value (the person may have said it again). Merges
journalled before `columns_set` existed are put back as before, except that a `withdrawn` consent is never
replaced and is carried to the other contact too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from leadhub.store.models import Contact, Lead

TABLES: dict[str, Table] = {"contact": Contact.__table__, "lead": Lead.__table__}  # type: ignore[dict-item]
WITHDRAWN = "withdrawn"


async def columns_set(
    conn: AsyncConnection, before: dict[str, dict[str, dict[str, Any]]], consent_of: list[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """The value each journalled column holds now (call after the merge's writes), and consent of `consent_of`."""
    wanted = {name: {row_id: set(values) for row_id, values in before.get(name, {}).items()} for name in TABLES}
    for contact_id in consent_of:
        wanted["contact"].setdefault(contact_id, set()).add("consent")
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for name, rows in wanted.items():
        current = await _current(conn, TABLES[name], list(rows))
        found[name] = {
            row_id: {column: jsonable(current[row_id][column]) for column in columns}
            for row_id, columns in rows.items()
            if row_id in current
        }
    return found


async def restore_columns(
    conn: AsyncConnection,
    before: dict[str, dict[str, dict[str, Any]]],
    set_by_merge: dict[str, dict[str, dict[str, Any]]] | None,
    now: datetime,
) -> None:
    """Put back each column the merge changed and nobody changed since; `set_by_merge` None: an old journal."""
    for name, table in TABLES.items():
        rows = before.get(name, {})
        current = await _current(conn, table, list(rows))
        for row_id, values in rows.items():
            if row_id not in current:
                continue
            left = None if set_by_merge is None else set_by_merge.get(name, {}).get(row_id, {})
            back = _still_as_merged(current[row_id], values, left)
            if back:
                await conn.execute(update(table).where(table.c.id == row_id).values(**restored(table, back)))
            if "updated_at" in values and "updated_at" not in back:
                await conn.execute(update(table).where(table.c.id == row_id).values(updated_at=now))


def _still_as_merged(current: dict[str, Any], before: dict[str, Any], left: dict[str, Any] | None) -> dict[str, Any]:
    """The before-values of the columns that still hold what the merge left (`updated_at` only if all do)."""
    untouched = left is None or not _written_since(current, left)
    back: dict[str, Any] = {}
    for column, value in before.items():
        if column == "updated_at":
            continue
        if column == "consent" and current[column] == WITHDRAWN and (left is None or not untouched):
            continue  # perhaps said again after the merge (or an old journal, which cannot tell): never re-subscribe
        if left is None or (column in left and jsonable(current[column]) == left[column]):
            back[column] = value
    if "updated_at" in before and untouched and len(back) == len(before) - 1:
        back["updated_at"] = before["updated_at"]
    return back


async def opted_out_since(
    conn: AsyncConnection, contact_ids: list[str], set_by_merge: dict[str, dict[str, dict[str, Any]]] | None
) -> bool:
    """Whether either contact got an opt-out after the merge (or, for an old journal, holds one at all). Asked
    before `restore_columns`, which writes the rows and would make every one look written since the merge."""
    current = await _current(conn, TABLES["contact"], contact_ids)
    merged_consent = {} if set_by_merge is None else set_by_merge.get("contact", {})
    return any(
        c in current
        and current[c]["consent"] == WITHDRAWN
        and (
            set_by_merge is None
            or merged_consent.get(c, {}).get("consent") != WITHDRAWN
            or _written_since(current[c], merged_consent.get(c, {}))
        )
        for c in contact_ids
    )


async def withdraw_all(conn: AsyncConnection, contact_ids: list[str], now: datetime) -> None:
    """The opt-out ends on every one of the contacts: nobody can tell which of them it was about."""
    contact_t = TABLES["contact"]
    await conn.execute(
        update(contact_t)
        .where(contact_t.c.id.in_(contact_ids), contact_t.c.consent.is_distinct_from(WITHDRAWN))
        .values(consent=WITHDRAWN, updated_at=now)
    )


def _written_since(current: dict[str, Any], left: dict[str, Any]) -> bool:
    """The row was written after the merge (its `updated_at` moved), even if to the values the merge left."""
    return "updated_at" in left and jsonable(current.get("updated_at")) != left["updated_at"]


async def _current(conn: AsyncConnection, table: Table, row_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not row_ids:
        return {}
    rows = await conn.execute(select(table).where(table.c.id.in_(row_ids)))
    return {row["id"]: dict(row) for row in rows.mappings()}


def jsonable(value: Any) -> Any:
    """Journal values as JSON: datetimes as `{"$dt": iso}`, aware (SQLite gives naive UTC, PostgreSQL aware)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return {"$dt": (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()}
    return value


def restored(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """Journal values back as column values (datetimes naive where the column is)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        out[name] = value
        if isinstance(value, dict) and set(value) == {"$dt"}:
            when = datetime.fromisoformat(value["$dt"])
            naive = isinstance(table.c[name].type, DateTime) and not table.c[name].type.timezone
            out[name] = when.replace(tzinfo=None) if naive else when
    return out
