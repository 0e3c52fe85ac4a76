"""Argument checks shared by the CLI commands: what no store can take is a usage error (exit 2) naming the
argument, before it reaches the database as a traceback or as "cannot use the database"."""

from __future__ import annotations

from typing import TypeVar

import typer

from leadhub.ids import typed_id

MAX_LIMIT = 100_000  # past 2**63 SQLite raised OverflowError; a negative one PostgreSQL refused and SQLite ignored
Text = TypeVar("Text", str, list[str], None)


def stored_text(value: Text) -> Text:
    """An id or a rule name as typed: bytes that are not UTF-8 (a terminal in another encoding) reach Python as
    lone surrogates, which no database driver encodes."""
    for each in [value] if isinstance(value, str) else value or []:
        try:
            each.encode("utf-8")
        except UnicodeEncodeError:
            raise typer.BadParameter(f"{each!r} is not UTF-8 text: ids and rule names must be UTF-8") from None
    return value


def stored_id(value: Text) -> Text:
    """An id leadhub made, as typed (`stored_text`), in the case leadhub writes it (`typed_id`: a ULID is often
    shown in upper case)."""
    value = stored_text(value)
    if isinstance(value, str):
        return typed_id(value)
    return None if value is None else [typed_id(each) for each in value]
