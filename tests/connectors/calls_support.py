"""Helpers shared by the telephony and chat connector tests: corpus samples, posting, reading the metric."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import RunningHub
from tests.helpers import corpus


def sample(provider: str, name: str) -> dict[str, Any]:
    """A JSON sample from ../shared/corpus/webhooks/<provider>/ (skips the test when the corpus is absent)."""
    return json.loads(corpus("webhooks", provider, name).read_text(encoding="utf-8"))


async def post(hub: RunningHub, path: str, body: bytes, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    """POST and return (status, decoded JSON or text)."""
    async with await hub.post(path, data=body, headers=headers or {}, **kw) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def rejected(hub: RunningHub, connector: str, reason: str) -> float:
    """The hub's leadhub_intake_rejected counter for a connector and reason (0 when never incremented)."""
    async with hub.session.get(hub.url("/metrics")) as response:
        text = await response.text()
    label = f'leadhub_intake_rejected_total{{connector="{connector}",reason="{reason}"}}'
    for line in text.splitlines():
        if line.startswith(label):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def inquiries(hub: RunningHub, count: int, **params: Any) -> list[dict[str, Any]]:
    return await hub.wait_items("/api/inquiries", count, **params)


def by_key_part(items: list[dict[str, Any]], part: str) -> dict[str, Any]:
    """The one item whose key contains `part`."""
    found = [item for item in items if part in item["key"]]
    assert len(found) == 1, f"{len(found)} items with {part!r} in their key: {[i['key'] for i in items]}"
    return found[0]
