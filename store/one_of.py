"""`column IN (values)` for a whole batch's values, written so PostgreSQL keeps using the column's index.

A batch-sized IN list is one parameter per value. asyncpg keeps each statement prepared, and after a few runs
PostgreSQL may plan it once for any values (a generic plan). For a table autovacuum has not analyzed yet (a new
deployment's first minute, or fast growth) that plan scanned every row against every parameter: a batch's key
lookup grew to 800 ms at 40,000 inquiries (BENCHMARKS.md). `= ANY($1)` with one array parameter is planned like a
lookup of a few values and mostly keeps the index; a generic plan made while the table was tiny can still be a
sequential scan, which `store/young_tables.py` replaces by analyzing young tables as they grow.

SQLite keeps its IN list, padded to a power of two by repeating a value. Each length is its own statement, and
Python's sqlite3 keeps up to 128 prepared per connection: a statement with 2,000 parameters holds ~260 KB in
SQLite: after an 8-s burst the pooled connections held 1.5-2.1 MB of such statements each, 128 of them at most
(BENCHMARKS.md, "SQLite's prepared IN lists"). Padded, a lookup has at most 13 lengths (1 to 4,096).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, any_, bindparam, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

PAD_UP_TO = 4096  # values: a claim of the relay is 2,000, a pipeline batch's lookups fewer


def one_of(conn: AsyncConnection, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """True where `column` is one of `values`: one array parameter on PostgreSQL, an IN list elsewhere."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(padded(values))


def padded(values: list[Any]) -> list[Any]:
    """`values` with its last one repeated up to the next power of two: the same set, one of a few lengths.

    Longer lists than a batch's (an admin's command) keep their length: padding could pass SQLite's limit of
    32,766 parameters.
    """
    if len(values) < 3 or len(values) > PAD_UP_TO:
        return values
    return values + values[-1:] * ((1 << (len(values) - 1).bit_length()) - len(values))


SQLITE_SLICE = 10_000  # ids per UPDATE on SQLite, well under its 32,766 parameters


async def update_one_of(
    conn: AsyncConnection, table: Table, column: Any, values: Sequence[Any], changes: dict[str, Any], *where: Any
) -> None:
    """`UPDATE table SET changes WHERE column IN values` for any number of values.

    A merge moves every row of a contact (a shared office phone gathers tens of thousands of inquiries); one IN
    list of them passed asyncpg's 32,767 arguments and failed the batch, so the merge never happened. PostgreSQL
    gets one array parameter; SQLite a statement per slice.
    """
    if not values:
        return
    if conn.dialect.name == "postgresql":
        await conn.execute(update(table).where(one_of(conn, column, values), *where).values(**changes))
        return
    for start in range(0, len(values), SQLITE_SLICE):
        part = values[start : start + SQLITE_SLICE]
        await conn.execute(update(table).where(column.in_(part), *where).values(**changes))
