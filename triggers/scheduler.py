"""The scheduler: claim due actions, re-check `unless`, execute, record the outcome, retry with back-off and jitter."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.error_text import brief
from leadhub.store import trigger_data
from leadhub.store import triggers as store
from leadhub.triggers.actions.base import Deps, Job, Permanent, RenderEnv, Skipped, Transient
from leadhub.triggers.claim_lease import ClaimLease
from leadhub.triggers.clock import Clock
from leadhub.triggers.compile import LATE_GRACE, CompiledRule, EvaluationError
from leadhub.triggers.context import aware, build_context
from leadhub.triggers.edits import follow
from leadhub.triggers.engine import RuleIndex
from leadhub.triggers.events import event_objects
from leadhub.triggers.matcher import _context_event
from leadhub.triggers.outcomes import WAITING, Result, record

log = structlog.get_logger("leadhub.scheduler")
RECORD_RETRY_FIRST = 0.5  # seconds before recording a batch's outcomes again while the store is away
RECORD_RETRY_CAP = 5.0
STOP_RECORD_SECONDS = 3.0  # a stop waits this long at most for a cut-short batch's outcomes to be recorded
# A batch's runs still going after this long (a webhook hanging up to its timeout) no longer hold up the runs that
# ended, whose outcomes are recorded, nor the next pass, which claims what is due into the room they left.
HAND_OFF_SECONDS = 2.0
OUTCOMES = ("done", "failed", "cancelled", "retried")  # what `on_outcome` reports of a recorded run
# A pause longer than this between one pass's end and the next one's start is downtime for `late` (the process
# stopped or frozen, the machine asleep, the store away): the scheduler waits a second at most between passes.
PASS_GAP = LATE_GRACE
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=6)

    def delay(self, attempt: int) -> timedelta:
        """Exponential back-off with ±20% jitter (retries of many actions spread out), never over the cap."""
        seconds = self.base.total_seconds() * 2 ** min(attempt - 1, 60) * random.uniform(0.8, 1.2)  # noqa: S311
        return timedelta(seconds=min(self.cap.total_seconds(), seconds))


@dataclass
class Planned:
    """A claimed action ready to execute: its rule's bound action and what it rendered."""

    row: Any
    job: Job
    bound: Any
    rendered: dict[str, Any]


class Outcome(Exception):
    """How one run ended, raised out of the steps before the action (cancelled, failed)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Scheduler:
    def __init__(
        self,
        engine: AsyncEngine,
        rules: Callable[[], RuleIndex],
        deps: Deps,
        clock: Clock,
        *,
        retry: RetryPolicy | None = None,
        batch: int = 50,
        lease: timedelta = timedelta(minutes=5),
        poll_seconds: float = 1.0,
        on_outcome: Callable[[str, str], None] = lambda action_type, outcome: None,
        on_store_error: Callable[[BaseException], None] = lambda exc: None,
        unloaded: Callable[[str], str | None] = lambda rule_id: None,
        on_waiting: Callable[[], None] = lambda: None,
        hand_off_seconds: float = HAND_OFF_SECONDS,
    ) -> None:
        """`on_outcome(action_type, outcome)`: once per recorded run; outcome done, failed, cancelled or retried.
        `on_store_error(exc)`: a pass failed (the store away); the actions stay due and the next pass retries.
        `unloaded(rule_id)`: for a rule not loaded, why its due actions wait (the last load could not read every
        rule), or None: the rule is gone and they are cancelled. `on_waiting()`: a rule's actions began to wait."""
        self.engine = engine
        self.rules = rules
        self.deps = deps
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.batch = batch
        self.lease = lease
        self.poll_seconds = poll_seconds
        self.on_outcome = on_outcome
        self.on_store_error = on_store_error
        self.unloaded = unloaded
        self.on_waiting = on_waiting
        self.waiting: dict[str, str] = {}  # rule id -> why its due actions wait for it to load (see `_wait_for`)
        self._loaded_at: dict[str, datetime] = {}  # rule id -> when a rule its actions waited for loaded
        self._up_since: datetime | None = None  # the start of this scheduler's passes without a pause (`late`)
        self._last_pass: datetime | None = None  # when its last pass that did not fail ended
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._key: bytes | None = None
        self.hand_off_seconds = hand_off_seconds
        self._batches: set[asyncio.Task[None]] = set()  # claimed batches whose runs go on (`_run_batch`)
        self._in_flight = 0  # their runs not recorded yet: a pass claims `batch` less these
        self._room = asyncio.Event()  # set when runs of those are recorded
        self._more = False  # the last pass claimed all it had room for: more may be due at once
        self.last_error: str | None = None
        clock.on_change(self.wake)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    await self._pass()
                    self.last_error = None
                except Exception as exc:  # the store away: keep the actions, try again
                    self._store_error(exc, "scheduler pass failed; will retry")
                    self._more = False
                if self._more:
                    continue
                idle = await self._idle_seconds()  # first: cancelled here, no `wait()` is left never awaited
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), idle)
            await self._all_batches_ended()  # stopped: the runs under way end and are recorded
        finally:
            await self._cut_short_batches()  # cancelled (the daemon's stop budget spent): record what ended
        pool = self.deps.extra.get("smtp_pool")
        if pool is not None:  # pooled SMTP connections end with the scheduler
            await pool.close()

    async def _idle_seconds(self) -> float:
        """Sleep until the next due action (at most the poll interval), so one runs within a second of its time."""
        try:
            async with self.engine.connect() as conn:
                due = await store.next_due(conn, skip_rules=list(self.waiting))
        except Exception:
            return self.poll_seconds
        if due is None:
            return self.poll_seconds
        return max(0.0, min(self.poll_seconds, (aware(due) - self.clock.now()).total_seconds()))

    async def run_once(self) -> int:
        """One pass, and every run it started ended and recorded (as `run` does it, but to the end): the count."""
        try:
            claimed = await self._pass()
            await self._all_batches_ended()
        finally:
            await self._cut_short_batches()
        return claimed

    async def _pass(self) -> int:
        """Claim what is due, up to the runs `batch` leaves room for, and run it: the count claimed.

        The pass returns once the batch's runs all ended and were recorded, or after `hand_off_seconds` with runs
        still going (a webhook that hangs up to its timeout): those end and are recorded on their own
        (`_run_batch`), and the next pass claims what became due meanwhile into the room the others left.
        """
        now = self.clock.now()
        if self._last_pass is None or now - self._last_pass > PASS_GAP:
            self._up_since = now  # started, or back after a pause: what was due meanwhile is late
        room = self.batch - self._in_flight
        if room <= 0:  # `batch` runs still going: wait for one batch to end, not the store to be asked for more
            await self._room_made()
            self._more, self._last_pass = True, self.clock.now()  # waiting on runs is not a pause for `late`
            return 0
        lease_ends = asyncio.get_running_loop().time() + self.lease.total_seconds()  # at the latest; on this clock
        self._recheck_waiting()
        async with self.engine.begin() as conn:
            rows = await store.claim_due(conn, now, room, now + self.lease, skip_rules=list(self.waiting))
        self._more = len(rows) >= room
        if rows:
            ids = [row.id for row in rows]
            claim = ClaimLease(self.engine, self.clock, self.lease, ids, until=now + self.lease, ends_at=lease_ends)
            handed_off = asyncio.Event()
            batch = asyncio.create_task(self._run_batch(rows, claim, handed_off), name="scheduler-batch")
            self._in_flight += len(rows)
            self._batches.add(batch)
            batch.add_done_callback(self._batches.discard)
            handing_off = asyncio.ensure_future(handed_off.wait())
            try:
                await asyncio.wait({batch, handing_off}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                handing_off.cancel()
            if batch.done():
                batch.result()  # the store away when recording: `run` reports it as the pass's failure
        self._last_pass = self.clock.now()
        return len(rows)

    async def _run_batch(self, rows: list[Any], claim: ClaimLease, handed_off: asyncio.Event) -> None:
        """Run a claimed batch and record how its runs ended: together when they all end within
        `hand_off_seconds` (one transaction, as most batches do), otherwise the ended ones every
        `hand_off_seconds` while the others go on, and the pass that claimed them goes on (`handed_off`)."""
        runs: list[asyncio.Task[Result]] = []
        left = list(rows)
        try:
            try:
                async with claim:  # its heartbeat keeps the rows this worker's while they run
                    runs = await self._start(rows)
                    going = set(runs)
                    while going:
                        _, going = await asyncio.wait(going, timeout=self.hand_off_seconds)
                        if going:
                            handed_off.set()
                            left = await self._record_ended(left, runs, claim)
            except asyncio.CancelledError:
                await _all_cut_short(runs)
                await self._record_stopped(left, runs, claim)
                raise
            unrecorded = {row.id for row in left}
            results = [run.result() for run in runs if run.result().action_id in unrecorded]
            try:
                recorded = await _shielded(self._record_while_leased(results, claim))
            except Exception as exc:
                if not handed_off.is_set():
                    raise  # the pass is waiting for this batch: it reports the failure
                self._store_error(exc, "action outcomes not recorded; they run again once their lease ends")
                return
            self._count(left, results, recorded)
        finally:
            self._in_flight -= len(left)
            self._room.set()

    async def _record_ended(self, left: list[Any], runs: list[asyncio.Task[Result]], claim: ClaimLease) -> list[Any]:
        """Record the runs of a handed-off batch that ended, so their outcomes do not wait for its slowest run;
        the rows still to record. The claim's lease is not moved meanwhile: the rows are recorded under its
        token. Should the store be away, they are recorded with a later wave or the last one."""
        unrecorded = {row.id for row in left}
        results = [run.result() for run in runs if run.done() and run.result().action_id in unrecorded]
        if not results:
            return left
        try:
            async with claim.lock:
                recorded = await record(self.engine, results, self.clock.now(), claim.until, rules=self.rules())
                claim.held -= {result.action_id for result in results}
        except Exception as exc:
            self._store_error(exc, "action outcomes not recorded yet; trying again with the batch's next")
            return left
        self._count(left, results, recorded)
        ended = {result.action_id for result in results}
        self._in_flight -= len(ended)
        self._room.set()
        return [row for row in left if row.id not in ended]

    async def _room_made(self) -> None:
        """Wait for a run of the batches going on to be recorded (room for the next claim), or for the stop."""
        self._room.clear()
        stopping = asyncio.ensure_future(self._stopping.wait())
        room = asyncio.ensure_future(self._room.wait())
        try:
            await asyncio.wait({room, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            room.cancel()

    async def _all_batches_ended(self) -> None:
        """Wait for the handed-off batches to end and be recorded; a failure to record them was logged."""
        while self._batches:
            await asyncio.wait(set(self._batches))

    async def _cut_short_batches(self) -> None:
        """Cancel the batches still running: each records the runs that ended and gives back the rest."""
        batches = set(self._batches)
        for batch in batches:
            batch.cancel()
        if batches:
            await asyncio.wait(batches)

    def _store_error(self, exc: BaseException, message: str) -> None:
        self.last_error = brief(exc)
        self.on_store_error(exc)
        log.warning(message, error=self.last_error)

    async def _start(self, rows: list[Any]) -> list[asyncio.Task[Result]]:
        """Plan the batch and start its runs, a task each: cancelled, the scheduler records those that ended
        and cuts the others short (`_record_stopped`)."""
        names = [event_objects(row.event) for row in rows]
        async with self.engine.connect() as conn:  # one query per table for the batch, not per action
            objects = await trigger_data.load_objects_many(conn, [row.event["data"] for row in rows], names)
        key, now = await self._signing_key(), self.clock.now()
        plans = [self._plan(row, o, key, now) for row, o in zip(rows, objects, strict=True)]
        await self._prefetch([p for p in plans if isinstance(p, Planned)])
        return [asyncio.ensure_future(self._run(p)) for p in plans]

    async def _record_stopped(self, rows: list[Any], runs: list[asyncio.Task[Result]], claim: ClaimLease) -> None:
        """The scheduler was cancelled mid-batch (the daemon stopping): record the runs that ended, release the rest.

        An e-mail that went out must be recorded now: left `running`, it would be claimed again once the lease ran
        out and, its sent row missing, sent a second time. The runs cut short are `pending` again as before the
        claim, so the next pass (after the restart, or another replica's) takes them at once, not after the lease.
        Within STOP_RECORD_SECONDS: a store that does not answer by then leaves the batch as a crash does.
        """
        left = {row.id for row in rows}
        ended = [run.result() for run in runs if run.done() and not run.cancelled() and run.result().action_id in left]
        cut = sorted({row.id for row in rows} - {result.action_id for result in ended})
        recording = asyncio.create_task(
            record(self.engine, ended, self.clock.now(), claim.until, released=cut, rules=self.rules())
        )
        await asyncio.wait({recording}, timeout=STOP_RECORD_SECONDS)
        if not recording.done():
            recording.cancel()
            log.warning("stopped mid-batch; outcomes not recorded in time", ended=len(ended), cut_short=len(cut))
            return
        error = recording.exception()
        if error is not None:
            log.warning("stopped mid-batch; outcomes not recorded", error=brief(error))
            return
        log.info("stopped mid-batch: the ended runs recorded, the rest released", ended=len(ended), cut_short=len(cut))
        self._count(rows, ended, recording.result())

    def _count(self, rows: list[Any], results: list[Result], recorded: set[str]) -> None:
        action_types = {row.id: row.action_type for row in rows}
        for result in results:
            if result.action_id in recorded and result.status != WAITING:
                outcome = "retried" if result.retry_at is not None else result.status
                self.on_outcome(action_types[result.action_id], outcome)

    async def _record_while_leased(self, results: list[Result], claim: ClaimLease) -> set[str]:
        """Record the outcomes, retrying while the store is away, until the claim's lease ends (loop time).

        The actions have run (an e-mail has gone out): dropping their outcomes would leave them `running`
        until the lease ran out and then run them again. After the lease another worker may take them, so
        the retries stop there: the lease counts from the claim's last heartbeat, not from the first failed
        record. The ids recorded: those another worker has claimed meanwhile are left to it.
        """
        loop = asyncio.get_running_loop()
        delay = RECORD_RETRY_FIRST
        while True:
            try:
                return await record(self.engine, results, self.clock.now(), claim.until, rules=self.rules())
            except Exception as exc:
                if self._stopping.is_set() or loop.time() + delay >= claim.ends_at:
                    raise
                self.last_error = brief(exc)
                self.on_store_error(exc)
                log.warning("action outcomes not recorded; retrying", count=len(results), error=self.last_error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(RECORD_RETRY_CAP, delay * 2)

    async def _signing_key(self) -> bytes:
        if self._key is None:
            async with self.engine.begin() as conn:
                self._key = await trigger_data.signing_key(conn, self.clock.now())
        return self._key

    def _plan(self, row: Any, objects: dict[str, Any], key: bytes, now: datetime) -> Planned | Result:
        """Everything before the action's own I/O: rule still there, `late`, `unless`, rendering."""
        job = Job(row.key, row.rule_id, row.event, {}, now, row.attempts)  # claim_due counted this run
        try:
            rule = self.rules().by_id.get(row.rule_id)
            if rule is None and (reason := self.unloaded(row.rule_id)) is not None:
                self._wait_for(row, reason)
                raise Outcome(WAITING, reason)
            bound = _bound(rule, row)
            _check_late(rule, row, self._runnable_since(row, now))  # type: ignore[arg-type]
            context = build_context(_context_event(row.event), objects, now)
            if rule.unless is not None:  # type: ignore[union-attr]
                try:
                    if rule.unless(context):  # type: ignore[union-attr]
                        raise Outcome("cancelled", f"unless is true: {rule.unless.source}")  # type: ignore[union-attr]
                except EvaluationError as exc:
                    raise Outcome("failed", f"unless could not be evaluated: {exc}") from None
            try:
                rendered = bound.render(context, RenderEnv(key, self.deps.public_url, now))
            except Exception as exc:
                raise Outcome("failed", f"rendering failed: {type(exc).__name__}: {exc}") from None
        except Exception as exc:
            return self._ended(row, job, exc)
        job.context = context
        return Planned(row, job, bound, rendered)

    def _wait_for(self, row: Any, reason: str) -> None:
        """Keep the due actions of a rule that is not loaded while the last load could not read every rule (the
        rules directory missing at start-up, a rule file with problems and no last loaded version): the rule may
        only be unreadable, and a cancelled action is lost for good. They are given back `pending` and left out of
        the claims until the rules change (`_recheck_waiting`), so they are not claimed again every pass."""
        if self.waiting.get(row.rule_id) == reason:
            return
        self.waiting[row.rule_id] = reason
        log.error(
            "due actions wait for a rule that is not loaded: they run once it loads, and are cancelled once the "
            "rule files are read without problems and without it",
            rule=row.rule_id,
            reason=reason,
        )
        self.on_waiting()

    def _recheck_waiting(self) -> None:
        """Claim again the actions of the rules that loaded since, or that the last load showed to be gone."""
        loaded = self.rules().by_id
        for rule_id in list(self.waiting):
            if rule_id in loaded or self.unloaded(rule_id) is None:
                del self.waiting[rule_id]
                self._loaded_at[rule_id] = self.clock.now()
                log.info("actions waiting for a rule are taken again", rule=rule_id, loaded=rule_id in loaded)

    def _runnable_since(self, row: Any, now: datetime) -> datetime:
        """Since when this scheduler could have run the action `row`: since its passes run without a pause, since
        the rule loaded when its actions waited for it, or since the action was scheduled, when that was after its
        due time (an event handled hours after it happened, NATS or the consumer away: its wait counts from the
        event). `late` judges an action by how long it was due before then (downtime), not by how long it then
        waited its turn: a burst of more actions than one batch takes a pass per batch, and at most `batch` run
        at once (webhooks hanging up to their timeout keep their places)."""
        since = max(self._up_since or now, aware(row.created_at))
        loaded = self._loaded_at.get(row.rule_id)
        return since if loaded is None else max(since, loaded)

    async def _prefetch(self, plans: list[Planned]) -> None:
        """Let an action type read what it checks for the whole batch at once (send_email: suppressions, sent)."""
        by_type: dict[str, list[Planned]] = {}
        for plan in plans:
            if hasattr(plan.bound, "prefetch"):
                by_type.setdefault(plan.row.action_type, []).append(plan)
        for group in by_type.values():
            try:
                await group[0].bound.prefetch([(p.rendered, p.job) for p in group], self.deps)
            except Exception:  # each action then checks for itself
                log.warning("batch prefetch failed; actions check one by one", exc_info=True)

    async def _run(self, plan: Planned | Result) -> Result:
        """Execute one planned action; how it ended, to be recorded with the rest of the batch."""
        if isinstance(plan, Result):
            return plan
        try:
            result = await plan.bound.execute(plan.rendered, plan.job, self.deps)
        except Exception as exc:
            return self._ended(plan.row, plan.job, exc)
        return Result(plan.row.id, "done", result=result, batched=plan.job.batched)

    def _ended(self, row: Any, job: Job, exc: Exception) -> Result:
        if isinstance(exc, Outcome):
            return Result(row.id, exc.status, error=exc.message)
        if isinstance(exc, Skipped):
            return Result(row.id, "cancelled", error=str(exc))
        if isinstance(exc, Permanent):
            log.warning("action failed", rule=row.rule_id, key=row.key, error=str(exc)[:300])
            return Result(row.id, "failed", error=str(exc))
        # Transient, or a bug: retry with back-off up to the limit, then failed
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, Transient) else str(exc)
        if not isinstance(exc, Transient):
            log.error("action raised unexpectedly", rule=row.rule_id, key=row.key, exc_info=exc)
        return self._retry(row, job.attempt, message)

    def _retry(self, row: Any, attempt: int, message: str) -> Result:
        """The back-off counts from now, when the attempt ended, not from its start (`job.now`): a webhook that
        timed out after 60 s was retried 30 s after its start, at once, with no back-off at all."""
        now = self.clock.now()
        if attempt >= self.retry.max_attempts:
            log.warning("action failed after retries", rule=row.rule_id, key=row.key, attempts=attempt, error=message)
            return Result(row.id, "failed", error=f"after {attempt} attempts: {message}")
        log.info("action will be retried", rule=row.rule_id, key=row.key, attempt=attempt, error=message[:300])
        return Result(row.id, "pending", error=message, retry_at=now + self.retry.delay(attempt))


async def _all_cut_short(runs: list[asyncio.Task[Result]]) -> None:
    """The batch cancelled (the daemon stopping): cut short the runs still going, and let them end."""
    for run in runs:
        run.cancel()
    if runs:
        await asyncio.wait(runs)


async def _shielded(recording: Coroutine[Any, Any, T]) -> T:
    """Record to the end although the scheduler is cancelled meanwhile (the daemon stopping), for up to
    STOP_RECORD_SECONDS more: the actions have run. The cancellation goes on after that."""
    task = asyncio.ensure_future(recording)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task}, timeout=STOP_RECORD_SECONDS)
        raise


def _bound(rule: CompiledRule | None, row: Any) -> Any:
    """The run's action in the rule as loaded now: followed through the edits made since it was scheduled."""
    if rule is None:
        raise Outcome("cancelled", f"rule {row.rule_id!r} is no longer loaded (removed, disabled or invalid)")
    index = row.action_index
    if row.do_digest is not None:  # None: scheduled before runs stored their rule's actions, found by position
        index = follow(row.do_digest.split(), rule.do_digest.split(), row.action_index)
        if index is None:
            raise Outcome(
                "cancelled",
                f"rule {row.rule_id!r} changed: its action {row.action_index} ({row.action_type}) was removed, or the "
                "actions around it changed so that it cannot be told which one it is now",
            )
    if index >= len(rule.actions) or rule.action_types[index] != row.action_type:
        raise Outcome("cancelled", f"rule {row.rule_id!r} changed: action {index} is no longer {row.action_type}")
    return rule.actions[index]


def _check_late(rule: CompiledRule, row: Any, runnable_since: datetime) -> None:
    """`late`: after downtime an overdue action runs, is skipped, or runs only if within the allowed delay; late by
    how long it was due before the scheduler could run it (`Scheduler._runnable_since`)."""
    if _is_backoff_retry(row):
        return  # a retry is late by design
    due = aware(row.due_at)
    reason = late_reason(rule, due, max(due, runnable_since))
    if reason is not None:
        raise Outcome("cancelled", reason)


def _is_backoff_retry(row: Any) -> bool:
    """Whether this claim retries a run that failed (retry_at recorded its error), not the first run taken over
    from a worker that died: claim_due counts that one as attempt 2 too, and it is as late as its due time."""
    return row.attempts > 1 and row.last_error is not None


def late_reason(rule: CompiledRule, due_at: datetime, now: datetime) -> str | None:
    """Why an action due at `due_at` is cancelled when first run at `now` under the rule's `late`, or None."""
    if rule.late_within is None:
        return None
    lateness = now - due_at
    if lateness <= rule.late_within:
        return None
    late = rule.rule.late
    policy = late if isinstance(late, str) else f"run_if_within {late.run_if_within}"
    return f"late by {lateness} (late: {policy})"
