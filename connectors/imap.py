"""Connector `imap`: watches mailbox folders and publishes every new message as an `email` envelope.

One connection (and one thread) per folder; the folders of a mailbox run while this replica holds the mailbox's
lease (store/leases.py: a PostgreSQL advisory lock; always held on SQLite). Each folder reports to /readyz; a
folder that fails reconnects with back-off and never affects the others or the daemon. The keys, checkpoints and
the UIDVALIDITY story are in connectors/imap_message.py and connectors/imap_folder.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

import structlog

from leadhub.connectors.base import CheckResult, ConnectorContext, Stop
from leadhub.connectors.imap_config import ImapConfig
from leadhub.connectors.imap_folder import FolderWorker
from leadhub.connectors.imap_oauth import TokenProvider
from leadhub.connectors.imap_session import ImapSession
from leadhub.error_text import brief
from leadhub.store.leases import Lease, try_lease

log = structlog.get_logger("leadhub.connectors.imap")

LEASE_CHECK = 5.0  # seconds between checks that the lease is still held
STOP_GRACE = 1.0  # seconds the folders get to leave IDLE and log out before their sockets are shut


class ImapConnector:
    """Starts one FolderWorker per folder under the mailbox lease; `start()` returns the stop callable."""

    type: ClassVar[str] = "imap"
    channel: ClassVar[str] = "email"
    Config: ClassVar[type[ImapConfig]] = ImapConfig

    def __init__(self, config: ImapConfig, context: ConnectorContext) -> None:
        self.config = config
        self.context = context
        self.tokens = TokenProvider(config.oauth2) if config.oauth2 is not None else None
        self.workers: list[FolderWorker] = []
        self.folder_status: dict[str, dict[str, Any]] = {}
        self._stopping = asyncio.Event()

    @classmethod
    async def check(cls, config: ImapConfig) -> list[CheckResult]:
        """Log in and select each folder as the connector will, read-only (`leadhub connectors check`)."""
        tokens = TokenProvider(config.oauth2) if config.oauth2 is not None else None
        return [await asyncio.to_thread(_check_folder, config, folder, tokens) for folder in config.folders]

    async def start(self) -> Stop:
        task = asyncio.create_task(self._run(), name=f"imap:{self.config.name}")

        async def stop() -> None:
            self._stopping.set()
            for worker in self.workers:
                worker.request_stop()
            done, _ = await asyncio.wait({task}, timeout=2 * STOP_GRACE + 0.5)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        return stop

    async def _run(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            try:
                lease = await try_lease(self.context.engine, f"imap:{self.config.name}")
            except Exception as exc:  # the store is away: nothing can be checkpointed, so nothing is read
                error = f"cannot take the mailbox lease: {brief(exc)}"
                log.warning("IMAP lease failed", connector=self.config.name, reason="store", error=error)
                self.context.failed(self.config.name, "store")
                self.context.report(self.config.name, {"ok": False, "error": error})
                await self._pause(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            if lease is None:
                status = {"ok": True, "standby": "another replica holds this mailbox", "error": None}
                self.context.report(self.config.name, status)
                await self._pause(self.config.poll_interval.total_seconds())
                continue
            try:
                await self._serve(lease)
            finally:
                await lease.release()

    async def _serve(self, lease: Lease) -> None:
        """Run the folders until stopped or the lease is lost."""
        self.folder_status = {}
        self.workers = [
            FolderWorker(self.config, folder, self.context, self.tokens, self._folder_report)
            for folder in self.config.folders
        ]
        tasks = [asyncio.create_task(w.run(), name=f"imap:{self.config.name}:{w.folder}") for w in self.workers]
        try:
            while not self._stopping.is_set():
                await self._pause(LEASE_CHECK)
                if not self._stopping.is_set() and not await lease.alive():
                    # its connection ended (the database restarted, a network cut): another replica may hold the
                    # mailbox now; this one stops reading and tries to take the lease again
                    log.warning(
                        "IMAP mailbox lease lost; stopping its folders", connector=self.config.name, reason="store"
                    )
                    self.context.failed(self.config.name, "store")
                    break
        finally:
            await self._stop_workers(tasks)

    async def _stop_workers(self, tasks: list[asyncio.Task[None]]) -> None:
        for worker in self.workers:
            worker.request_stop()
        _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
        if pending:  # a worker is blocked on the network: shut its socket so the call returns
            for worker in self.workers:
                worker.abort()
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in self.workers:
            worker.close()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _folder_report(self, folder: str, status: dict[str, Any]) -> None:
        self.folder_status[folder] = status
        self.context.report(self.config.name, summarize(self.folder_status))


def summarize(folders: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The mailbox's /readyz entry: ok only when every folder is; the oldest sync; the total UID lag."""
    syncs = [s.get("last_sync") for s in folders.values()]
    errors = [f"{folder}: {s['error']}" for folder, s in folders.items() if s.get("error")]
    return {
        "ok": bool(folders) and all(s.get("ok") for s in folders.values()),
        "last_sync": min(syncs) if syncs and all(syncs) else None,  # type: ignore[type-var]
        "uid_lag": sum(s.get("uid_lag") or 0 for s in folders.values()),
        "error": "; ".join(errors) or None,
        "folders": {folder: dict(s) for folder, s in folders.items()},
    }


def _check_folder(config: ImapConfig, folder: str, tokens: TokenProvider | None) -> CheckResult:
    session = ImapSession(config.model_copy(update={"post_action": "none"}), folder, tokens)  # select read-only
    try:
        info = session.open()
    except Exception as exc:
        return CheckResult(False, f"{folder}: {brief(exc)}")
    finally:
        with contextlib.suppress(Exception):
            session.close()
    features = ", ".join(name for name, has in (("IDLE", info.idle), ("MOVE", info.move)) if has) or "no IDLE"
    return CheckResult(
        True,
        f"{folder}: logged in to {config.host}:{config.effective_port} as {config.username}; "
        f"{info.exists} messages; {features}",
    )
