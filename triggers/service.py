"""The rule engine as one unit the daemon starts and stops: rules, event consumer, scheduler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine
from watchfiles import awatch

from leadhub.triggers.actions.base import Deps
from leadhub.triggers.actions.smtp_pool import SmtpPool
from leadhub.triggers.clock import Clock, SystemClock
from leadhub.triggers.compile import CompiledRule, HoursBook
from leadhub.triggers.consumer import EventConsumer
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.links import LOCAL_URL
from leadhub.triggers.loader import Problem, load_file, load_hours, rule_files, rules_dir_problem
from leadhub.triggers.matcher import Matcher
from leadhub.triggers.sandbox import Templates
from leadhub.triggers.scheduler import RetryPolicy, Scheduler
from leadhub.triggers.schedules import ScheduleRunner

log = structlog.get_logger("leadhub.triggers")

Placed = list[tuple[CompiledRule, tuple[int, int]]]  # a file's rules, each with the line and column it starts at
Snapshot = tuple[str | None, tuple[tuple[str, int, int], ...] | None]  # the rules dir's problem, the files' fingerprint
RECHECK_MS = 1000  # without file events, compare the rule files with what was loaded this often
SETTLE_MS = 1000  # changed files are read once they have kept their time and size this long


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
        local_url: str = LOCAL_URL,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        on_reload: Callable[[int, int], None] = lambda rules, problems: None,
        on_action: Callable[[str, str], None] = lambda action_type, outcome: None,
        on_store_error: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self.engine = engine
        self.rules_dir = rules_dir
        self.templates_dir = templates_dir
        self.templates = Templates(templates_dir)
        self.clock = clock or SystemClock()
        self.index = RuleIndex([])
        self.problems: list[str] = []
        self.by_file: dict[str, list[CompiledRule]] = {}
        self.reloads = 0
        self._loaded: Snapshot | None = None
        self.on_reload = on_reload
        self.public_url = public_url
        self.local_url = local_url  # where links point without a public URL: this daemon's HTTP, from this machine
        self._stop_watch = asyncio.Event()
        self._unread: str | None = None  # why the last load may have missed rules (see `_why_not_loaded`)
        self._failure: str | None = None  # the last load's unexpected error, while it keeps failing
        self.deps = Deps(
            engine=engine, smtp_url=smtp_url, public_url=public_url or local_url, extra={"smtp_pool": SmtpPool()}
        )
        self.matcher = Matcher(engine, lambda: self.index, self.clock)
        self.scheduler = Scheduler(
            engine,
            lambda: self.index,
            self.deps,
            self.clock,
            retry=retry,
            on_outcome=on_action,
            on_store_error=on_store_error,
            unloaded=self._why_not_loaded,
            on_waiting=self._actions_wait,
        )
        self.consumer = EventConsumer(jetstream, self.matcher, self.scheduler.wake, listened=lambda: self.index.by_type)
        self.schedules = ScheduleRunner(engine, lambda: self.index, self.matcher, self.clock, self.scheduler.wake)
        self.tasks: list[asyncio.Task[None]] = []
        self.reload()

    def reload(self) -> list[str]:
        """Load the rules directory; the problems found (each also logged).

        A file with problems keeps its last loaded version active (hot reload); at start-up, or for
        a new file, its valid rules load and only the bad ones are left out. Other files are unaffected.
        A rule id in two files stays with the file it is loaded from (see `_settle_ids`). Without the rules
        directory the loaded rules stay (see `_keep_rules_without_dir`). A load that fails unexpectedly (a bug)
        is a problem too, reported like the others, and never stops the daemon (see `_load_failed`).
        """
        snapshot = self._snapshot()  # before reading: a change meanwhile is seen afterwards
        try:
            problems = self._load()
        except Exception as exc:
            return self._load_failed(exc)
        self._loaded, self._failure = snapshot, None
        return problems

    def _load(self) -> list[str]:
        if missing := rules_dir_problem(self.rules_dir):
            self._unread = missing
            return self._keep_rules_without_dir(Problem(str(self.rules_dir), 1, 1, None, "", missing))
        problems: list[Problem] = []
        files = self._rule_files()
        versions: dict[str, Placed] = {}
        book, hours_problems = load_hours(files)
        for path in files:
            key = str(path)
            loaded, found = self._load_file(path, book)
            found += [p for p in hours_problems if p.file == key]
            problems += found
            if found and key in self.by_file:
                log.error("rule file has problems; keeping its last loaded version", file=key, problems=len(found))
                versions[key] = self.by_file[key]
            else:
                versions[key] = loaded
        by_file, clashes = self._settle_ids(versions)
        problems += clashes
        rules = [rule for placed in by_file.values() for rule, _ in placed if rule.rule.enabled]
        disabled = [rule.id for placed in by_file.values() for rule, _ in placed if not rule.rule.enabled]
        for problem in problems:
            log.error("rule problem", problem=str(problem))
        self.by_file = by_file
        self.index = RuleIndex(rules, disabled=disabled)
        self.problems = [str(p) for p in problems]
        self._unread = "the rule files have problems" if problems else None
        self.reloads += 1
        self.on_reload(len(rules), len(problems))
        log.info("rules loaded", rules=len(rules), files=len(files), problems=len(problems))
        self._warn_of_local_links(rules)
        return self.problems

    def _load_file(self, path: Path, book: HoursBook) -> tuple[Placed, list[Problem]]:
        """One file's rules and problems; an unexpected error loading it is that file's problem, so the others
        still load and it keeps its last loaded version."""
        try:
            return load_file(path, self.templates, book)
        except Exception as exc:
            log.exception("loading a rule file failed unexpectedly", file=str(path))
            return [], [Problem(str(path), 1, 1, None, "", f"could not be loaded: {type(exc).__name__}: {exc}")]

    def _load_failed(self, exc: Exception) -> list[str]:
        """The last resort when loading the rules failed unexpectedly: the loaded rules keep running, the failure is
        a problem in /readyz and the rule-problems metric, due actions of rules not loaded wait, and the snapshot
        of what was loaded stays as it was, so the watcher tries again on its next pass."""
        failure = f"{type(exc).__name__}: {exc}"
        if failure != self._failure:  # retried every pass: the traceback once, not every second
            log.exception("loading the rules failed; keeping the loaded rules", rules=len(self.index.rules))
        self._failure = failure
        problem = Problem(str(self.rules_dir), 1, 1, None, "", f"the rules could not be loaded: {failure}")
        self.problems = [str(problem)]
        self._unread = "the rules could not be loaded"
        self.reloads += 1
        self.on_reload(len(self.index.rules), len(self.problems))
        return self.problems

    def _keep_rules_without_dir(self, problem: Problem) -> list[str]:
        """A rules directory gone (a volume unmounted, a deploy half done) is almost never "delete every rule": the
        loaded rules stay, with their pending actions, and the problem is reported until the directory is back.
        With no rules loaded (at start-up) it is no problem, only a warning: the rules load once the directory is
        created (see `watch`). Unless due actions wait for its rules (a volume not mounted yet at start-up): then
        it is a problem too (`_actions_wait`)."""
        waiting = sorted(self.scheduler.waiting)
        if not self.by_file and not waiting:  # nothing to keep, nothing lost: the quick start runs without one
            log.warning("no rules directory yet; its rules load once it is created", rules_dir=str(self.rules_dir))
            self.problems = []
            self.reloads += 1
            self.on_reload(len(self.index.rules), 0)
            return self.problems
        kept = len(self.index.rules)
        if self.by_file:
            log.error("rules directory gone; keeping the loaded rules", problem=str(problem), rules=kept)
        else:
            log.error("no rules directory, and due actions wait for its rules", problem=str(problem), rules=waiting)
        self.problems = [str(problem)]
        self.reloads += 1
        self.on_reload(len(self.index.rules), len(self.problems))
        return self.problems

    def _why_not_loaded(self, rule_id: str) -> str | None:
        """Why the due actions of a rule that is not loaded wait rather than being cancelled: the last load did not
        read every rule (the rules directory missing, a rule file with problems), so it may only be unreadable. None
        when it read them all without problems: the rule is gone (removed or disabled)."""
        return self._unread

    def _actions_wait(self) -> None:
        """The scheduler keeps a rule's due actions waiting: a rules directory missing since start-up is no longer a
        mere warning but a problem, in /readyz and the rule-problems metric (see `_keep_rules_without_dir`)."""
        if not self.problems and rules_dir_problem(self.rules_dir):
            self.reload()

    def _settle_ids(self, versions: dict[str, Placed]) -> tuple[dict[str, Placed], list[Problem]]:
        """Each rule id to one file, and a problem, at the rule, for every other file that has it.

        An id already loaded stays with the file it was loaded from: a new file reusing it must not replace a
        running rule (whose pending runs would then run the new rule's actions). An id new to the daemon (every
        id at start-up) goes to the first file in name order, as `leadhub rules check` says. The file that loses
        an id has a problem like any other: if it was loaded before, it keeps its last loaded version, which
        can leave an id it claimed to another file; so this repeats until no file goes back to its last version.
        """
        owners = {rule.id: key for key, placed in self.by_file.items() for rule, _ in placed}
        versions = dict(versions)
        problems: list[Problem] = []
        while True:
            winners = _winners(versions, owners)
            lost = {
                key: [(rule, where) for rule, where in placed if winners[rule.id] != (key, where)]
                for key, placed in versions.items()
            }
            last = self.by_file
            back = [key for key, rules in lost.items() if rules and key in last and versions[key] is not last[key]]
            if not back:
                break
            for key in back:
                log.error("rule file has problems; keeping its last loaded version", file=key, problems=len(lost[key]))
                problems += [_clash(key, rule.id, where, winners, owners) for rule, where in lost[key]]
                versions[key] = self.by_file[key]
        for key, rules in lost.items():
            problems += [_clash(key, rule.id, where, winners, owners) for rule, where in rules]
            versions[key] = [(rule, where) for rule, where in versions[key] if winners[rule.id] == (key, where)]
        return versions, problems

    def _warn_of_local_links(self, rules: list[CompiledRule]) -> None:
        """E-mails carry survey and unsubscribe links built on LEADHUB_PUBLIC_URL; without it they point at where
        this daemon listens, as seen from this machine, which no customer can open. Rules still load: a test setup
        may want that."""
        if self.public_url is not None:
            return
        emailing = [rule.id for rule in rules if "send_email" in rule.action_types]
        if emailing:
            log.warning(
                f"e-mail links will point at {self.local_url}, which customers cannot open: "
                "set LEADHUB_PUBLIC_URL to the address this daemon is reached at from outside",
                rules=emailing[:5],
                emailing_rules=len(emailing),
            )

    def _rule_files(self) -> list[Path]:
        return rule_files(self.rules_dir) if self.rules_dir.is_dir() else []

    def _watched_files(self) -> list[Path]:
        """The rule files and the admin's template files: the rules compile the templates they name."""
        templates = self.templates_dir
        extra = sorted(p for p in templates.rglob("*") if p.is_file()) if templates and templates.is_dir() else []
        return [*self._rule_files(), *extra]

    def _snapshot(self) -> Snapshot:
        """What a reload would read: whether the rules directory is there, and each watched file's time and size."""
        return rules_dir_problem(self.rules_dir), _fingerprint(self._watched_files())

    async def watch(self) -> None:
        """Reload when a rule file or an admin template changes.

        File events drive it, and a change is read once the files have stopped changing (see `_settled`). Once a
        second without events the files are also compared with what was loaded: a change made before the watcher
        was in place (between start-up's load and this task's first step), or one the file system did not report,
        is picked up too. A rules directory missing at start-up is looked for once a second: an admin who creates
        it later gets the rules without a restart.
        """
        if not await self._wait_for_rules_dir():
            return
        templates = self.templates_dir
        watched = [self.rules_dir, *([templates] if templates and templates.is_dir() else [])]
        async for changes in awatch(
            *watched,
            stop_event=self._stop_watch,
            debounce=200,
            step=50,
            rust_timeout=RECHECK_MS,
            yield_on_timeout=True,
        ):
            if not changes and self._snapshot() == self._loaded:
                continue
            if not await self._settled():
                return
            try:
                self.reload()
            except Exception:  # a reload must never stop the watcher; the old rules stay active
                log.exception("reloading rules failed")

    async def _settled(self) -> bool:
        """Wait until the watched files stop changing; False when stopped first.

        A writer that pauses mid-file (an editor saving in parts, a slow copy) must not have its first part
        loaded: cut between rules, the rules after the cut would go with no problem reported (their pending
        actions cancelled); cut in a value, a shortened URL or secret would load. Files written to a temporary
        name and renamed are whole at once; docs/rules.md asks for that.
        """
        seen = self._snapshot()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_watch.wait(), SETTLE_MS / 1000)
            if self._stop_watch.is_set():
                return False
            now = self._snapshot()
            if now == seen:
                return True
            seen = now

    async def _wait_for_rules_dir(self) -> bool:
        """Wait for the rules directory to exist; False when stopped first."""
        if self.rules_dir.is_dir():
            return True
        if self._snapshot() != self._loaded:  # it went after the last load: say so, keeping the loaded rules
            self.reload()
        while not self.rules_dir.is_dir():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_watch.wait(), RECHECK_MS / 1000)
            if self._stop_watch.is_set():
                return False
        log.info("rules directory created; watching it", path=str(self.rules_dir))
        return True

    def start(self) -> list[asyncio.Task[None]]:
        self.tasks = [
            asyncio.create_task(self.consumer.run(), name="trigger-consumer"),
            asyncio.create_task(self.scheduler.run(), name="trigger-scheduler"),
            asyncio.create_task(self.schedules.run(), name="trigger-schedules"),
            asyncio.create_task(self.watch(), name="rule-watcher"),
        ]
        return self.tasks

    def stop(self) -> None:
        self.consumer.stop()
        self.scheduler.stop()
        self.schedules.stop()
        self._stop_watch.set()

    def status(self) -> dict[str, Any]:
        error = self.consumer.last_error or self.scheduler.last_error or self.schedules.last_error
        return {
            "ok": error is None,
            "rules": len(self.index.rules),
            "problems": self.problems,
            "waiting_for_rules": dict(self.scheduler.waiting),  # rule id -> why its due actions wait for it
            "error": error,
        }


def _winners(versions: dict[str, Placed], owners: dict[str, str]) -> dict[str, tuple[str, tuple[int, int]]]:
    """Per rule id, the file and place of the rule that keeps it: in the file it is loaded from, else the first."""
    winners: dict[str, tuple[str, tuple[int, int]]] = {}
    for key, placed in versions.items():
        for rule, where in placed:
            held = winners.get(rule.id)
            if held is None or owners.get(rule.id) == key != held[0]:
                winners[rule.id] = (key, where)
    return winners


def _clash(
    key: str,
    rule_id: str,
    where: tuple[int, int],
    winners: dict[str, tuple[str, tuple[int, int]]],
    owners: dict[str, str],
) -> Problem:
    """The problem of a rule whose id another file (or an earlier rule of the same file) has."""
    holder, (line, _) = winners[rule_id]
    said = "already loaded from" if owners.get(rule_id) == holder else "first defined at"
    return Problem(key, where[0], where[1], rule_id, "id", f"duplicate rule id; {said} {holder}:{line}")


def _fingerprint(files: list[Path]) -> tuple[tuple[str, int, int], ...] | None:
    """Each rule file's path, modification time and size; None when a file vanished since it was listed."""
    try:
        return tuple((str(path), stat.st_mtime_ns, stat.st_size) for path in files for stat in [path.stat()])
    except OSError:
        return None
