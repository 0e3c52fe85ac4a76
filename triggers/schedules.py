"""Cron rules: each due tick becomes a `schedule` event for its rule, fired once even with several replicas."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from cronsim import CronSim
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.error_text import brief
from leadhub.ids import id_for_key
from leadhub.store.connector_state import load_state, load_states, save_state
from leadhub.triggers.audiences import audience, contact_event
from leadhub.triggers.clock import Clock
from leadhub.triggers.compile import LATE_GRACE, CompiledRule
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.matcher import Matcher

log = structlog.get_logger("leadhub.schedules")

# connector_state rows, one per rule: {"last": the last tick fired}, and "away_since" while the rule is not loaded
STATE_OWNER = "leadhub-schedule"
MAX_CATCH_UP = 100_000  # ticks one walk takes at most (a day of a minutely rule is 1,440)


def schedule_event(rule: CompiledRule, tick: datetime) -> dict[str, Any]:
    """The event a tick stands for; its id is derived from (rule, tick), so replicas agree on it."""
    return {
        "id": id_for_key(f"schedule:{rule.id}:{tick.isoformat()}"),
        "type": "schedule",
        "subject_id": rule.id,
        "occurred_at": tick.isoformat(),
        "data": {"rule_id": rule.id, "tick": tick.isoformat()},
    }


def latest_due(cron: str, zone: str, after: datetime, now: datetime) -> datetime | None:
    """The most recent tick in (after, now]; earlier missed ticks are not fired (`late` decides about this one).

    Looked for in the last day before `now`, then in twice as long, and so on back to `after`: a walk from
    `after` itself gave up after MAX_CATCH_UP ticks (70 days of a minutely rule) on a tick long past, fired
    late, and the next pass fired the latest too.
    """
    span = timedelta(days=1)
    while True:
        start = after if now - after <= span else now - span
        latest = _last_tick(cron, zone, start, now)
        if latest is not None or start == after:
            return latest
        span *= 2


def _last_tick(cron: str, zone: str, start: datetime, now: datetime) -> datetime | None:
    """The last tick in (start, now], walking forward from `start` (CronSim's reverse walk misses ticks in the
    hour a fall-back repeats)."""
    ticks = CronSim(cron, start.astimezone(ZoneInfo(zone)))
    latest = None
    for _ in range(MAX_CATCH_UP):
        tick = next(ticks)
        if tick > now:
            break
        if tick > start:  # an instant, whatever offset the zone's wall clock gives it
            latest = tick
    return latest


class ScheduleRunner:
    def __init__(
        self,
        engine: AsyncEngine,
        rules: Callable[[], RuleIndex],
        matcher: Matcher,
        clock: Clock,
        on_scheduled: Callable[[], None],
        *,
        poll_seconds: float = 1.0,
    ) -> None:
        self.engine = engine
        self.rules = rules
        self.matcher = matcher
        self.clock = clock
        self.on_scheduled = on_scheduled
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.last_error: str | None = None
        self._loaded: frozenset[str] | None = None  # the cron rules loaded at the last pass; None before the first
        clock.on_change(self._wake.set)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if await self.tick():
                    self.on_scheduled()
            except Exception as exc:
                self.last_error = brief(exc)
                log.warning("schedule pass failed; will retry", error=self.last_error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def tick(self) -> int:
        """Fire every cron rule whose next tick has come; the number of actions scheduled.

        Each rule on its own: one that fails is logged, kept in `last_error` and tried again next pass,
        while the rules after it fire on time.
        """
        now = self.clock.now()
        cron_rules = [rule for rule in self.rules().rules if rule.rule.schedule is not None]
        scheduled, errors = 0, []
        try:
            await self._note_rules_away(frozenset(rule.id for rule in cron_rules), now)
        except Exception as exc:
            errors.append(f"rules away: {brief(exc)}")
            log.warning("cron rules gone not noted; will retry", error=brief(exc))
        for rule in cron_rules:
            try:
                scheduled += await self._fire(rule, now)
            except Exception as exc:
                errors.append(f"rule {rule.id!r}: {brief(exc)}")
                log.warning("cron rule not fired; will retry", rule=rule.id, error=brief(exc))
        self.last_error = errors[0] if errors else None
        return scheduled

    async def _note_rules_away(self, loaded: frozenset[str], now: datetime) -> None:
        """Mark the state of each cron rule not loaded now (disabled, removed, unreadable) with when it went.

        Without the mark, a rule loaded again fired at once for the latest tick missed while it was away, as if
        the daemon had been down. Looked at only when the set of loaded cron rules changes (and at start).
        At start, a rule its file holds disabled was disabled while the daemon was down, when exactly unknown: it
        is away since its last tick fired, so no tick of the downtime fires when it is enabled again. A rule not
        read at all (its file gone, or unreadable, or the rules directory not mounted yet) is away from now on.
        """
        if loaded == self._loaded:
            return
        disabled = self.rules().disabled if self._loaded is None else frozenset()
        for rule_id, state in (await load_states(self.engine, STATE_OWNER)).items():
            if rule_id not in loaded and "away_since" not in state:
                since = state["last"] if rule_id in disabled and "last" in state else now.isoformat()
                await save_state(self.engine, STATE_OWNER, rule_id, {**state, "away_since": since}, now)
                log.info("cron rule not loaded; its ticks are not fired until it is back", rule=rule_id)
        self._loaded = loaded

    async def _fire(self, rule: CompiledRule, now: datetime) -> int:
        """The rule's latest due tick, if one has come since the last fired; the number of actions scheduled.

        A rule back from being away fires only a tick that came before it went (the daemon was down then, or its
        rules were not loaded yet at start), and then counts from its return: its next tick after it.
        """
        schedule = rule.rule.schedule
        assert schedule is not None
        state = await load_state(self.engine, STATE_OWNER, rule.id)
        if state is None:  # first seen now: count from here, do not fire for the past
            await save_state(self.engine, STATE_OWNER, rule.id, {"last": now.isoformat()}, now)
            return 0
        away_since = datetime.fromisoformat(state["away_since"]) if "away_since" in state else None
        until = now if away_since is None else min(now, away_since)
        tick = latest_due(schedule.cron, schedule.timezone, datetime.fromisoformat(state["last"]), until)
        if tick is None:
            if away_since is not None:
                await save_state(self.engine, STATE_OWNER, rule.id, {"last": now.isoformat()}, now)
            return 0
        # A tick fired after downtime is due from the tick, so `late` judges it; one fired on time counts from
        # when each event is handled (a big `for_each` audience takes a while, which is not lateness).
        start = tick if now - tick > LATE_GRACE else None
        scheduled = 0
        if rule.rule.for_each is None:
            scheduled += await self.matcher.handle(schedule_event(rule, tick), rules=[rule], start=start)
        else:  # one event per selected contact; a crash part-way re-runs the tick and skips those done
            async for contact_id, found in audience(self.engine, rule, tick):
                event = contact_event(rule, tick, contact_id, found)
                scheduled += await self.matcher.handle(event, rules=[rule], start=start)
        last = tick if away_since is None else now
        await save_state(self.engine, STATE_OWNER, rule.id, {"last": last.isoformat()}, now)
        return scheduled
