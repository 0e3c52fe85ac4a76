"""The daemon: wires queue, store, connectors, pipeline, relay and HTTP together, and stops them in order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub import __version__
from leadhub.connectors.base import ConnectorContext, Stop
from leadhub.connectors.failure_reason import FAILURE_REASONS as CONNECTOR_FAILURE_REASONS
from leadhub.connectors.registry import CONNECTOR_TYPES
from leadhub.error_text import brief
from leadhub.hub.config import HubConfig, local_url
from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.hub.exited_metrics import fold_exited_process
from leadhub.hub.http.app import create_app
from leadhub.hub.http.state import HttpDeps
from leadhub.hub.metrics import Metrics, share_between_processes, start_counted_series_at_zero
from leadhub.hub.migrate_child import upgrade_in_child
from leadhub.hub.queue import Queue, StreamConflict
from leadhub.hub.stalled_store import StallWatch
from leadhub.hub.store_health import StoreHealth
from leadhub.hub.workers import (
    WorkerPool,
    WorkerSpec,
    relaying_processes,
    roles_run_nowhere,
    tell_primary_ready,
    unrun_roles_note,
)
from leadhub.pipelines.consumer import InboundConsumer, Stats
from leadhub.pipelines.dead_letters import DeadLetterSink
from leadhub.pipelines.failures import classify
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.pipelines.outbox_relay import OutboxRelay
from leadhub.private_files import make_private_dir, others_can_read
from leadhub.store.db import (
    SchemaNewerThanCode,
    applied_revisions,
    create_engine,
    redacted_url,
    refuse_newer,
    upgrade,
)
from leadhub.store.outbox import MAX_SHARES
from leadhub.store.young_tables import YoungTableStatistics
from leadhub.triggers.actions import ACTIONS
from leadhub.triggers.clock import Clock
from leadhub.triggers.service import TriggerService

BACKGROUND_NICENESS = 10  # a pipeline-only worker's CPU priority below the process that answers webhooks
GC_YOUNG_THRESHOLD = 10_000  # objects allocated between young collections (Python's default: 700)
PRE_START_SCHEMA_WAIT = 5.0  # seconds the start waits to read alembic_version before it leaves that to the store side
log = structlog.get_logger("leadhub")


async def retry_forever(
    what: str,
    action: Callable[[], Awaitable[Any]],
    stopping: asyncio.Event,
    give_up_on: tuple[type[Exception], ...] = (),
) -> Any:
    """Run `action` until it succeeds or the daemon stops, logging each failure with back-off.

    An exception of a `give_up_on` type is raised at once: trying again cannot help.
    """
    delay = 0.5
    while True:
        try:
            return await action()
        except Exception as exc:
            if stopping.is_set() or isinstance(exc, give_up_on):
                raise
            log.warning(f"{what} failed; retrying", error=f"{type(exc).__name__}: {str(exc)[:300]}", retry_in=delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
        if stopping.is_set():
            raise asyncio.CancelledError(f"stopped while waiting for {what}")
        delay = min(10.0, delay * 2)


class Hub:
    """One leadhub process. `start()` returns once HTTP is serving; `stop()` drains and exits cleanly."""

    def __init__(
        self,
        config: HubConfig,
        *,
        clock: Clock | None = None,
        worker: int = 0,
        ready_fd: int | None = None,
        relay_share: tuple[int, int] | None = None,
        migrate_in_child: bool = False,
    ) -> None:
        self.config = config
        self.clock = clock  # None: the system clock; tests pass a ManualClock
        self.settings = config.settings
        self.worker = worker  # 0: the primary; 1..workers-1: a worker process it started (hub/workers.py)
        self.metrics = Metrics(self._shared_metrics_dir())
        self.workers: WorkerPool | None = None
        self.ready_fd = ready_fd  # a worker writes to it once it serves (hub/workers.py)
        self.relay_share = relay_share  # a worker's share of the outbox and the number of shares, from the primary
        self.migrate_in_child = migrate_in_child  # `leadhub run`: alembic stays out (hub/migrate_child.py)
        self.embedded: EmbeddedNats | None = None
        self.queue: Queue | None = None
        self.engine: AsyncEngine | None = None
        self.runner: web.AppRunner | None = None
        self.connectors: dict[str, Any] = {}
        self.connector_status: dict[str, dict[str, Any]] = {}
        self.connector_stops: list[Stop] = []
        self.consumer: InboundConsumer | None = None
        self.relay: OutboxRelay | None = None
        self.young_tables: YoungTableStatistics | None = None
        self.triggers: TriggerService | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()
        self.failed = asyncio.Event()  # set with `failure` when the daemon cannot go on (run_until_signalled exits)
        self.failure: Exception | None = None
        self.failed_tasks: dict[str, str] = {}  # a background task's name -> the error it ended with (/readyz)
        self.port: int | None = None
        self.store_ready = False
        self.store_health = StoreHealth(lambda: self.engine if self.store_ready else None)

    @property
    def roles(self) -> tuple[str, ...]:
        return self.settings.roles

    @property
    def several_processes(self) -> bool:
        return self.settings.workers > 1 or self.worker > 0

    def _shared_metrics_dir(self) -> Path | None:
        """With worker processes, metrics live in files under the data dir so /metrics gives the totals."""
        if not self.several_processes:
            return None
        directory = self.settings.data_dir.resolve() / "metrics"
        share_between_processes(directory, fresh=self.worker == 0)
        return directory

    async def start(self) -> None:
        created = make_private_dir(self.settings.data_dir)
        log.info(
            "starting leadhub" if self.worker == 0 else "starting worker",
            version=__version__,
            roles=",".join(self.roles),
            config=str(self.config.source or "(defaults)"),
        )
        if not created and self.worker == 0:
            _warn_if_others_can_read(self.settings.data_dir)
        if self.worker == 0 and (missing := roles_run_nowhere(self.settings)):
            log.warning(
                "roles run by no process of this daemon", roles=",".join(missing), note=unrun_roles_note(self.settings)
            )
        self.engine = create_engine(self.settings.effective_database_url)
        await self._refuse_a_newer_database(self.engine)
        url = self.settings.nats_url
        if url is None:
            self.embedded = EmbeddedNats(self.settings.data_dir)
            url = await self.embedded.start()
        self.queue = Queue(
            url, replicas=self.settings.stream_replicas, duplicate_window=self.settings.duplicate_window_seconds
        )
        if self.embedded is not None:
            self.queue.stall_watch = StallWatch(self.embedded.restart_stalled)
        await retry_forever("connecting to NATS", self.queue.start, self.stopping, give_up_on=(StreamConflict,))
        self._build_connectors()
        webhooks = [name for name, connector in self.connectors.items() if hasattr(connector, "handle")]
        start_counted_series_at_zero(self.metrics, webhooks=webhooks, action_types=ACTIONS)
        if self.worker == 0 or "http" in self.roles:
            await self._start_http()
        else:  # a worker without http leaves the shared port to the others, and the CPU to them when it is short
            _yield_cpu_to_webhooks()
        self._watch(asyncio.create_task(self._start_store_side(), name="store-side"))

    def _watch(self, *tasks: asyncio.Task[None]) -> None:
        """Keep a background task, to wait for at the stop and to hear of if it fails."""
        for task in tasks:
            task.add_done_callback(self._task_done)
            self.tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A background task that fails stops the daemon, which exits with an error: without it the daemon only
        looks ready (the store side not started: no pipeline, no relay; the pipeline gone: webhooks accepted and
        never stored), and its exception would surface, if ever, as "Task exception was never retrieved"."""
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if self.stopping.is_set():  # the stop cut it short (a migration killed by the same signal)
            log.warning("background task failed while stopping", task=task.get_name(), error=brief(exc))
            return
        log.error("background task failed; stopping", task=task.get_name(), exc_info=exc)
        self.failed_tasks[task.get_name()] = brief(exc)
        if self.failure is None:
            self.failure = BackgroundTaskFailed(task.get_name(), exc)
        self.failed.set()

    async def _refuse_a_newer_database(self, engine: AsyncEngine) -> None:
        """Raise SchemaNewerThanCode before NATS, HTTP or a worker starts: this release must not serve on such a
        database, not even for the moment the store side takes to find out. A database that does not answer in
        time is left to the store side, which waits for it (a database still starting is no reason to exit)."""
        try:
            applied = await asyncio.wait_for(applied_revisions(engine), PRE_START_SCHEMA_WAIT)
        except Exception as exc:  # away, refusing, slow: the store side's retries say so in the log
            log.debug("schema not checked before start", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            return
        refuse_newer(applied)

    def _build_connectors(self) -> None:
        assert self.queue is not None
        context = ConnectorContext(
            publish=self.queue.publish_envelope,
            engine=self.engine,
            public_url=self.settings.public_url,
            data_dir=self.settings.data_dir,
            report=self._connector_report,
            failed=lambda name, reason: self.metrics.connector_failures.labels(name, reason).inc(),
            max_payload=self.queue.max_payload,
        )
        for connector_config in self.config.connectors:
            connector_type = CONNECTOR_TYPES[connector_config.type]
            connector = self.connectors[connector_config.name] = connector_type(connector_config, context)
            if not hasattr(connector, "handle") and self.worker == 0:  # a pull connector (they run in the primary)
                # every reason at 0 before the first attempt ends: a series born at 1 hides that failure from increase()
                for reason in CONNECTOR_FAILURE_REASONS:
                    self.metrics.connector_failures.labels(connector_config.name, reason)

    def _connector_report(self, name: str, status: dict[str, Any]) -> None:
        """A pull connector's liveness: kept for /readyz detail and exported as metrics."""
        self.connector_status[name] = status
        self.metrics.connector_ok.labels(name).set(1 if status.get("ok") else 0)
        if last_sync := status.get("last_sync"):
            with contextlib.suppress(TypeError, ValueError):
                self.metrics.connector_last_sync.labels(name).set(datetime.fromisoformat(str(last_sync)).timestamp())
        if (lag := status.get("uid_lag")) is not None:
            with contextlib.suppress(TypeError, ValueError):
                self.metrics.connector_lag.labels(name).set(float(lag))

    async def _start_http(self) -> None:
        deps = HttpDeps(
            settings=self.settings,
            metrics=self.metrics,
            connectors=self.connectors,
            engine=lambda: self.engine if self.store_ready else None,
            queue_ready=self._queue_ready,
            store_problem=self.store_health.problem,
            readiness_detail=self._readiness_detail,
            clock=self.clock,
            worker=self.worker,
        )
        self.runner = web.AppRunner(
            create_app(deps, intake="http" in self.roles),
            access_log=None,
            # half the stop's budget for requests in flight, half for the work behind them (stop): a client
            # trickling a body must not hold the stop past what `docker stop` waits before SIGKILL (10 s)
            shutdown_timeout=self.settings.shutdown_timeout / 2,
        )
        await self.runner.setup()
        shared_port = True if self.several_processes else None  # workers bind the primary's port (SO_REUSEPORT)
        if shared_port and self.worker == 0:
            _refuse_a_taken_port(self.settings.http_host, self.settings.http_port)
        site = web.TCPSite(
            self.runner, self.settings.http_host, self.settings.http_port, reuse_address=True, reuse_port=shared_port
        )
        try:
            await site.start()
        except OSError as exc:  # a host that does not resolve said only "Name or service not known"
            raise _cannot_listen(self.settings.http_host, self.settings.http_port, exc) from exc
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.http_port
        log.info("HTTP serving", address=f"http://{self.settings.http_host}:{self.port}")

    async def _queue_ready(self) -> bool:
        return self.queue is not None and await self.queue.ping()

    def _readiness_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {}
        if self.consumer is not None:
            detail["pipeline"] = {"ok": self.consumer.healthy, "error": self.consumer.last_error}
        if self.relay is not None:
            detail["relay"] = {"ok": self.relay.last_error is None, "error": self.relay.last_error}
        if self.triggers is not None:
            detail["triggers"] = self.triggers.status()
        if self.workers is not None:
            detail["workers"] = self.workers.status()
        for name, status in self.connector_status.items():
            detail[f"connector:{name}"] = status
        for name, error in self.failed_tasks.items():
            detail[name] = {"ok": False, "error": error}
        return detail

    async def _migrate(self, engine: AsyncEngine) -> None:
        if not self.migrate_in_child:
            await upgrade(engine)
            return
        await upgrade_in_child(engine, log_level=self.settings.log_level, log_format=self.settings.log_format)

    async def _start_store_side(self) -> None:
        """Migrate (waiting for the database if it is away), then run pipeline, relay and pull connectors.

        A stop can begin at each await here (the migration above all); it stops what has started and then waits
        for this task. Nothing starts after that: it would run on unstopped while the queue and store close.
        """
        assert self.engine is not None and self.queue is not None
        engine, queue = self.engine, self.queue
        try:
            await retry_forever(
                "migrating the database",
                lambda: self._migrate(engine),
                self.stopping,
                give_up_on=(SchemaNewerThanCode,),
            )
        except asyncio.CancelledError:
            return
        except SchemaNewerThanCode as exc:  # this release cannot use the database: stop instead of half-working
            self.failure = exc
            self.failed.set()
            return
        if self.stopping.is_set():  # migrated while the stop went by
            return
        self.store_ready = True
        log.info("store ready", url=redacted_url(self.settings.effective_database_url))
        if "relay" in self.roles:
            m = self.metrics
            share = self._relay_share()
            if share[0] < share[1]:  # past the 36th process there is no share left to relay
                self.relay = OutboxRelay(
                    engine,
                    queue.publish_many,
                    m.events_published.inc,
                    m.outbox_pending.set,
                    share,
                    on_failure=lambda reason: m.relay_failures.labels(reason).inc(),
                    on_dead=lambda error: m.dead_letters.labels(error).inc(),
                )
                self._watch(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        if "triggers" in self.roles:
            self.triggers = self._build_triggers(engine, queue)
            self._watch(*self.triggers.start())
        if "pipeline" in self.roles:
            self.young_tables = YoungTableStatistics(engine)
            await self.young_tables.start()
            if self.stopping.is_set():
                return
            self.consumer = self._build_consumer(engine, queue)
            self._watch(asyncio.create_task(self.consumer.run(), name="inbound-consumer"))
        if self.worker > 0:
            tell_primary_ready(self.ready_fd)
            return  # pull connectors poll from the primary only; a webhook connector's start does nothing
        if self.settings.workers > 1 and not self.stopping.is_set():
            self._start_workers(queue.url)
        await self._start_connectors()

    async def _start_connectors(self) -> None:
        """Start each connector until a stop begins. One whose start the stop overtook (a start may await) is
        stopped here: the stop's pass over `connector_stops` has gone by."""
        for connector in self.connectors.values():
            if self.stopping.is_set():
                return
            stop = await connector.start()
            if self.stopping.is_set():
                await stop()
                return
            self.connector_stops.append(stop)

    def _relay_share(self) -> tuple[int, int]:
        """Which share of the outbox this process relays, of how many (shares are cut by subject, hub/workers.py)."""
        if self.relay_share is not None:
            index, count = self.relay_share
        elif self.several_processes:
            index, count = 0, relaying_processes(self.settings)
        else:
            index, count = 0, 1
        return index, min(count, MAX_SHARES)

    def _start_workers(self, nats_url: str) -> None:
        assert self.port is not None and self.metrics.shared_dir is not None
        spec = WorkerSpec.of(self.config, nats_url, self.port)
        shared_dir = self.metrics.shared_dir
        self.workers = WorkerPool(spec, self.settings.workers, on_exit=lambda pid: fold_exited_process(shared_dir, pid))
        self.workers.start()

    def _build_triggers(self, engine: AsyncEngine, queue: Queue) -> TriggerService:
        s, m = self.settings, self.metrics
        return TriggerService(
            engine,
            lambda: queue.jetstream,
            rules_dir=s.rules_dir,
            templates_dir=s.templates_dir,
            smtp_url=s.smtp_url.get_secret_value() if s.smtp_url else None,
            public_url=s.public_url,
            local_url=local_url(s.http_host, s.http_port),
            clock=self.clock,
            on_reload=lambda rules, problems: (
                m.rules_loaded.set(rules),
                m.rule_problems.set(problems),
                m.rule_reloads.inc(),
            ),
            on_action=lambda action_type, outcome: m.action_runs.labels(action_type, outcome).inc(),
            on_store_error=lambda exc: m.store_errors.labels("scheduler", classify(exc).value).inc(),
        )

    def _build_consumer(self, engine: AsyncEngine, queue: Queue) -> InboundConsumer:
        sources = {c.name: SourceSpec(c.type, c.model_dump(mode="json")) for c in self.config.connectors}
        pipeline = IntakePipeline(
            engine, sources, default_region=self.settings.default_region, policy=self.settings.identity_policy
        )
        m = self.metrics
        dead = DeadLetterSink(engine, queue.publish, lambda reason: m.dead_letters.labels(reason).inc())
        stats = Stats()
        young_tables = self.young_tables
        stats.on_batch = lambda stored, dup, lag: (
            young_tables is not None and young_tables.count(stored),
            m.batch_size.observe(stored + dup),
            m.pipeline_lag.set(lag),
            m.processed.labels("stored").inc(stored),
            m.processed.labels("duplicate").inc(dup),
        )
        stats.on_outcome = lambda outcome, n: m.processed.labels(outcome).inc(n)
        stats.on_events = m.outbox_written.inc

        def on_pending(waiting: int) -> None:
            m.pipeline_pending.set(waiting)
            if waiting == 0:  # nothing waits: no lag (the gauge kept a drained backlog's last age)
                m.pipeline_lag.set(0)

        stats.on_pending = on_pending
        stats.on_store_error = lambda kind: m.store_errors.labels("pipeline", kind).inc()
        wake = self.relay.wake if self.relay else (lambda: None)
        return InboundConsumer(
            lambda: queue.jetstream,
            pipeline,
            dead,
            batch_size=self.settings.pipeline_batch_size,
            max_deliveries=self.settings.pipeline_max_deliveries,
            on_committed=wake,
            on_stream_missing=queue.restore_streams,
            stats=stats,
            # Parse the next batch during a store only where the store works in another process (PostgreSQL)
            # and no webhooks share this event loop: they come first (BENCHMARKS.md, eighth session).
            read_ahead=engine.dialect.name != "sqlite" and "http" not in self.roles,
        )

    async def stop(self) -> None:
        """Stop accepting, finish in-flight work, then close the queue, the store and the NATS child.

        Requests in flight get half of `shutdown_timeout` and the work behind them the other half, so a stop
        takes at most that long plus the few seconds of closing (queue 2 s, NATS 2 s, store 3 s at worst).
        """
        if self.stopping.is_set():
            return
        self.stopping.set()
        log.info("stopping leadhub")
        timer = _StepTimer()
        stopping_workers = (
            asyncio.create_task(self.workers.stop(self.settings.shutdown_timeout)) if self.workers is not None else None
        )
        if self.runner is not None:
            await self.runner.cleanup()
        timer.step("http")
        await self._stop_work()
        timer.step("tasks")
        if stopping_workers is not None:
            await stopping_workers  # before the queue: they finish their batches on the primary's NATS
            timer.step("workers")
        if self.queue is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.queue.stop(), 2)
        timer.step("queue")
        if self.embedded is not None:
            await self.embedded.stop(timeout=2)
        timer.step("nats")
        if self.engine is not None:
            try:  # a database that stopped answering must not hold up the exit
                await asyncio.wait_for(self.engine.dispose(), 3)
            except (TimeoutError, Exception) as exc:
                log.warning("closing database connections failed", error=f"{type(exc).__name__}: {exc}")
        log.info("stopped", **timer.steps)

    async def _stop_work(self) -> None:
        """Connectors, pipeline, relay and rule engine: each finishes what it has in hand, within half the timeout.

        Then what is left is cancelled. A rule action may take longer (a webhook 10 s, SMTP 15 s), more than
        `docker stop` waits before SIGKILL (10 s): the cancelled scheduler records the actions of its batch that
        ended (an e-mail sent) and gives back the others, which the next start runs at once (docs/rules.md).
        """
        for stop in self.connector_stops:
            with contextlib.suppress(Exception):
                await stop()
        if self.consumer is not None:
            self.consumer.stop()
        if self.relay is not None:
            self.relay.stop()
        if self.triggers is not None:
            self.triggers.stop()
        if self.young_tables is not None:
            await self.young_tables.stop()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=self.settings.shutdown_timeout / 2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


class BackgroundTaskFailed(RuntimeError):
    """A part of the running daemon ended with an error nothing expected; `leadhub run` exits 1 saying which."""

    def __init__(self, task: str, error: BaseException) -> None:
        super().__init__(f"{task} failed: {brief(error)}")
        self.__cause__ = error


class _StepTimer:
    """Seconds spent in each shutdown step, logged so a slow stop says where the time went."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._last = time.perf_counter()

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = round(now - self._last, 3)
        self._last = now


def _warn_if_others_can_read(data_dir: Path) -> None:
    """An existing data dir keeps the mode the admin gave it, but one open to others is said at every start."""
    if others_can_read(data_dir):
        log.warning(
            "the data dir can be read by other users: it holds every contact and the key that signs survey and "
            "unsubscribe links; make it the leadhub user's only (chmod 700)",
            data_dir=str(data_dir),
            mode=oct(data_dir.stat().st_mode & 0o777),
        )


def _cannot_listen(host: str, port: int, exc: OSError) -> OSError:
    return OSError(f"cannot listen on {host}:{port} (http_host, http_port): {exc.strerror or exc}")


def _refuse_an_address_it_cannot_listen_on(host: str, port: int) -> None:
    """Tried before the data dir, the embedded NATS and the database are made: a port another program holds (or an
    address not on this machine) left a new data dir with a database and NATS's files behind. The real bind can
    still fail (the port taken meanwhile); it says the same."""
    try:
        _refuse_a_taken_port(host, port)
    except OSError as exc:
        raise _cannot_listen(host, port, exc) from exc


def _refuse_a_taken_port(host: str, port: int) -> None:
    """With workers the primary binds with SO_REUSEPORT, and so would the kernel let it share a port that another
    program of the same user holds the same way (another leadhub with workers): requests would be spread over two
    daemons without a word. A bind without SO_REUSEPORT first fails there, as a single process's bind does."""
    if port == 0:
        return
    for family, kind, proto, _, address in socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the real bind: TIME_WAIT is no owner
            try:
                probe.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"error while attempting to bind on address {address!r}: {exc.strerror}"
                ) from None


def _yield_cpu_to_webhooks() -> None:
    """Lower this worker's CPU priority: when cores are short, webhooks are answered first and the backlog
    waits in JetStream. Measured on two cores against the same code without it (BENCHMARKS.md): 1.06-1.36x the
    accepted/s during a burst, the same leads/s in all."""
    try:
        niceness = os.nice(BACKGROUND_NICENESS)
    except OSError as exc:  # not allowed here (a restricted container): run at the same priority
        log.warning("could not lower this worker's CPU priority", error=str(exc))
        return
    log.info("worker without http: CPU priority lowered", niceness=niceness)


def _settle_garbage_collector() -> None:
    """Keep the collector's full passes short: they stall the event loop, and that is the latency tail.

    What start-up created (modules, compiled SQL, rules) lives for the whole run: frozen, later full
    collections skip it. The young generation is collected less often; a request's garbage is mostly
    freed by reference counting anyway.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 50)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # their default action would kill the process without a stop


def _ignore_signal(sig: signal.Signals) -> None:
    log.warning("signal ignored: rule files reload when they change, other settings take a restart", signal=sig.name)


async def run_until_signalled(
    config: HubConfig, worker: int = 0, ready_fd: int | None = None, relay_share: tuple[int, int] | None = None
) -> None:
    """`leadhub run`: start, wait for SIGTERM, SIGINT or SIGHUP, stop within the shutdown timeout.

    A failure the daemon cannot work past (a database a newer release migrated) stops it the same way, then
    raises that error.

    SIGHUP (a closed terminal, or `kill -HUP` out of habit) stops cleanly too, instead of killing the process
    on the spot; SIGUSR1 and SIGUSR2 are logged and ignored (there is nothing to reload: rule files are
    reloaded when they change, other settings take a restart).
    """
    if worker:
        structlog.contextvars.bind_contextvars(worker=worker)
    else:  # the primary always serves HTTP
        _refuse_an_address_it_cannot_listen_on(config.settings.http_host, config.settings.http_port)
    hub = Hub(config, worker=worker, ready_fd=ready_fd, relay_share=relay_share, migrate_in_child=True)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop_requested.set)
    for sig in IGNORED_SIGNALS:
        loop.add_signal_handler(sig, _ignore_signal, sig)
    start = asyncio.create_task(hub.start())
    waiter = asyncio.create_task(stop_requested.wait())
    failed = asyncio.create_task(hub.failed.wait())
    try:
        await asyncio.wait({start, waiter, failed}, return_when=asyncio.FIRST_COMPLETED)
        if start.done():
            start.result()  # raise start-up errors
            _settle_garbage_collector()
            await asyncio.wait({waiter, failed}, return_when=asyncio.FIRST_COMPLETED)
        else:
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await start
    finally:
        waiter.cancel()
        failed.cancel()
        await hub.stop()
    if hub.failure is not None:
        raise hub.failure  # after a clean stop: the command line says why and exits with its status
