"""Prometheus metrics, one registry per hub so tests and replicas in one process never collide.

With several worker processes (`workers`), every process writes its values to files in one
directory (prometheus_client's multiprocess mode), so whichever process answers `/metrics` gives
the totals of all of them; an exited worker's are folded into one file per type (hub/exited_metrics.py).
Those files are memory-mapped; their blocks are reserved before they are mapped (ReservedMmapedDict),
so a full disk costs metrics, not the process.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from prometheus_client.mmap_dict import MmapedDict

from leadhub.hub.exited_metrics import files_locked
from leadhub.pipelines.consumer import OUTCOMES as PIPELINE_OUTCOMES
from leadhub.pipelines.failures import Failure
from leadhub.pipelines.outbox_relay import FAILURE_REASONS as RELAY_FAILURE_REASONS
from leadhub.triggers.scheduler import OUTCOMES as ACTION_OUTCOMES

log = structlog.get_logger("leadhub.metrics")

# A gauge in several processes: the highest value among the live ones (lag, pending, a connector's state).
LIVE_MAX = "livemax"
INITIAL_FILE_SIZE = 1 << 16  # prometheus_client's first size of a values file (it doubles it to grow)
ENTRY_OVERHEAD = 28  # an entry is its key's UTF-8 and at most this much more (length, padding, value, timestamp)


def share_between_processes(directory: Path, *, fresh: bool) -> None:
    """Keep this process's metric values in `directory`; `fresh` (the primary, at start) drops a previous run's."""
    if fresh:
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.MmapedDict = ReservedMmapedDict  # what prometheus_client's multiprocess values open their files with
    values.ValueClass = values.get_value_class()  # chosen at import; metrics made from now on use the files


class ReservedMmapedDict(MmapedDict):
    """prometheus_client's file of one process's values, its blocks allocated before they are mapped.

    prometheus_client sizes the file with truncate(), which leaves it sparse: on a full filesystem the first write
    to a page not yet allocated is a SIGBUS, and the process dies without a word (and again at each restart: a new
    series appears just when trouble starts). posix_fallocate reserves the blocks, or says ENOSPC; then this
    process keeps its values in memory from there on, left out of /metrics, and logs why.
    """

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            try:
                _allocate(filename)
            except OSError as exc:
                _not_shared(filename, exc)
                self._fname, self._f, self._positions, self._used = filename, None, {}, 8
                self._m, self._capacity = mmap.mmap(-1, INITIAL_FILE_SIZE), INITIAL_FILE_SIZE
                return
        super().__init__(filename, read_mode)

    def _init_value(self, key: str) -> None:
        capacity = self._capacity
        while self._used + len(key.encode()) + ENTRY_OVERHEAD > capacity:
            capacity *= 2
        if capacity > self._capacity:
            self._reserve(capacity)
        super()._init_value(key)

    def _reserve(self, capacity: int) -> None:
        """The blocks for growing to `capacity` (prometheus_client then grows within them); else go on in memory."""
        if self._f is not None:
            try:
                os.posix_fallocate(self._f.fileno(), 0, capacity)
                return
            except OSError as exc:
                _not_shared(self._fname, exc)
                self._f.close()
                self._f = None
        grown = mmap.mmap(-1, capacity)
        grown[: self._used] = self._m[: self._used]
        self._m.close()
        self._m, self._capacity = grown, capacity


def _allocate(filename: str) -> None:
    """Allocate the blocks of the file's size; a new file is made under another name and renamed into place once
    its first blocks are allocated: a scrape in another process reads every *.db file and failed on one still empty
    (each start of a worker was a moment when /metrics answered 500)."""
    if os.path.exists(filename):
        _allocate_blocks(filename, os.O_RDWR, remove_if_empty=filename)
        return
    new = os.path.join(os.path.dirname(filename), f".{os.path.basename(filename)}.new")  # not *.db: not read
    _allocate_blocks(new, os.O_RDWR | os.O_CREAT | os.O_TRUNC, remove_if_empty=new)
    os.replace(new, filename)


def _allocate_blocks(path: str, flags: int, *, remove_if_empty: str) -> None:
    """At least the first blocks of `path` allocated; one left empty when that fails is removed (unreadable)."""
    fd = os.open(path, flags, 0o666)
    try:
        try:
            os.posix_fallocate(fd, 0, max(os.fstat(fd).st_size, INITIAL_FILE_SIZE))
        except OSError:
            if os.fstat(fd).st_size == 0:
                os.unlink(remove_if_empty)
            raise
    finally:
        os.close(fd)


def _not_shared(filename: str, exc: OSError) -> None:
    log.error(
        "metrics file cannot be written; this process's values stay in memory, out of /metrics until it restarts",
        file=filename,
        error=os.strerror(exc.errno) if exc.errno else str(exc),
        disk_full=exc.errno == errno.ENOSPC,
    )


@dataclass(frozen=True, slots=True)
class WebhookMetrics:
    """One webhook connector's labelled children, looked up once: labels() checks and locks on every call."""

    accepted: Any
    duplicates: Any
    latency: Any


# The webhook refusals examples/prometheus-alerts.yml alerts on: a queue away (503), a wrong secret (401).
ALERTED_REJECTIONS = ("queue_unavailable", "bad_signature", "bad_token")
# Each operation's store error kinds, as counted: the pipeline and scheduler classify (pipelines/failures.py), the
# pipeline also counts a dead letter it could not write, the API and pages a store not usable yet.
STORE_ERROR_KINDS = {
    "pipeline": (*(kind.value for kind in Failure), "dead_letter"),
    "scheduler": tuple(kind.value for kind in Failure),
    "api": ("unavailable",),
    "pages": ("unavailable",),
}


def start_counted_series_at_zero(metrics: Metrics, *, webhooks: Iterable[str], action_types: Iterable[str]) -> None:
    """Create at 0 the labelled counters the alerts take increase() or rate() of, for every bounded label value.

    A series born holding its first count has no earlier sample, so increase() never sees that count: the first
    dead letter, failed action or refused webhook after a start would raise no alert. (Each worker process
    writes its zeros to its own file; the totals add them up.)
    """
    for outcome in PIPELINE_OUTCOMES:
        metrics.processed.labels(outcome)
    for action_type in action_types:
        for outcome in ACTION_OUTCOMES:
            metrics.action_runs.labels(action_type, outcome)
    for connector in webhooks:
        for reason in ALERTED_REJECTIONS:
            metrics.rejected.labels(connector, reason)
    for operation, kinds in STORE_ERROR_KINDS.items():
        for kind in kinds:
            metrics.store_errors.labels(operation, kind)


class Metrics:
    def __init__(self, shared_dir: Path | None = None) -> None:
        """`shared_dir`: the directory `share_between_processes` set up, when several processes share the totals."""
        self.shared_dir = shared_dir
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter("leadhub_http_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.hook_latency = Histogram(
            "leadhub_hook_seconds",
            "Time to answer a webhook (publish ack included)",
            ["connector"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.accepted = Counter("leadhub_intake_accepted", "Items accepted (durable)", ["connector"], registry=r)
        self.duplicates = Counter("leadhub_intake_duplicates", "Items the queue already had", ["connector"], registry=r)
        self.rejected = Counter(
            "leadhub_intake_rejected", "Items refused at the edge", ["connector", "reason"], registry=r
        )
        self.processed = Counter(
            "leadhub_pipeline_processed", "Envelopes handled by the pipeline", ["outcome"], registry=r
        )
        self.pipeline_lag = Gauge(
            "leadhub_pipeline_lag_seconds",
            "Age of the newest envelope at the time it was committed; 0 once nothing waits (checked every 5 s)",
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.pipeline_pending = Gauge(
            "leadhub_pipeline_pending",
            "Envelopes waiting in the inbound consumer",
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.batch_size = Histogram(
            "leadhub_pipeline_batch_size",
            "Envelopes per pipeline transaction",
            registry=r,
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
        )
        self.dead_letters = Counter("leadhub_dead_letters", "Items sent to dead letters", ["reason"], registry=r)
        self.store_errors = Counter(
            "leadhub_store_errors", "Store operations that failed", ["operation", "kind"], registry=r
        )
        self.events_published = Counter("leadhub_events_published", "Domain events relayed", registry=r)
        self.relay_failures = Counter(
            "leadhub_relay_failures",
            "Outbox relay failures: queue_busy (NATS refused events), queue_unavailable (NATS away), store, "
            "too_large (an event over NATS's max_payload, sent to dead letters)",
            ["reason"],
            registry=r,
        )
        for reason in RELAY_FAILURE_REASONS:  # every reason shows from the start, at 0
            self.relay_failures.labels(reason)
        self.outbox_written = Counter(
            "leadhub_outbox_written",
            "Domain events the pipeline wrote to the outbox (relayed: events_published)",
            registry=r,
        )
        self.connector_failures = Counter(
            "leadhub_connector_failures",
            "Failed attempts of a pull connector (IMAP folder, WooCommerce poller): auth (credentials refused), "
            "queue_busy, queue_unavailable, store (checkpoint or lease), source (the mail server or shop)",
            ["connector", "reason"],
            registry=r,
        )
        self.connector_ok = Gauge(
            "leadhub_connector_ok",
            "1 when a pull connector is healthy",
            ["connector"],
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.connector_last_sync = Gauge(
            "leadhub_connector_last_sync_timestamp_seconds",
            "When a pull connector last synced",
            ["connector"],
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.connector_lag = Gauge(
            "leadhub_connector_uid_lag",
            "Messages a mailbox has that are not yet published",
            ["connector"],
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.outbox_pending = Gauge(
            "leadhub_outbox_pending", "Domain events not yet relayed", registry=r, multiprocess_mode=LIVE_MAX
        )
        self.rules_loaded = Gauge(
            "leadhub_rules_loaded", "Rules active in the rule engine", registry=r, multiprocess_mode=LIVE_MAX
        )
        self.rule_problems = Gauge(
            "leadhub_rule_problems",
            "Problems in rule files at the last (re)load",
            registry=r,
            multiprocess_mode=LIVE_MAX,
        )
        self.rule_reloads = Counter("leadhub_rule_reloads", "Rule files (re)loaded", registry=r)
        # By action type (the registry's names), not rule id: rule ids come from files admins keep adding to.
        self.action_runs = Counter(
            "leadhub_action_runs",
            "Scheduled action runs recorded: done, failed, cancelled, or retried (will run again)",
            ["action", "outcome"],
            registry=r,
        )
        self._webhooks: dict[str, WebhookMetrics] = {}

    def webhook(self, connector: str) -> WebhookMetrics:
        """The children counting one configured webhook connector (a bounded set: unknown names get a 404 first)."""
        found = self._webhooks.get(connector)
        if found is None:
            found = self._webhooks[connector] = WebhookMetrics(
                self.accepted.labels(connector), self.duplicates.labels(connector), self.hook_latency.labels(connector)
            )
        return found

    def render(self) -> bytes:
        """The Prometheus text exposition: this process's registry, or the totals of every worker process."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=str(self.shared_dir))
        with files_locked(self.shared_dir, shared=True):  # not while an exited worker's files are folded
            return generate_latest(combined)
