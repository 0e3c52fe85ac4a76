"""The rule engine as one unit the daemon starts and stops: rules, event consumer, scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.triggers.actions.base import Deps
from leadhub.triggers.clock import Clock, SystemClock
from leadhub.triggers.consumer import EventConsumer
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.loader import RuleSet, load_rules
from leadhub.triggers.matcher import Matcher
from leadhub.triggers.sandbox import Templates
from leadhub.triggers.scheduler import RetryPolicy, Scheduler
from leadhub.triggers.schedules import ScheduleRunner

log = structlog.get_logger("leadhub.triggers")


class TriggerService:
    def __init__(
        self,
        engine: AsyncEngine,
        jetstream: Callable[[], JetStreamContext],
        *,
        rules_dir: Path,
        templates_dir: Path | None,
        smtp_url: str | None,
        public_url: str | None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.rules_dir = rules_dir
        self.templates = Templates(templates_dir)
        self.clock = clock or SystemClock()
        self.index = RuleIndex([])
        self.problems: list[str] = []
        self.reload()
        self.deps = Deps(engine=engine, smtp_url=smtp_url, public_url=public_url)
        self.matcher = Matcher(engine, lambda: self.index, self.clock)
        self.scheduler = Scheduler(engine, lambda: self.index, self.deps, self.clock, retry=retry)
        self.consumer = EventConsumer(jetstream, self.matcher, self.scheduler.wake)
        self.schedules = ScheduleRunner(engine, lambda: self.index, self.matcher, self.clock, self.scheduler.wake)
        self.tasks: list[asyncio.Task[None]] = []

    def reload(self) -> RuleSet:
        """Load the rules directory; rules with problems are left out and each problem is logged."""
        if not self.rules_dir.is_dir():
            log.info("no rules directory; the rule engine has no rules", path=str(self.rules_dir))
            self.index, self.problems = RuleIndex([]), []
            return RuleSet()
        result = load_rules(self.rules_dir, self.templates)
        for problem in result.problems:
            log.error("rule problem; the rule is not active", problem=str(problem))
        self.index = RuleIndex(result.rules)
        self.problems = [str(p) for p in result.problems]
        log.info("rules loaded", rules=len(result.rules), problems=len(result.problems))
        return result

    def start(self) -> list[asyncio.Task[None]]:
        self.tasks = [
            asyncio.create_task(self.consumer.run(), name="trigger-consumer"),
            asyncio.create_task(self.scheduler.run(), name="trigger-scheduler"),
            asyncio.create_task(self.schedules.run(), name="trigger-schedules"),
        ]
        return self.tasks

    def stop(self) -> None:
        self.consumer.stop()
        self.scheduler.stop()
        self.schedules.stop()

    def status(self) -> dict[str, Any]:
        error = self.consumer.last_error or self.scheduler.last_error or self.schedules.last_error
        return {"ok": error is None, "rules": len(self.index.rules), "problems": self.problems, "error": error}
