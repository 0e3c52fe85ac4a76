"""The durable queue: the FastStream NATS broker, the streams and the bucket (declared here, only here), and
publishing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import structlog
from faststream.exceptions import IncorrectState
from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig

from leadhub.connectors.base import PublishResult, QueueBusy, QueueUnavailable
from leadhub.envelope import Envelope
from leadhub.hub.config import nats_servers
from leadhub.hub.stalled_store import StallWatch, not_stored
from leadhub.hub.stream_publisher import StreamPublisher
from leadhub.hub.throttled_log import ThrottledWarning
from leadhub.queue_errors import stream_missing
from leadhub.triggers import listeners

log = structlog.get_logger("leadhub.queue")

INBOUND = "INBOUND"
EVENTS = "EVENTS"
DEAD = "DEAD"
DAY = 86400.0
PUBLISH_TIMEOUT = 3.0
TOO_MANY_REQUESTS = 429  # a stream's answer when its ingest queue is full
REDECLARE_INTERVAL = 1.0  # seconds between two tries at declaring the streams again


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    retention: RetentionPolicy
    max_age: float  # 0: no limit
    discard: DiscardPolicy = DiscardPolicy.OLD  # which message goes when a limit is reached: the oldest, or the new one


STREAMS = (
    # Work queue: a message leaves the stream once the pipeline acks it after its commit, and only then: an item
    # a webhook answered 2xx for is never deleted for its age (the store away, no pipeline running), and a limit
    # NATS enforces refuses the publish (a 503) rather than dropping accepted items.
    StreamSpec(INBOUND, ["inbound.>"], RetentionPolicy.WORK_QUEUE, max_age=0, discard=DiscardPolicy.NEW),
    # Domain events stay for consumers that come later (trigger engine, replicas, backtests).
    StreamSpec(EVENTS, ["events.>"], RetentionPolicy.LIMITS, max_age=30 * DAY),
    StreamSpec(DEAD, ["dead.>"], RetentionPolicy.LIMITS, max_age=90 * DAY),
)


class StreamConflict(RuntimeError):
    """NATS will not create a stream, or change one it has, to leadhub's settings: trying again cannot help, and
    the start is refused with what to do."""

    def __init__(self, stream: str, exc: nats.js.errors.APIError, *, existing: bool) -> None:
        said = exc.description or str(exc)
        if existing:
            text = (
                f"NATS will not give the stream {stream} leadhub's settings: {said}; it was made by something else "
                "(an older release, an admin, another tool). Move its messages elsewhere if they matter, then delete "
                f"it (`nats stream rm {stream}`) and start again"
            )
        else:
            text = (
                f"NATS refuses to create the stream {stream}: {said}. Another stream holding its subjects must go "
                "first, and LEADHUB_STREAM_REPLICAS cannot be more than the NATS cluster's servers"
            )
        super().__init__(text)
        self.stream = stream


STREAM_NAME_IN_USE = 10058  # JetStream's answer to a create of a stream it has with other settings
REPLICAS_UNSUPPORTED = 10074  # replicas > 1 asked of a NATS that is not a cluster


UNAVAILABLE_ERRORS = (
    nats.errors.Error,
    nats.js.errors.Error,
    TimeoutError,
    IncorrectState,
    ConnectionError,
)


class Queue:
    """One NATS connection for the process; connectors publish through it, consumers pull from it."""

    def __init__(self, url: str, *, replicas: int = 1, duplicate_window: float = 30.0, name: str = "leadhub") -> None:
        self.url = url  # as given: workers are pointed at it
        self.servers = nats_servers(url)
        self.shown_url = ", ".join(self.servers)  # each with its scheme, so the log's redaction finds every token
        self.replicas = replicas
        self.duplicate_window = duplicate_window  # seconds a stream answers a repeated message id as a duplicate
        self.broker = NatsBroker(
            self.servers,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=5,
            allow_reconnect=True,
            logger=None,
            error_cb=self._connection_error,
            reconnected_cb=self._reconnected,
        )
        # The client retries without end and, with no logger, silently: say why, once per 10 s.
        self._connection_failed = ThrottledWarning(log, "NATS connection error; retrying", count_as="errors")
        self.on_state_change: Callable[[bool], Awaitable[None] | None] | None = None
        self._publisher: StreamPublisher | None = None
        self.stall_watch: StallWatch | None = None  # the embedded server's: restarted when it stops storing
        self._redeclaring: asyncio.Task[None] | None = None
        self._last_redeclare = -REDECLARE_INTERVAL

    async def start(self) -> None:
        await self.broker.start()
        await self.declare_streams()
        if self._publisher is None:  # once: the subscription outlives reconnects
            self._publisher = StreamPublisher(self.connection, PUBLISH_TIMEOUT)
            await self._publisher.start()
        log.info("queue connected", url=self.shown_url)

    async def stop(self) -> None:
        if self._redeclaring is not None:
            self._redeclaring.cancel()
        await self.broker.stop()

    async def _connection_error(self, exc: Exception) -> None:
        self._connection_failed(url=self.shown_url, error=f"{type(exc).__name__}: {exc}"[:300])

    async def _reconnected(self) -> None:
        self.restore_streams()

    def restore_streams(self) -> None:
        """Declare the streams again, in the background, at most once per REDECLARE_INTERVAL.

        A NATS server that comes back without its store (no volume, a recreated cluster) has no streams, and
        only `start()` declared them: every publish would find no stream and every fetch no consumer until a
        restart. Called after each reconnect and whenever a publish or a subscribe finds a stream missing;
        declaring a stream that is there changes nothing. The pipeline's durable consumer is its own: it is
        created again when the pipeline subscribes once more.
        """
        running = self._redeclaring is not None and not self._redeclaring.done()
        if running or time.monotonic() - self._last_redeclare < REDECLARE_INTERVAL:
            return
        self._last_redeclare = time.monotonic()
        self._redeclaring = asyncio.create_task(self._redeclare(), name="declare-streams")

    async def _redeclare(self) -> None:
        try:
            await self.declare_streams()
        except StreamConflict as exc:  # someone made it while leadhub ran: publishes fail until they remove it
            log.error("declaring the streams failed", error=str(exc))
            return
        except UNAVAILABLE_ERRORS as exc:  # tried again at the next publish or fetch that finds no stream
            log.warning("declaring the streams failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return
        log.info("streams declared", streams=",".join(spec.name for spec in STREAMS))

    @property
    def connection(self) -> Client:
        return self.broker.config.connection_state.connection

    @property
    def jetstream(self) -> JetStreamContext:
        return self.broker.config.connection_state.stream

    @property
    def connected(self) -> bool:
        try:
            return self.connection.is_connected
        except IncorrectState:
            return False

    def max_payload(self) -> int | None:
        """The server's `max_payload` (headers and payload of one message), None until connected."""
        if not self.connected:
            return None
        return self.connection.max_payload or None

    async def declare_streams(self) -> None:
        """Create or update each stream to match STREAMS; StreamConflict when JetStream will not (another storage type
        or retention, the subjects taken by another stream): a start that retried would never serve."""
        for spec in STREAMS:
            config = StreamConfig(
                name=spec.name,
                subjects=spec.subjects,
                retention=spec.retention,
                max_age=spec.max_age,
                storage=StorageType.FILE,
                discard=spec.discard,
                duplicate_window=self.duplicate_window,
                num_replicas=self.replicas,
            )
            await self._declare(spec.name, config)
        await self._declare_listeners()

    async def _declare_listeners(self) -> None:
        """Create the bucket where trigger replicas say which events their rules listen to (triggers/listeners.py).

        Its entries live seconds and every replica writes its own again within `listeners.REFRESH`: a bucket there
        with other settings (another replica count) is deleted and made again rather than updated."""
        config = KeyValueConfig(
            bucket=listeners.BUCKET, history=1, ttl=listeners.TTL, storage=StorageType.FILE, replicas=self.replicas
        )
        if not await self._created(f"KV_{listeners.BUCKET}", lambda: self.jetstream.create_key_value(config)):
            await self.jetstream.delete_key_value(listeners.BUCKET)
            await self.jetstream.create_key_value(config)

    async def _declare(self, name: str, config: StreamConfig) -> None:
        """Create the stream, or update it when it is there with other settings."""
        if await self._created(name, lambda: self.jetstream.add_stream(config)):
            return
        try:
            await self.jetstream.update_stream(config)
        except (nats.js.errors.BadRequestError, nats.js.errors.ServerError) as exc:
            raise StreamConflict(name, exc, existing=True) from exc

    async def _created(self, name: str, create: Callable[[], Awaitable[object]]) -> bool:
        """Make stream `name` (a bucket is one too): True when made or there as asked, False when it is there with
        other settings; StreamConflict for anything else NATS refuses."""
        try:
            await create()
            return True
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:  # its subjects another stream's, a setting NATS refuses
                raise StreamConflict(name, exc, existing=False) from exc
        except nats.js.errors.ServerError as exc:
            if exc.err_code == REPLICAS_UNSUPPORTED:
                raise StreamConflict(name, exc, existing=False) from exc
            raise
        return False

    async def publish_envelope(self, envelope: Envelope, *, msg_id: str | None = None) -> PublishResult:
        """Publish and wait for the stream's ack; QueueUnavailable unless the item is durable."""
        [duplicate] = await self._publish([(envelope.subject, envelope.payload, envelope.headers(msg_id))], INBOUND)
        return PublishResult(id=envelope.id, duplicate=duplicate)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], stream: str) -> bool:
        """Publish to a stream; True when the stream already had the message id."""
        [duplicate] = await self._publish([(subject, payload, headers)], stream)
        return duplicate

    async def publish_many(self, messages: list[tuple[str, bytes, dict[str, str]]], stream: str) -> None:
        """Publish a batch pipelined (no round trip per message) and wait until the stream has acked all."""
        await self._publish(messages, stream)

    async def _publish(self, messages: list[tuple[str, bytes, dict[str, str]]], stream: str) -> list[bool]:
        """Publish and wait for the stream's acks; per message, True when the stream already had its id."""
        if not self.connected or self._publisher is None:
            raise QueueUnavailable("not connected to NATS")
        try:
            acks = await self._publisher.publish(messages, stream)  # TimeoutError after PUBLISH_TIMEOUT
        except UNAVAILABLE_ERRORS as exc:
            if self.stall_watch is not None and self.connected and not_stored(exc):
                self.stall_watch.not_stored()
            if stream_missing(exc):
                self.restore_streams()
            busy = isinstance(exc, nats.js.errors.APIError) and exc.code == TOO_MANY_REQUESTS
            raise (QueueBusy if busy else QueueUnavailable)(f"{type(exc).__name__}: {exc}") from exc
        if self.stall_watch is not None:
            self.stall_watch.acknowledged()
        return acks

    async def ping(self, timeout: float = 2.0) -> bool:  # noqa: ASYNC109
        """True when NATS answers a round trip and JetStream has the INBOUND stream webhooks are published to."""
        if not self.connected:
            return False
        try:
            await asyncio.wait_for(self.jetstream.stream_info(INBOUND), timeout)
        except (TimeoutError, *UNAVAILABLE_ERRORS) as exc:
            if stream_missing(exc):
                self.restore_streams()
            return False
        return True
