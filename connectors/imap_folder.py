"""One watched folder: connect, catch up from the checkpoint, then IDLE (or poll); reconnect with back-off on errors.

Order of work for every batch of messages: fetch (`BODY.PEEK[]`, nothing is marked read) -> publish and wait for
the JetStream acks -> post-action -> save the checkpoint (highest UID done). Post-action and checkpoint cover only the
batch's first messages in UID order that the stream acknowledged; a NATS that refuses some (its ingest queue is full,
`429`) gets the batch in smaller parts (leadhub/publish_window.py), and what it never acked is fetched again after
reconnecting. A crash anywhere re-reads at most one batch, and a re-read is a duplicate by key (see
connectors/imap_message.py), so nothing is lost and nothing doubles.

A batch whose FETCH fails is fetched one message per FETCH after reconnecting, so one message the server cannot
deliver (an unreadable file, a message it cannot convert) holds up only itself. A failure of a message alone is held
against it only when the next connection's first FETCH, of a later pending message (the probe), succeeds: a server
that delivers nothing (storage away, every file's permissions broken) is never mistaken for bad messages, and the last
pending message, which holds up nothing, is never given up. After UNREADABLE_ATTEMPTS such failures a placeholder is
published in its place (stored as a dropped inquiry with the server's answer) and the checkpoint passes it like any
published message.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import structlog

from leadhub.connectors.base import ConnectorContext
from leadhub.connectors.failure_reason import failure_reason, in_store
from leadhub.connectors.imap_config import ImapConfig
from leadhub.connectors.imap_message import envelope_for, unreadable_envelope
from leadhub.connectors.imap_oauth import TokenProvider
from leadhub.connectors.imap_session import HEAD_BYTES, AuthFailed, Fetched, FolderInfo, ImapSession
from leadhub.envelope import Envelope
from leadhub.error_text import brief
from leadhub.publish_window import PublishWindow, Sent, send
from leadhub.store.connector_state import load_state, save_state

log = structlog.get_logger("leadhub.connectors.imap")
T = TypeVar("T")

SIZE_CHUNK = 500  # UIDs per RFC822.SIZE fetch
BATCH_BYTES = 32 * 1024 * 1024  # at most this much message data in memory per batch
HEADER_ROOM = 64 * 1024  # the queue's max_payload covers the envelope's headers (key, meta) too
RETRY_FIRST, RETRY_MAX = 1.0, 60.0
AUTH_RETRY_FIRST, AUTH_RETRY_MAX = 30.0, 600.0  # a refused login needs a person; do not hammer the account
UNREADABLE_ATTEMPTS = 3  # failures of one message alone, each followed by a good probe, before its placeholder


class NotDelivered(Exception):
    """The server failed the FETCH of one message alone; the folder reconnects, probes, and asks again."""


class ServerNotDelivering(Exception):
    """The probe failed too: the server's trouble, not the message's, so nothing is given up; retried with back-off."""


@dataclass(slots=True)
class Failing:
    """The first pending message, whose FETCH alone failed: failures held against it, and the server's last answer."""

    uidvalidity: int
    uid: int
    answer: str
    counted: int = 0
    unproven: bool = True  # its last failure waits for the next connection's probe
    probe_after: int = 0  # the probe is the first pending UID above this (the last probe that failed), else the first

    def concerns(self, uidvalidity: int, uid: int) -> bool:
        return (self.uidvalidity, self.uid) == (uidvalidity, uid)


@dataclass(frozen=True, slots=True)
class Batch:
    """Fetched messages in UID order; `error` ends the sync once they are published (the rest is fetched later)."""

    items: list[Fetched]
    error: Exception | None = None


class FolderWorker:
    """Runs until `request_stop()`; reports its state through `on_status(folder, status)`."""

    def __init__(
        self,
        config: ImapConfig,
        folder: str,
        context: ConnectorContext,
        tokens: TokenProvider | None,
        on_status: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.config = config
        self.folder = folder
        self.context = context
        self.on_status = on_status
        self.session = ImapSession(config, folder, tokens)
        self.stopping = asyncio.Event()
        self.state_key = f"folder:{folder}"
        self.status: dict[str, Any] = {"ok": False, "last_sync": None, "uid_lag": None, "error": "starting"}
        self._synced = False  # whether the current connection completed a sync
        self._one_by_one: tuple[int, int] | None = None  # (uidvalidity, uid): up to uid, one message per FETCH
        self._failing: Failing | None = None  # the message whose FETCH alone failed, until it is read or given up
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"imap-{config.name}")
        self.window = PublishWindow(config.fetch_batch)  # messages in flight: a whole batch unless NATS refuses some

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.stopping.set()
        self.session.stop_flag.set()

    def abort(self) -> None:
        """Unblock a network call in the worker thread (a dead server would otherwise hold it until its timeout)."""
        self.session.abort()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def run(self) -> None:
        delay = RETRY_FIRST
        while not self.stopping.is_set():
            auth_failed = False
            self._synced = False
            try:
                await self._connected()
            except AuthFailed as exc:
                auth_failed = True
                self._failed("IMAP login refused; fix the connector's credentials", exc, str(exc), "error")
            except Exception as exc:  # server gone, timeout, protocol error, queue or store away: retry
                if self.stopping.is_set():
                    break
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
                self._failed("IMAP folder failed; reconnecting", exc, error, "warning")
            finally:
                await self._disconnect()
            if self._synced:  # the connection worked before it broke: a fresh failure, retry soon
                delay = RETRY_FIRST
            elif auth_failed:
                delay = max(delay, AUTH_RETRY_FIRST)
            await self._pause(delay)
            delay = min(delay * 2, AUTH_RETRY_MAX if auth_failed else RETRY_MAX)

    def _failed(self, event: str, exc: Exception, error: str, level: str) -> None:
        reason = failure_reason(exc)
        getattr(log, level)(
            event,
            connector=self.config.name,
            folder=self.folder,
            host=self.config.host,
            reason=reason,
            error=error,
        )
        self.context.failed(self.config.name, reason)
        self._report(ok=False, error=error)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return

    async def _disconnect(self) -> None:
        try:
            await asyncio.wait_for(self._call(self.session.close), 3)
        except Exception as exc:  # the socket is dropped either way; say so for whoever reads the log
            log.debug("IMAP logout failed", connector=self.config.name, folder=self.folder, error=repr(exc))

    def _report(self, **changes: Any) -> None:
        self.status = {**self.status, **changes}
        self.on_status(self.folder, dict(self.status))

    # -- the connected loop -------------------------------------------------------------------------------------
    async def _connected(self) -> None:
        info = await self._call(self.session.open)
        use_idle = self.config.idle and info.idle
        self._report(mode="idle" if use_idle else "poll", uidvalidity=info.uidvalidity)
        log.info("IMAP folder connected", connector=self.config.name, folder=self.folder, idle=use_idle)
        fresh: FolderInfo | None = info
        while not self.stopping.is_set():
            await self._sync(fresh)
            fresh = None
            if self.stopping.is_set():
                return
            if use_idle:
                wait = min(self.config.poll_interval, self.config.idle_renew).total_seconds()
                await self._call(self.session.idle_wait, wait)
            else:
                await self._pause(self.config.poll_interval.total_seconds())

    async def _sync(self, info: FolderInfo | None) -> None:
        """Publish everything above the checkpoint, batch by batch, advancing the checkpoint after each.

        The folder is re-selected first (unless just connected): a server that rebuilt the folder does not always
        end the session, and only SELECT tells the current UIDVALIDITY.
        """
        info = info or await self._call(self.session.select)
        engine, name = self.context.engine, self.config.name
        # A hung database must not hang the folder; whatever fails here, a timeout too, is the store's.
        async with in_store(), asyncio.timeout(self.config.timeout.total_seconds()):
            state = await load_state(engine, name, self.state_key)
        if state is not None and state.get("uidvalidity") == info.uidvalidity:
            last_uid = int(state["last_uid"])
            uids = await self._call(self.session.uids_after, last_uid)
            baseline = last_uid
        else:
            since = self._since(state)
            if state is not None:
                log.warning(
                    "IMAP UIDVALIDITY changed; re-reading the folder (re-read messages are duplicates by key)",
                    connector=name,
                    folder=self.folder,
                    old=state.get("uidvalidity"),
                    new=info.uidvalidity,
                    since=since.isoformat() if since else None,
                )
            uids = await self._call(self.session.uids_since, since) if since else []
            baseline = (info.uidnext - 1) if info.uidnext else await self._call(self.session.highest_uid)
            last_uid = 0
        highest = max([*uids, baseline, last_uid])
        self._report(uid_lag=highest - last_uid)
        await self._probe(uids, info.uidvalidity)
        async for batch in self._batches(uids, info.uidvalidity):
            sent = await self._publish(batch.items, info)
            done = batch.items[: sent.acked]  # the acked prefix in UID order: nothing after an unacked message counts
            if done:
                await self._post_action([item.uid for item in done if item.unreadable is None], info)
                last_uid = done[-1].uid
                await self._checkpoint(info.uidvalidity, last_uid)
                self._report(uid_lag=max(0, highest - last_uid))
            if sent.error is not None:  # the rest of the batch is fetched again after reconnecting
                raise sent.error
            if batch.error is not None:  # the connection may be gone with it (Dovecot ends the session)
                raise batch.error
        if self.stopping.is_set():  # cut short: UIDs not yet read must stay above the checkpoint, not be skipped
            return
        if last_uid < baseline or state is None or state.get("uidvalidity") != info.uidvalidity:
            last_uid = max(last_uid, baseline)
            await self._checkpoint(info.uidvalidity, last_uid)
        self._synced = True
        self._report(ok=True, error=None, last_sync=_now().isoformat(), uid_lag=0, last_uid=last_uid)

    def _since(self, state: dict[str, Any] | None) -> date | None:
        """First start: the backfill window. After a UIDVALIDITY change: also back to the last sync, minus a day."""
        days = self.config.backfill_days
        window = _now() - timedelta(days=days) if days > 0 else None
        synced = state.get("synced_at") if state else None
        if synced:
            resume = datetime.fromisoformat(synced) - timedelta(days=1)
            window = min(window, resume) if window else resume
        return window.date() if window else None

    def _size_limit(self) -> int:
        """`max_message_bytes`, or less when the queue takes less per message (an external NATS's max_payload):
        a message the queue refuses would otherwise fail its batch on every retry and hold up the folder."""
        limit = self.config.max_message_bytes
        queue_limit = self.context.max_payload()
        if queue_limit:
            limit = min(limit, max(queue_limit - HEADER_ROOM, HEAD_BYTES))
        return limit

    async def _batches(self, uids: list[int], uidvalidity: int) -> AsyncIterator[Batch]:
        """Fetched messages in UID order, grouped by count and bytes; one batch in memory at a time."""
        for chunk in _chunks(uids, SIZE_CHUNK):
            sizes = await self._call(self.session.sizes, chunk)
            limit = self._size_limit()
            for group in _by_bytes([u for u in chunk if u in sizes], sizes, self.config.fetch_batch, limit):
                if self.stopping.is_set():
                    return
                if len(group) > 1 and not self._isolating(group[0], uidvalidity):
                    yield Batch(await self._fetch_all(group, sizes, limit, uidvalidity))
                    continue
                for uid in group:  # each its own batch: done before the next, which may end the session
                    if self.stopping.is_set():
                        return
                    yield await self._fetch_one(uid, sizes, limit, uidvalidity)

    def _isolating(self, uid: int, uidvalidity: int) -> bool:
        if self._failing is not None and self._failing.concerns(uidvalidity, uid):
            return True
        return self._one_by_one is not None and self._one_by_one[0] == uidvalidity and uid <= self._one_by_one[1]

    async def _probe(self, uids: list[int], uidvalidity: int) -> None:
        """After a message failed alone: FETCH a later pending one first. Only when the server delivers it is the
        failure the message's own and counted; when it fails too, the server is failing: the count starts over.

        The probe is fetched the way messages are (`BODY.PEEK[]`, or the head of one over the size limit), not a
        cheaper header FETCH: a server may serve headers from its index, or convert headers but not bodies, so
        only the same FETCH shows it can deliver a message now. It is not published here (the checkpoint passes
        only a published prefix in UID order); it is fetched again in its turn.
        """
        failing = self._failing
        if failing is None or not failing.unproven:
            return
        failing.unproven = False
        if failing.uidvalidity != uidvalidity or failing.uid not in uids:  # gone, or the folder was rebuilt
            self._failing = None
            return
        later = [u for u in uids if u > failing.uid]
        probe = next((u for u in later if u > failing.probe_after), later[0] if later else None)
        if probe is None:  # the last pending message holds up nothing: its failure is not held against it
            return
        sizes = await self._call(self.session.sizes, [probe])
        if probe not in sizes:  # expunged meanwhile: no evidence either way
            return
        try:
            fetched = await self._fetch([probe], sizes, self._size_limit())
        except Exception as exc:
            if self.stopping.is_set():
                raise
            failing.counted, failing.probe_after = 0, probe  # the next probe tries a later message
            raise ServerNotDelivering(
                f"the server fails to deliver messages: UID {failing.uid} failed alone, then UID {probe} too "
                f"(nothing is given up while this lasts): {brief(exc, 300)}"
            ) from exc
        if fetched:
            failing.counted += 1

    async def _fetch_all(self, uids: list[int], sizes: dict[int, int], limit: int, uidvalidity: int) -> list[Fetched]:
        """One FETCH for the batch; when it fails, the batch is fetched one message at a time after reconnecting."""
        try:
            return await self._fetch(uids, sizes, limit)
        except Exception:
            if not self.stopping.is_set():
                self._one_by_one = (uidvalidity, uids[-1])
            raise

    async def _fetch_one(self, uid: int, sizes: dict[int, int], limit: int, uidvalidity: int) -> Batch:
        """The message alone; when that fails it is asked for again after reconnecting (and probing), and after
        UNREADABLE_ATTEMPTS failures held against it a placeholder takes its place so the folder goes on."""
        failing = self._failing if self._failing is not None and self._failing.concerns(uidvalidity, uid) else None
        if failing is not None and failing.counted >= UNREADABLE_ATTEMPTS:
            self._failing = None
            self._give_up(uid, failing.answer)
            return Batch([Fetched(uid, b"", None, sizes.get(uid, 0), truncated=False, unreadable=failing.answer)])
        try:
            fetched = await self._fetch([uid], sizes, limit)
        except Exception as exc:
            if self.stopping.is_set():
                return Batch([], exc)
            answer = brief(exc, 300)
            error = NotDelivered(f"the server could not deliver message UID {uid}: {answer}")
            error.__cause__ = exc
            if failing is None:
                self._failing = Failing(uidvalidity, uid, answer)
            else:
                failing.answer, failing.unproven = answer, True
            return Batch([], error)
        if failing is not None:
            self._failing = None
        return Batch(fetched)

    def _give_up(self, uid: int, answer: str) -> None:
        log.warning(
            "IMAP server could not deliver a message; publishing a placeholder (a dropped inquiry) in its place",
            connector=self.config.name,
            folder=self.folder,
            uid=uid,
            attempts=UNREADABLE_ATTEMPTS,
            error=answer,
        )

    async def _fetch(self, uids: list[int], sizes: dict[int, int], limit: int) -> list[Fetched]:
        small = [u for u in uids if sizes[u] <= limit]
        large = [u for u in uids if sizes[u] > limit]
        fetched = await self._call(self.session.fetch, small, sizes) if small else []
        if large:
            fetched += await self._call(self.session.fetch_heads, large, sizes)
        if len(fetched) < len(uids):  # expunged between SEARCH and FETCH: nothing left to read
            missing = sorted(set(uids) - {item.uid for item in fetched})
            log.info(
                "IMAP messages vanished before FETCH", connector=self.config.name, folder=self.folder, uids=missing
            )
        return sorted(fetched, key=lambda item: item.uid)

    async def _publish(self, batch: list[Fetched], info: FolderInfo) -> Sent:
        """Publish the batch in UID order, in parts NATS takes; how many from the first it acked, and why not more."""
        envelopes = [
            unreadable_envelope(self.config.name, self.folder, info.uidvalidity, item.uid, item.unreadable)
            if item.unreadable is not None
            else envelope_for(
                self.config.name,
                self.folder,
                info.uidvalidity,
                item.uid,
                item.data,
                size=item.size,
                truncated=item.truncated,
                internaldate=item.internaldate,
            )
            for item in batch
        ]
        return await send(envelopes, self._publish_part, self.window, on_refused=self._refused)

    async def _publish_part(self, envelopes: list[Envelope]) -> None:
        """Publish concurrently and wait for every ack; the first failure in UID order is raised, after all ended."""
        results = await asyncio.gather(*(self.context.publish(e) for e in envelopes), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _refused(self, size: int) -> None:
        if size == self.window.largest:
            log.warning(
                "NATS refused messages (the stream's ingest queue is full); publishing fewer at a time",
                connector=self.config.name,
                folder=self.folder,
            )

    async def _post_action(self, uids: list[int], info: FolderInfo) -> None:
        """Mark, flag or move the given (acknowledged) messages; a failure is reported, never blocks the checkpoint."""
        if self.config.post_action == "none" or not uids:  # no uids: only placeholders, nothing of them to mark
            return
        try:
            await self._call(self.session.post_action, uids, self.config.post_action, info.move)
        except Exception as exc:  # the mail is durable: report, but never re-publish or block the checkpoint
            log.warning(
                "IMAP post-action failed",
                connector=self.config.name,
                folder=self.folder,
                action=self.config.post_action,
                uids=f"{uids[0]}..{uids[-1]}",
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
            )
            self._report(post_action_error=f"{type(exc).__name__}: {str(exc)[:200]}")
        else:
            if self.status.get("post_action_error"):
                self._report(post_action_error=None)

    async def _checkpoint(self, uidvalidity: int, last_uid: int) -> None:
        value = {"uidvalidity": uidvalidity, "last_uid": last_uid, "synced_at": _now().isoformat()}
        async with in_store(), asyncio.timeout(self.config.timeout.total_seconds()):
            await save_state(self.context.engine, self.config.name, self.state_key, value)


def _now() -> datetime:
    return datetime.now(UTC)


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _by_bytes(uids: list[int], sizes: dict[int, int], count: int, limit: int) -> Iterator[list[int]]:
    """Consecutive groups of at most `count` UIDs and BATCH_BYTES (a message over `limit` counts its head only)."""
    group: list[int] = []
    total = 0
    for uid in uids:
        size = HEAD_BYTES if sizes[uid] > limit else sizes[uid]
        if group and (len(group) >= count or total + size > BATCH_BYTES):
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group
