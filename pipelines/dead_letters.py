"""Sending an item to dead letters: the table is the record (replayable), the DEAD stream a copy for tools."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.store import dead_letters

log = structlog.get_logger("leadhub.dead")

PublishRaw = Callable[[str, bytes, dict[str, str], str], Awaitable[bool]]


class DeadLetterSink:
    def __init__(self, engine: AsyncEngine, publish: PublishRaw | None, on_dead: Callable[[str], None]) -> None:
        self.engine = engine
        self.publish = publish
        self.on_dead = on_dead

    async def send(
        self,
        *,
        source: str,
        subject: str,
        headers: Mapping[str, str],
        payload: bytes,
        key: str | None,
        reason: str,
        error: str | None,
        deliveries: int,
        queue_message: str | None = None,
    ) -> bool:
        """Record the item; raises if the table write fails, so the caller keeps the message.

        False when `queue_message` (the queue's "<stream>:<sequence>") was recorded already: a redelivery after a
        crash between the commit and the ack, neither recorded nor counted again.
        """
        async with self.engine.begin() as conn:
            if queue_message and (
                dead_id := await dead_letters.recorded_from(conn, queue_message, dict(headers), payload)
            ):
                log.info("dead-lettered already", id=dead_id, queue_message=queue_message, key=key)
                return False
            dead_id = await dead_letters.add(
                conn,
                source=source,
                subject=subject,
                key=key,
                reason=reason,
                error=error,
                deliveries=deliveries,
                headers=dict(headers),
                payload=payload,
                now=datetime.now(UTC),
                queue_message=queue_message,
            )
        self.on_dead(error or "error")
        log.warning("dead-lettered", id=dead_id, source=source, subject=subject, key=key, reason=reason)
        if self.publish is not None:
            copy_headers = {**headers, "Leadhub-Dead-Id": dead_id, "Leadhub-Dead-Reason": reason[:500]}
            copy_headers["Nats-Msg-Id"] = f"dead:{dead_id}"
            try:
                await self.publish(f"dead.{source}", payload, copy_headers, "DEAD")
            except Exception as exc:  # the table holds the record; the stream copy is a convenience
                log.warning("dead letter not copied to the DEAD stream", id=dead_id, error=str(exc))
        return True


def headers_for_storage(headers: Mapping[str, str] | None) -> dict[str, str]:
    return json.loads(json.dumps(dict(headers or {})))
