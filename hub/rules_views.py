"""What `leadhub rules trace` and `rules backtest` print, read from the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from leadhub.hub.actions_cli import rule_known, unknown_rule
from leadhub.hub.config import Settings
from leadhub.hub.terminal_text import safe
from leadhub.store import triggers as trigger_store
from leadhub.store.db import engine_at_heads
from leadhub.triggers.backtest import backtest, format_counts
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.loader import load_rules
from leadhub.triggers.sandbox import Templates


async def show_trace(settings: Settings, rule_id: str, limit: int) -> tuple[str, str | None]:
    """The trace to print, and a warning when no rule file nor stored run knows the rule (a misspelt id)."""
    # read-only: it says to migrate rather than migrating behind the user's back
    async with engine_at_heads(settings.effective_database_url) as engine:
        async with engine.connect() as conn:
            traces = await trigger_store.list_traces(conn, rule_id=rule_id, limit=limit)
            actions = await trigger_store.list_actions(conn, rule_id=rule_id, status=None, cursor=None, limit=limit)
        unknown = not traces and not actions.items and not await rule_known(engine, settings, rule_id)
    lines = [f"rule {rule_id!r}: last {len(traces)} evaluations"]
    for t in traces:
        verdict = "matched" if t["matched"] else "not matched"
        reason = f": {safe(t['reason'])}" if t["reason"] else ""  # may quote event data
        lines.append(f"  {t['created_at']:%Y-%m-%d %H:%M:%S}  {t['event_type']} {t['event_id']}  {verdict}{reason}")
        lines += [f"      if {c['if']!r}: {safe(str(c['result']))}" for c in t["conditions"]]
    lines.append(f"actions (newest first, {len(actions.items)}):")
    for a in actions.items:
        error = f"  {safe(a['last_error'])}" if a["last_error"] else ""  # may quote a remote server's reply
        lines.append(
            f"  {a['key']}  {a['action_type']}  {a['status']}  due {a['due_at']:%Y-%m-%d %H:%M:%S}  "
            f"attempts={a['attempts']}{error}"
        )
    return "\n".join(lines), unknown_rule(settings, rule_id) if unknown else None


async def run_backtest(url: str, rules_dir: Path, templates_dir: Path | None, window: timedelta) -> str:
    loaded = load_rules(rules_dir, Templates(templates_dir))
    since = datetime.now(UTC) - window
    async with engine_at_heads(url) as engine:
        counts = await backtest(engine, RuleIndex(loaded.rules), since)
    problems = [f"warning: {p} (rule skipped)" for p in loaded.problems]
    return "\n".join([*problems, format_counts(counts, since)])
