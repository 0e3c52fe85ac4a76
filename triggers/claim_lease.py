"""The lease on a claimed batch, kept alive by a heartbeat while the batch runs, so no other worker claims it again.

A claim sets `lease_until` on its rows; a `running` row whose lease has ended is claimed again ("its worker died").
A batch of slow actions (webhooks with long timeouts, a slow SMTP server) can outlast the lease while its worker is
alive, and another replica would then run the rest a second time. The heartbeat moves the lease every third of it.
The `lease_until` value the claim set last is its token: a row with another value belongs to another claim.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import TracebackType

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.error_text import brief
from leadhub.store import triggers as store
from leadhub.triggers.clock import Clock

log = structlog.get_logger("leadhub.scheduler")


class ClaimLease:
    """`async with` it around running a claimed batch: it extends the lease of the rows the claim still holds."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        lease: timedelta,
        ids: Sequence[str],
        *,
        until: datetime,
        ends_at: float,
    ) -> None:
        """`until`: the `lease_until` the claim wrote; `ends_at`: when that lease ends on the event loop's clock."""
        self.engine = engine
        self.clock = clock
        self.lease = lease
        self.held = set(ids)
        self.until = until
        self.ends_at = ends_at
        self.lock = asyncio.Lock()  # held to record some of the rows under `until` while the others run on
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ClaimLease:
        self._task = asyncio.create_task(self._beat(), name="claim-lease-heartbeat")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the heartbeat, letting an extension under way finish: its new `until` is the claim's token."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    async def _beat(self) -> None:
        interval = self.lease.total_seconds() / 3
        while self.held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if self._stop.is_set():
                return
            await self.extend()

    async def extend(self) -> None:
        """Move the lease to a full lease from now; a store away is logged and tried again at the next beat."""
        async with self.lock:
            ends_at = asyncio.get_running_loop().time() + self.lease.total_seconds()
            until = self.clock.now() + self.lease
            try:
                async with self.engine.begin() as conn:
                    kept = set(await store.extend_lease(conn, sorted(self.held), self.until, until))
            except Exception as exc:
                log.warning("claim lease not extended; it runs out unless a later beat gets through", error=brief(exc))
                return
            lost = self.held - kept
            if lost:
                log.warning(
                    "claimed actions were taken by another worker after this claim's lease ran out", ids=sorted(lost)
                )
            self.held, self.until, self.ends_at = kept, until, ends_at
