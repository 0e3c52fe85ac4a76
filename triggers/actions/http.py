"""Outbound HTTP for actions: one POST, its failures sorted into retry-later and give-up, no secrets in errors."""

from __future__ import annotations

from typing import Any

import aiohttp

from leadhub.triggers.actions.base import Permanent, Transient

RETRY_STATUSES = frozenset({408, 425, 429})


async def post(
    session: aiohttp.ClientSession | None,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    seconds: float,
    label: str,
) -> tuple[int, Any]:
    """POST and return (status, parsed JSON or text); Transient/Permanent on failure. `label` replaces the URL."""
    owned = session is None
    client = session or aiohttp.ClientSession()
    try:
        async with client.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds)) as resp:
            text = await resp.text(errors="replace")
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Transient(f"{label}: {type(exc).__name__}") from None
    finally:
        if owned:
            await client.close()
    if status >= 500 or status in RETRY_STATUSES:
        raise Transient(f"{label}: HTTP {status}: {text[:200]}")
    if status >= 400:
        raise Permanent(f"{label}: HTTP {status}: {text[:200]}")
    return status, text
