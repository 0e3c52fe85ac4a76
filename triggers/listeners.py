"""What every live trigger replica's rules listen to: one entry per replica in a NATS KV bucket.

Replicas share one durable event consumer, so its filter must cover what all their rules listen to: a replica that
set its own (a rules change rolled out host by host, a replica restarted with older rules) took the others' types out
of it, and NATS moved the consumer past their events for good. Each replica keeps its subjects under a key of its
own, written again every REFRESH seconds; the bucket forgets an entry TTL seconds after its last write (a replica
killed or cut off), and a replica that stops deletes its entry. The bucket is declared with the streams
(hub/queue.py).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

log = structlog.get_logger("leadhub.triggers")

BUCKET = "TRIGGER_LISTENERS"
TTL = 30.0  # seconds an entry lives without being written again: three refreshes missed, the replica is gone
REFRESH = 10.0  # seconds between two writes of a replica's entry (and two checks of the consumer's filter)
READ_TIMEOUT = 5.0  # seconds reading the entries may take


class Listeners:
    """This replica's entry in the bucket, and the entries of the others."""

    def __init__(self, jetstream: Callable[[], JetStreamContext]) -> None:
        self.jetstream = jetstream
        self.key = secrets.token_hex(8)  # this replica's, for as long as it runs
        self._missing_said = False
        self._others: list[list[str]] = []  # the other replicas' subjects, as last read

    async def everyone(self, own: list[str]) -> list[list[str]]:
        """Write this replica's subjects; the subjects of every live replica, its own included.

        Without the bucket (a NATS that came back without its store, until the queue declares it again) only its
        own: a single replica's filter, as before there were entries. A bucket that cannot be written or read (a full
        disk, a cluster without its leader) leaves the others' subjects as last read: events keep being taken."""
        bucket = await self._bucket()
        if bucket is None:
            return [own]
        try:
            await bucket.put(self.key, json.dumps(own).encode())
            self._others = [subjects for key, subjects in (await _entries(bucket)).items() if key != self.key]
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            log.warning("replicas' listened events not written or read; using those last read", error=str(exc)[:200])
        return [own, *self._others]

    async def leave(self) -> None:
        """Delete this replica's entry at its stop, so the others narrow the filter without waiting for the TTL."""
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):  # it expires anyway
            if (bucket := await self._bucket()) is not None:
                await bucket.delete(self.key)

    async def _bucket(self) -> KeyValue | None:
        try:
            bucket = await self.jetstream().key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            if not self._missing_said:
                log.warning("no bucket of replicas' listened events; taking this replica's events only", bucket=BUCKET)
                self._missing_said = True
            return None
        self._missing_said = False
        return bucket


async def _entries(bucket: KeyValue) -> dict[str, list[str]]:
    """Each live entry's subjects (an unreadable one is left out: the filter then covers the others')."""
    entries: dict[str, list[str]] = {}
    watcher = await bucket.watchall(ignore_deletes=True, inactive_threshold=READ_TIMEOUT)  # the server drops it then
    try:
        while (entry := await watcher.updates(timeout=READ_TIMEOUT)) is not None:  # None: no more entries
            try:
                subjects = json.loads(entry.value or b"")
            except ValueError:
                subjects = None
            if isinstance(subjects, list) and all(isinstance(subject, str) for subject in subjects):
                entries[entry.key] = subjects
            else:
                log.warning("unreadable entry of a replica's listened events left out", key=entry.key)
    finally:
        await watcher.stop()
    return entries
