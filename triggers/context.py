"""What conditions and templates see: read-only records with attribute access and no methods to reach through."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from leadhub.triggers.events import AMOUNT_FIELDS, EVENT_AMOUNTS, ITEM_AMOUNTS


class Amount(float):
    """A money amount (`order.total`), stored as exact text: it compares and computes as a number
    (`order.total > 100`) and prints as the shop sent it (`{{ order.total }}` is `1500.00`, not `1500.0`).

    A float rather than a Decimal: Jinja reads `100.10` in a rule as a float, which a Decimal 100.10 is not equal
    to, and `order.total * 1.2` on a Decimal is a TypeError; the template limits know floats.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Amount:
        self = super().__new__(cls, text)
        self.text = text
        return self

    def __str__(self) -> str:
        return self.text


def amount(value: Any) -> Any:
    """An amount field's value as an Amount; None, and text that is no finite number, stay as they are (comparing
    them with a number then fails, and the rule is traced as not evaluable). A JSON number (`rules test`) counts."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return value
    text = value.strip() if isinstance(value, str) else str(value)
    try:
        number = float(text)
    except ValueError:
        return value
    return Amount(text) if math.isfinite(number) else value


class Record:
    """A row as `record.field` and `record['field']`; unlike a dict, `order.items` is the field, not a method.

    It has no public methods for the same reason: any would hide a field of its name from templates.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", {k: wrap(v) for k, v in data.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("records are read-only")

    def __repr__(self) -> str:
        return f"Record({self._data!r})"


def plain(value: Any) -> Any:
    """A value as JSON takes it: records as dicts (nested ones, in lists and dicts too), amounts as their text, dates
    in ISO 8601 as the event was published (`str()` wrote a space for the `T`). What a webhook sends and `|tojson`
    writes. A function, not a method: the sandbox's getattr finds a record's methods before its fields, so a method
    `plain` hid a form field or data key of that name."""
    if isinstance(value, Record):
        return {k: plain(v) for k, v in value._data.items()}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Amount):
        return value.text
    return value.isoformat() if isinstance(value, datetime) else value


def dumps(value: Any, **options: Any) -> str:
    """`|tojson` in templates: records are objects, amounts their text (`"1500.00"`, as before they were numbers),
    dates ISO 8601 text; a record or a date raised TypeError."""
    return json.dumps(plain(value), **options)


def aware(value: Any) -> Any:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def wrap(value: Any) -> Any:
    if isinstance(value, Record):
        return value
    if isinstance(value, Mapping):
        return Record(value)
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return aware(value)


def build_context(
    event: Mapping[str, Any], objects: Mapping[str, Mapping[str, Any] | None], now: datetime
) -> dict[str, Any]:
    """The names a rule sees: `event`, `now`, and each object (None when the event has none); amounts as numbers."""
    context: dict[str, Any] = {"event": Record(_event_amounts(event)), "now": now}
    for name, row in objects.items():
        context[name] = None if row is None else Record(_amounts(name, row))
    return context


def _amounts(name: str, row: Mapping[str, Any]) -> Mapping[str, Any]:
    fields = AMOUNT_FIELDS.get(name, ())
    if not fields:
        return row
    typed = {**row, **{f: amount(row[f]) for f in fields if f in row}}
    if isinstance(row.get("items"), list):
        typed["items"] = [_item_amounts(item) for item in row["items"]]
    return typed


def _item_amounts(item: Any) -> Any:
    if not isinstance(item, Mapping):
        return item
    return {**item, **{f: amount(item[f]) for f in ITEM_AMOUNTS if f in item}}


def _event_amounts(event: Mapping[str, Any]) -> Mapping[str, Any]:
    fields = EVENT_AMOUNTS.get(event.get("type") or "", ())
    data = event.get("data")
    if not fields or not isinstance(data, Mapping):
        return event
    return {**event, "data": {**data, **{f: amount(data[f]) for f in fields if f in data}}}
