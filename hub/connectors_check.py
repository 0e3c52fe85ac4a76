"""`leadhub connectors check`: does each pull connector reach its source with its credentials, before a start.

A pull connector type says how it is checked with a `check(config)` classmethod (connectors/imap.py,
connectors/woocommerce_poll.py); a webhook connector is reached by its provider, so it is listed with its route.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from leadhub.connectors.registry import CONNECTOR_TYPES


async def check_connectors(configs: Sequence[Any]) -> tuple[list[str], bool]:
    """The lines to print, and whether any check failed."""
    lines: list[str] = []
    failed = False
    for config in configs:
        connector_type = CONNECTOR_TYPES[config.type]
        check = getattr(connector_type, "check", None)
        if check is None:
            lines.append(f"{config.name} ({config.type}): receives webhooks at POST /hooks/{config.name}")
            continue
        lines.append(f"{config.name} ({config.type})")
        for result in await check(config):
            lines.append(f"  {'ok    ' if result.ok else 'FAILED'}  {result.text}")
            failed |= not result.ok
    return lines, failed
