"""examples/prometheus-alerts.yml names only metrics and labels leadhub exports, and says what to do.

A metric renamed in hub/metrics.py would otherwise leave an alert that never fires, without a word. So would a
series an increase() reads that appears only with its first count: increase() has no earlier sample to compare.
"""

from __future__ import annotations

import re

import yaml
from prometheus_client import Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from leadhub.connectors.failure_reason import FAILURE_REASONS
from leadhub.hub.metrics import Metrics
from leadhub.triggers.actions import ACTIONS
from tests.conftest import HubFactory
from tests.helpers import REPO, free_port

ALERTS = REPO / "examples" / "prometheus-alerts.yml"
SCRAPE_LABELS = {"instance", "job"}
SELECTOR = re.compile(r"\b(leadhub_[a-z_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
COUNTED = re.compile(r"\b(?:increase|rate)\((leadhub_[a-z_]+)(\{[^}]*\})?\[")


def _exported() -> dict[str, set[str]]:
    """Every series name leadhub exports, with the label names it carries."""
    names: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = set(metric._labelnames)
        if isinstance(metric, Counter):
            names[f"{metric._name}_total"] = labels
        elif isinstance(metric, Histogram):
            names.update({f"{metric._name}{suffix}": labels for suffix in ("_bucket", "_sum", "_count")})
        else:
            names[metric._name] = labels
    return names


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_every_alert_names_exported_metrics_and_labels() -> None:
    exported = _exported()
    for rule in _rules():
        expr = rule["expr"]
        used = SELECTOR.findall(expr)
        if rule["alert"] != "LeadhubDown":
            assert used, f"{rule['alert']}: no leadhub metric in {expr!r}"
        labels_here: set[str] = set(SCRAPE_LABELS)
        for name, matchers in used:
            assert name in exported, f"{rule['alert']}: {name} is not a metric leadhub exports"
            labels_here |= exported[name]
            for label, _op, value in MATCHER.findall(matchers):
                assert label in exported[name] | SCRAPE_LABELS, f"{rule['alert']}: {name} has no label {label!r}"
                if name == "leadhub_connector_failures_total" and label == "reason":
                    assert set(value.split("|")) <= set(FAILURE_REASONS), rule["alert"]
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in grouping.split(","):
                assert label.strip() in labels_here, f"{rule['alert']}: grouped by {label.strip()!r}, not a label"
        for template_label in re.findall(r"\$labels\.(\w+)", str(rule.get("annotations"))):
            assert template_label in labels_here, f"{rule['alert']}: annotation uses {template_label!r}"


def test_every_alert_has_a_severity_and_says_what_to_do() -> None:
    rules = _rules()
    assert len({rule["alert"] for rule in rules}) == len(rules), "alert names repeat"
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 40, rule["alert"]


def _matches(sample: Sample, matchers: str) -> bool:
    """Whether the sample's labels satisfy a PromQL selector's matchers (regexes anchored, as PromQL does)."""
    for label, op, value in MATCHER.findall(matchers):
        have = sample.labels.get(label, "")
        equal = re.fullmatch(value, have) is not None if "~" in op else have == value
        if equal == op.startswith("!"):
            return False
    return True


async def test_every_counted_series_an_alert_reads_is_on_a_fresh_hub_at_zero(make_hub: HubFactory) -> None:
    shop = {
        "name": "shop",
        "type": "woocommerce_poll",
        "url": f"http://127.0.0.1:{free_port()}",  # nobody listens: it fails as `source`, never `auth`
        "consumer_key": "ck",
        "consumer_secret": "cs",
    }
    form = {"name": "site-form", "type": "form", "rate_limit": None}
    hub = await make_hub([form, shop], rules_dir=str(REPO / "examples" / "rules"))
    async with hub.session.get(hub.url("/metrics")) as response:
        text = await response.text()
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    for rule in _rules():
        for name, matchers in COUNTED.findall(rule["expr"]):
            found = [s for s in samples if s.name == name and _matches(s, matchers)]
            assert found, f"{rule['alert']}: no {name}{matchers} on a fresh hub: its first count would not alert"
            assert all(s.value == 0 for s in found), (rule["alert"], found)
            connectors = {s.labels.get("connector") for s in found}
            if name == "leadhub_intake_rejected_total":
                assert "site-form" in connectors, rule["alert"]
            if name == "leadhub_connector_failures_total":
                assert "shop" in connectors, rule["alert"]
            if name == "leadhub_action_runs_total":
                assert {s.labels["action"] for s in found} == set(ACTIONS), rule["alert"]
