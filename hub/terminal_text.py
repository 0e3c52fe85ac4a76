"""Text from outside (a sender's payload, a key, a remote server's reply) made safe to print on an admin's terminal.

Control characters would steer the terminal: an ANSI escape rewrites the screen or its title, a carriage return
hides what came before it on the line, a bidirectional override reverses what follows. They are shown escaped.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe(text: str, *, keep_tabs: bool = False) -> str:
    """`text` with every control character escaped (`\\x1b`); newlines are kept, tabs too with `keep_tabs`."""
    escaped = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return escaped if keep_tabs else escaped.replace("\t", "\\t")
