"""`leadhub config check`: what the daemon would run with, read and validated without starting anything.

Before a restart an admin wants to know that the file is valid and what it adds up to once `LEADHUB_`
variables override it: which database, which queue, which connectors at which routes, and whether the rule
files load. Secrets never appear: URLs are shown with their credentials as `***`, of the variables only names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from leadhub.connectors.registry import CONNECTOR_TYPES
from leadhub.hub.config import ENV_PREFIX, HubConfig, Settings, nats_servers
from leadhub.store.db import redacted_url
from leadhub.url_redaction import redact_urls


@dataclass(frozen=True)
class ConfigReport:
    lines: list[str]
    rule_problems: int  # problems in the rule files: those rules would be skipped


def describe(config: HubConfig, environ: Mapping[str, str] | None = None) -> ConfigReport:
    settings = config.settings
    environ = os.environ if environ is None else environ
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    overrides = sorted(name for name in environ if name.upper() in known)
    smtp = settings.smtp_url.get_secret_value() if settings.smtp_url else None
    servers = ", ".join(nats_servers(settings.nats_url)) if settings.nats_url else None
    queue = redact_urls(servers) if servers else f"embedded NATS under {settings.data_dir / 'nats'}"
    api = "bearer token set" if settings.api_token else "loopback clients only (no LEADHUB_API_TOKEN)"
    processes = f"{settings.workers} process{'es' if settings.workers > 1 else ''}"
    rules, problems = _rules(settings)
    lines = [
        f"configuration OK: {config.source or 'no file, defaults'}"
        + (f" (overridden by {', '.join(overrides)})" if overrides else ""),
        f"  database    {redacted_url(settings.effective_database_url)}",  # as SQLAlchemy reads it, as the log shows it
        f"  queue       {queue}",
        f"  http        {settings.http_host}:{settings.http_port}, roles {', '.join(settings.roles)}, {processes}",
        *_not_run(settings),
        f"  api         {api}",
        "  smtp        " + (redact_urls(smtp) if smtp else "not set: send_email actions fail until it is"),
        f"  links       {_links(settings)}",
        f"  rules       {settings.rules_dir}: {rules}",
        f"  connectors  {len(config.connectors) or 'none'}",
    ]
    rows = [(c.name, c.type) for c in config.connectors]  # type: ignore[attr-defined]
    width = max((len(name) for name, _ in rows), default=0)
    type_width = max((len(kind) for _, kind in rows), default=0)
    for name, kind in rows:
        takes = f"POST /hooks/{name}" if hasattr(CONNECTOR_TYPES[kind], "handle") else "pulls on its own schedule"
        lines.append(f"    {name:<{width}}  {kind:<{type_width}}  {takes}")
    return ConfigReport(lines, problems)


def _links(settings: Settings) -> str:
    """Survey and unsubscribe links in e-mails: without a public URL only this machine can open them."""
    if settings.public_url:
        return redact_urls(settings.public_url)
    return f"{settings.links_url} (no LEADHUB_PUBLIC_URL: customers cannot open it)"


def _not_run(settings: Settings) -> list[str]:
    """A role no process of this daemon runs (webhooks accepted and never stored, events never relayed)."""
    from leadhub.hub.workers import roles_run_nowhere, unrun_roles_note

    missing = roles_run_nowhere(settings)
    return [f"  not run     {', '.join(missing)}: {unrun_roles_note(settings)}"] if missing else []


def _rules(settings: Settings) -> tuple[str, int]:
    """What the rule engine would load from the rules directory, and how many problems it would skip."""
    from leadhub.triggers.loader import load_rules, rule_files
    from leadhub.triggers.sandbox import Templates

    if not settings.rules_dir.is_dir():
        return "not there yet (its rules load once it is created)", 0
    loaded = load_rules(settings.rules_dir, Templates(settings.templates_dir))
    summary = f"{len(loaded.rules)} rules in {len(rule_files(settings.rules_dir))} files"
    if loaded.problems:
        count = len(loaded.problems)
        summary += f"; {count} problem{'s' if count > 1 else ''}, skipped at load (`leadhub rules check` lists them)"
    return summary, len(loaded.problems)
