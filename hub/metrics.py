"""Prometheus metrics, one registry per hub so tests and replicas in one process never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
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
            "leadhub_pipeline_lag_seconds", "Age of the newest envelope at the time it was committed", registry=r
        )
        self.pipeline_pending = Gauge(
            "leadhub_pipeline_pending", "Envelopes waiting in the inbound consumer", registry=r
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
        self.connector_ok = Gauge(
            "leadhub_connector_ok", "1 when a pull connector is healthy", ["connector"], registry=r
        )
        self.connector_last_sync = Gauge(
            "leadhub_connector_last_sync_timestamp_seconds",
            "When a pull connector last synced",
            ["connector"],
            registry=r,
        )
        self.connector_lag = Gauge(
            "leadhub_connector_uid_lag", "Messages a mailbox has that are not yet published", ["connector"], registry=r
        )
        self.outbox_pending = Gauge("leadhub_outbox_pending", "Domain events not yet relayed", registry=r)
        self.rules_loaded = Gauge("leadhub_rules_loaded", "Rules active in the rule engine", registry=r)
        self.rule_problems = Gauge("leadhub_rule_problems", "Problems in rule files at the last (re)load", registry=r)
        self.rule_reloads = Counter("leadhub_rule_reloads", "Rule files (re)loaded", registry=r)
