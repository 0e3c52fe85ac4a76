"""Text that JSON can carry and UTF-8 cannot: a lone half of a UTF-16 pair (`"\\ud800"`).

`json.loads` keeps such an escape as a lone surrogate, which no UTF-8 encoder (the database's, the log's)
accepts, so an item holding one was answered 202 and then dead-lettered. Such text is mended to U+FFFD; the
raw payload keeps the original bytes.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def may_hold_lone_surrogates(raw: bytes) -> bool:
    """Whether JSON text escapes a surrogate at all (valid pairs too): the cheap test before `mend`."""
    return _ESCAPED_SURROGATE.search(raw) is not None


def mend(value: Any) -> Any:
    """`value` with every lone surrogate in its strings (also keys, lists, dataclass fields) as U+FFFD."""
    if isinstance(value, str):
        if _SURROGATE.search(value) is None:
            return value
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {mend(k): mend(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mend(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: mend(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value
