"""Sender-written text printed by the CLI cannot steer the admin's terminal (hub/terminal_text.py)."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from leadhub.hub.terminal_text import safe

STEERING = {"\x1b", "\r", "\x07", "\x08", "\x9b", "\u202e", "\u2066", "\u2028", "\x00", "\x7f"}


@given(st.text())
def test_no_control_character_but_the_newline_survives(text: str) -> None:
    shown = safe(text)
    assert all(ch == "\n" or unicodedata.category(ch) != "Cc" for ch in shown), repr(shown)
    assert not STEERING & set(shown)
    assert shown.count("\n") == text.count("\n")


def test_escapes_read_as_what_they_were() -> None:
    assert safe("a\x1b[2Jb\rc\u202ed\te") == "a\\x1b[2Jb\\rc\\u202ed\\te"
    assert safe("name\tvalue", keep_tabs=True) == "name\tvalue"
    assert safe("Иван Петров <ivan@example.com>") == "Иван Петров <ivan@example.com>"
