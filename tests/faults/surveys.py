"""What the survey fault scenarios share: a shop connector, the post-sale survey rule, posting a completed order,
and reading the scheduled actions."""

from __future__ import annotations

from typing import Any

import aiohttp
from sqlalchemy import select

from leadhub.store.db import create_engine
from leadhub.store.models import ScheduledAction

TOKEN = "shop-token"
SHOP = {"name": "shop", "type": "order", "auth": "token", "secret": TOKEN}
RULES = """
rules:
  - id: post-sale-survey
    on: order.completed
    if: "contact.email and not contact.unsubscribed"
    wait: 3s
    do:
      - send_email:
          template: survey
          to: "{{ contact.email }}"
"""


async def scheduled_actions(database_url: str) -> list[Any]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(select(ScheduledAction.__table__))).all())
    finally:
        await engine.dispose()


async def post_completed_order(session: aiohttp.ClientSession, base_url: str, n: int) -> None:
    """Order `o<n>`, completed, for `c<n>@example.com`: the event the survey rule waits on."""
    body = {"external_id": f"o{n}", "number": str(n), "status": "completed", "email": f"c{n}@example.com"}
    async with session.post(base_url + "/hooks/shop", json=body, headers={"X-Leadhub-Token": TOKEN}) as response:
        assert response.status == 202, await response.text()
