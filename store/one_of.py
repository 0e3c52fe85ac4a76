"""`column IN (values)` for a whole batch's values, written so PostgreSQL keeps using the column's index.

A batch-sized IN list is one parameter per value. asyncpg keeps each statement prepared, and after a few runs
PostgreSQL may plan it once for any values (a generic plan). For a table autovacuum has not analyzed yet (a new
deployment's first minute, or fast growth) that plan scanned every row against every parameter: a batch's key
lookup grew to 800 ms at 40,000 inquiries (BENCHMARKS.md). `= ANY($1)` with one array parameter is planned like a
lookup of a few values and mostly keeps the index; a generic plan made while the table was tiny can still be a
sequential scan, which `store/young_tables.py` replaces by analyzing young tables as they grow. SQLite plans each
statement afresh and keeps its IN list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection


def one_of(conn: AsyncConnection, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """True where `column` is one of `values`: one array parameter on PostgreSQL, an IN list elsewhere."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)
