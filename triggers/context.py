"""What conditions and templates see: read-only records with attribute access and no methods to reach through."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


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


def plain(record: Record) -> dict[str, Any]:
    """The record as a dict again (nested records too). A function, not a method: the sandbox's getattr finds a
    record's methods before its fields, so a method `plain` hid a form field or data key of that name."""
    return {k: plain(v) if isinstance(v, Record) else v for k, v in record._data.items()}


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
    """The names a rule sees: `event`, `now`, and each object (None when the event has none)."""
    context: dict[str, Any] = {"event": Record(event), "now": now}
    for name, row in objects.items():
        context[name] = None if row is None else Record(row)
    return context
