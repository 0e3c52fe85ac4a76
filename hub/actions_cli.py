"""`leadhub actions retry`: put failed trigger runs back to pending once the admin has fixed what made them fail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.hub.config import HubConfig, Settings
from leadhub.store import triggers as trigger_store
from leadhub.store.db import engine_at_heads

RETRY_PAGE = 100  # runs per transaction: `--all` over a huge table never holds one long lock


@dataclass
class RetryReport:
    requeued: int = 0
    problems: list[str] = field(default_factory=list)  # "ID: why it was not re-queued"
    warnings: list[str] = field(default_factory=list)  # said, but nothing went wrong (a --rule nobody has)


async def retry_actions(
    config: HubConfig, ids: Sequence[str], *, rule_id: str | None = None, action_type: str | None = None
) -> RetryReport:
    """Re-queue the failed runs named by `ids`, or when `ids` is empty every failed run (of the rule, of the type)."""
    async with engine_at_heads(config.settings.effective_database_url) as engine:  # no tables made by mistake
        if ids:
            return await _retry_named(engine, list(dict.fromkeys(ids)))
        report = await _retry_all(engine, rule_id, action_type)
        if rule_id is not None and not report.requeued and not await rule_known(engine, config.settings, rule_id):
            report.warnings.append(unknown_rule(config.settings, rule_id))
        return report


async def _retry_named(engine: AsyncEngine, ids: list[str]) -> RetryReport:
    report = RetryReport()
    for start in range(0, len(ids), RETRY_PAGE):
        page = ids[start : start + RETRY_PAGE]
        async with engine.begin() as conn:
            requeued = set(await trigger_store.requeue_failed(conn, page, datetime.now(UTC)))
            left = [each for each in page if each not in requeued]
            found = await trigger_store.statuses(conn, left)
        report.requeued += len(requeued)
        for each in left:
            status = found.get(each)
            report.problems.append(f"{each}: no such run" if status is None else f"{each}: is {status}, not failed")
    return report


async def _retry_all(engine: AsyncEngine, rule_id: str | None, action_type: str | None) -> RetryReport:
    """Page by id: a run that fails again while the walk goes on is behind it and is not taken twice."""
    report, after = RetryReport(), None
    while True:
        async with engine.begin() as conn:
            page = await trigger_store.failed_ids(
                conn, after=after, rule_id=rule_id, action_type=action_type, limit=RETRY_PAGE
            )
            if not page:
                return report
            report.requeued += len(await trigger_store.requeue_failed(conn, page, datetime.now(UTC)))
        after = page[-1]


def unknown_rule(settings: Settings, rule_id: str) -> str:
    """The warning for a rule id given on the command line that nothing knows (`rule_known`)."""
    return f"no rule {rule_id!r} in {settings.rules_dir} nor among the stored runs: is it misspelt?"


async def rule_known(engine: AsyncEngine, settings: Settings, rule_id: str) -> bool:
    """A rule the files define (enabled or not, valid) or one with stored runs (since removed or renamed)."""
    from leadhub.triggers.loader import load_rules
    from leadhub.triggers.sandbox import Templates

    if rule_id in load_rules(settings.rules_dir, Templates(settings.templates_dir), include_disabled=True).by_id():
        return True
    async with engine.connect() as conn:
        return await trigger_store.has_runs_of(conn, rule_id)
