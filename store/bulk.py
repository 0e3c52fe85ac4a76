"""Bulk inserts for the intake's hot tables: one driver-level executemany, each value converted once.

`conn.execute(table.insert(), rows)` makes SQLAlchemy build a parameter dict per row and run every
value through its type's bind processor; on SQLite each datetime is formatted again, though most of a
batch's datetimes are the batch's one `now`. Here the statement is compiled once per dialect, table and
column set, the same bind processors convert the values (so what is stored is identical), datetimes
are converted once per distinct value, and the rows go to the driver's executemany as tuples. On
PostgreSQL a batch goes in as one binary COPY (asyncpg's `copy_records_to_table`, in the same transaction,
through the same codecs): the server parses and plans nothing per row, and a first burst into a fresh store
drained 1.24x faster than with executemany (BENCHMARKS.md, ninth session). A unique violation fails the COPY
as it failed the executemany: the transaction is rolled back either way.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import DateTime, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

Processor = Callable[[Any], Any] | None
# Rows of one table from which PostgreSQL gets a COPY instead of an executemany. A batch's tables have hundreds;
# an envelope stored on its own (the consumer isolating a failure) keeps SQLAlchemy's executemany and so its
# error classes (a COPY's errors come from asyncpg unwrapped; either way the consumer retries, then isolates).
COPY_FROM = 16
_Plan = tuple[str, tuple[str, ...], tuple[Processor, ...], tuple[bool, ...]]
_plans: weakref.WeakKeyDictionary[Dialect, dict[tuple[str, tuple[str, ...]], _Plan]] = weakref.WeakKeyDictionary()


def _plan(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> _Plan | None:
    """SQL, bind order, processors and datetime flags; None when SQLAlchemy must fill defaults itself."""
    per_dialect = _plans.setdefault(dialect, {})
    plan = per_dialect.get((table.name, columns))
    if plan is None:
        if any(c.default is not None or c.server_default is not None for c in table.c if c.key not in columns):
            return None  # a column left out has a default only SQLAlchemy's own insert applies
        compiled = table.insert().compile(dialect=dialect, column_keys=list(columns))
        order = tuple(compiled.positiontup or ())
        if not compiled.positional or sorted(order) != sorted(columns):
            return None
        types = [table.c[name].type for name in order]
        processors = tuple(t.dialect_impl(dialect).bind_processor(dialect) for t in types)
        is_time = tuple(isinstance(t, DateTime) for t in types)
        plan = per_dialect[(table.name, columns)] = (compiled.string, order, processors, is_time)
    return plan


async def insert_rows(conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` (dicts of column values) as `conn.execute(table.insert(), rows)` would."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(tuple(row), []).append(row)
    for columns, group in shapes.items():
        plan = _plan(conn.dialect, table, columns)
        if plan is None:
            await conn.execute(table.insert(), group)
            continue
        sql, order, processors, is_time = plan
        convert = _converter(order, processors, is_time)
        values = [convert(row) for row in group]
        if conn.dialect.name == "postgresql" and len(values) >= COPY_FROM:
            await _copy(conn, table, order, values)
        else:
            await conn.exec_driver_sql(sql, values)


def _converter(
    order: tuple[str, ...], processors: tuple[Processor, ...], is_time: tuple[bool, ...]
) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row dict to its values in bind order, through the columns' bind processors.

    The values come out in one C call (`itemgetter`); only the columns that have a processor are touched after
    (on PostgreSQL the JSON ones; on SQLite also the datetimes). A batch repeats its `now` object in most rows,
    so each datetime object is converted once: by identity, not equality, since equal datetimes in different time
    zones are stored differently on SQLite. One converter serves one batch (the identities are its rows').
    """
    get = itemgetter(*order)
    single = len(order) == 1
    steps = enumerate(zip(processors, is_time, strict=True))
    work = tuple((i, process, timed) for i, (process, timed) in steps if process is not None)
    converted: dict[int, Any] = {}

    def convert(row: dict[str, Any]) -> tuple[Any, ...]:
        values = get(row)
        if single:
            values = (values,)
        if not work:
            return values
        values = list(values)
        for i, process, timed in work:
            value = values[i]
            if not timed:
                values[i] = process(value)  # None too: JSON turns None into 'null' as SQLAlchemy's insert does
            elif value is not None:
                done = converted.get(id(value))
                if done is None:
                    done = converted[id(value)] = process(value)
                values[i] = done
        return tuple(values)

    return convert


async def _copy(conn: AsyncConnection, table: Table, columns: Sequence[str], values: list[tuple[Any, ...]]) -> None:
    """PostgreSQL's COPY (binary, through asyncpg) in the connection's transaction: one statement for all rows."""
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(
        table.name, records=values, columns=list(columns), schema_name=table.schema
    )
