"""Worker processes: more CPU cores for webhooks and the pipeline, on the primary's port, queue and store.

With `workers: N` the `leadhub run` process (the primary, worker 0) starts N-1 more once its store is
ready. Each worker is `leadhub run --worker K` with the primary's settings (the configuration file's content the
primary validated, passed in an unnamed in-memory file: an edit made since, a rotated secret, waits for a restart
of the daemon instead of reaching only the workers started again after a crash), except that it binds the
same HTTP port (SO_REUSEPORT: the kernel spreads new connections over the processes), connects to the
primary's NATS (the embedded one too) and runs the `http`, `pipeline` and `relay` roles: it shares the
durable pipeline consumer and relays its own share of the outbox (by subject, so a subject's events keep
their order). `worker_roles` narrows that: with `pipeline,relay` the workers take the pipeline and the
primary (`roles: http,triggers`) answers the webhooks, so neither waits behind the other's batches; a
worker without `http` binds no port. Groups separated by ';' give each worker its own roles: with
`workers: 3` and `http;pipeline,relay` two processes answer webhooks and one runs the pipeline. What must
run once stays in the primary: the rule engine and its scheduler, and pull connectors such as IMAP. A worker
that exits is started again with back-off. The primary stops its workers before its queue; if the primary is
killed, the kernel sends them SIGTERM. A worker that exits with status 3 (a newer leadhub migrated the database)
is not started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from leadhub.error_text import brief
from leadhub.hub.config import ROLES, WORKER_ROLES, HubConfig, Settings
from leadhub.hub.exit_codes import SCHEMA_NEWER
from leadhub.hub.process_ties import dies_with_parent

log = structlog.get_logger("leadhub.workers")

RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 10.0
STEADY_AFTER = 60.0  # a worker that ran this long before exiting is restarted without the built-up back-off


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to join the primary: where the queue and the store are, the port, its roles."""

    nats_url: str
    http_port: int
    database_url: str
    roles: tuple[tuple[str, ...], ...]  # worker K's roles at K - 1
    config_file: Path | None
    primary_relays: bool = True  # whether the primary relays share 0 of the outbox
    relay_shares: int = 1  # processes that relay, the primary included
    config_text: bytes | None = field(default=None, repr=False)  # the file as the primary read it (b"": none)

    @classmethod
    def of(cls, config: HubConfig, nats_url: str, http_port: int) -> WorkerSpec:
        settings = config.settings
        return cls(
            nats_url=nats_url,
            http_port=http_port,
            database_url=settings.effective_database_url,
            roles=tuple(worker_roles(settings, index) for index in range(1, settings.workers)),
            config_file=config.source,
            primary_relays="relay" in settings.roles,
            relay_shares=relaying_processes(settings),
            config_text=config.text,
        )

    def roles_of(self, index: int) -> tuple[str, ...]:
        return self.roles[index - 1]

    def command(self, index: int, ready_fd: int, config_fd: int | None = None) -> list[str]:
        """Worker `index`'s command line; `config_fd` holds `config_text` (secrets: never on a command line)."""
        command = [sys.executable, "-m", "leadhub.hub", "run", "--worker", str(index), "--ready-fd", str(ready_fd)]
        if "relay" in self.roles_of(index):  # shares in process order: the primary's first, then relaying workers
            share = self.primary_relays + sum("relay" in roles for roles in self.roles[: index - 1])
            command += ["--relay-share", f"{share}/{self.relay_shares}"]
        if self.config_file is not None:  # named in messages; read only without `config_fd`
            command += ["--config", str(self.config_file.resolve())]
        if config_fd is not None:
            command += ["--config-fd", str(config_fd)]
        return command

    def config_copy(self) -> int | None:
        """A descriptor of an unnamed in-memory file holding `config_text`, for one worker to read; None without it."""
        if self.config_text is None:
            return None
        fd = os.memfd_create("leadhub-config") if hasattr(os, "memfd_create") else _unnamed_temporary_file()
        try:
            view = memoryview(self.config_text)
            while view:
                view = view[os.write(fd, view) :]
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            os.close(fd)
            raise
        return fd

    def environment(self, index: int, environ: dict[str, str]) -> dict[str, str]:
        """The primary's environment, pointed at the primary's queue, store and port, with worker `index`'s roles.

        `worker_roles` is the worker's own group too: a worker starts no workers, and the primary's groups
        (`http;pipeline,relay`) would fail the check that workers answer webhooks only beside a primary that does.
        `workers` is the primary's count, wherever the primary got it: `worker_roles` with one process is refused.
        """
        roles = ",".join(self.roles_of(index))
        return {
            **environ,
            "LEADHUB_NATS_URL": self.nats_url,
            "LEADHUB_DATABASE_URL": self.database_url,
            "LEADHUB_HTTP_PORT": str(self.http_port),
            "LEADHUB_ROLES": roles,
            "LEADHUB_WORKER_ROLES": roles,
            "LEADHUB_WORKERS": str(len(self.roles) + 1),
        }


def worker_roles(settings: Settings, index: int) -> tuple[str, ...]:
    """What worker `index` runs: its group of `worker_roles` (or the one group for all), else the primary's roles
    that may run more than once."""
    groups = settings.worker_roles
    if groups is None:
        return tuple(role for role in settings.roles if role in WORKER_ROLES)
    return groups[0] if len(groups) == 1 else groups[index - 1]


def roles_run_nowhere(settings: Settings) -> tuple[str, ...]:
    """The roles neither the primary nor any of its workers runs: their work waits for another replica (or, with the
    embedded queue, for a start that runs them)."""
    running = set(settings.roles).union(*(worker_roles(settings, index) for index in range(1, settings.workers)))
    return tuple(role for role in ROLES if role not in running)


def unrun_roles_note(settings: Settings) -> str:
    """Who does the work of `roles_run_nowhere`: another replica on a shared queue, else a later start."""
    if settings.nats_url:
        return "by no process of this daemon; another replica must run them"
    return "by no process of this daemon; the embedded queue keeps what they would take until a start that runs them"


def relaying_processes(settings: Settings) -> int:
    """How many processes relay the outbox, each its own share: the primary (share 0) if it relays, then workers."""
    workers_relaying = sum("relay" in worker_roles(settings, index) for index in range(1, settings.workers))
    return ("relay" in settings.roles) + workers_relaying


class WorkerPool:
    """Starts workers 1..count-1, keeps them running, and stops them."""

    def __init__(self, spec: WorkerSpec, count: int, on_exit: Callable[[int], None] = lambda pid: None) -> None:
        self.spec = spec
        self.count = count
        self.on_exit = on_exit  # pid of a worker that has exited (its metric files are folded into the totals)
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.serving: set[int] = set()  # workers that said they serve HTTP and have their store
        self.problems: dict[int, str] = {}  # why a worker is not serving: how it last exited or failed to start
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_running(index), name=f"worker-{index}") for index in range(1, self.count)
        ]

    def status(self) -> dict[str, object]:
        """For /readyz: ready once every worker serves or, without `http`, works (a restart makes it 503 meanwhile);
        `error` says why the others do not."""
        problems = [f"worker {index}: {problem}" for index, problem in sorted(self.problems.items())]
        return {
            "ok": len(self.serving) == self.count - 1,
            "serving": len(self.serving),
            "expected": self.count - 1,
            "error": "; ".join(problems) or None,
        }

    async def _keep_running(self, index: int) -> None:
        delay = RESTART_DELAY
        while not self._stopping.is_set():
            started = time.monotonic()
            unforeseen: Exception | None = None
            try:
                code = await self._start_and_wait(index)
            except Exception as exc:  # logged below and tried again: the end of this task would be silent
                code, unforeseen = f"failed: {brief(exc)}", exc
            if self._stopping.is_set():
                return
            self.problems[index] = code if isinstance(code, str) else f"exited with status {code}"
            if code == SCHEMA_NEWER:  # it would find the same database again: /readyz stays 503 instead
                self.problems[index] = "a newer leadhub migrated the database; not started again"
                log.error("worker exited: a newer leadhub migrated the database; not starting it again", worker=index)
                return
            if time.monotonic() - started > STEADY_AFTER:
                delay = RESTART_DELAY
            if isinstance(code, int):
                log.error("worker exited; starting it again", worker=index, code=code, retry_in=delay)
            else:
                log.error(
                    "worker could not be started; trying again",
                    worker=index,
                    error=code,
                    retry_in=delay,
                    exc_info=unforeseen,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(MAX_RESTART_DELAY, delay * 2)

    async def _start_and_wait(self, index: int) -> int | str:
        """Start worker `index` and wait until it exits: its exit code, or why it could not be started."""
        try:  # out of descriptors (EMFILE), the pipe fails before the worker's own start could
            ready_read, ready_write = os.pipe()
        except OSError as exc:
            return f"not started: {exc}"
        config_fd: int | None = None
        try:
            config_fd = self.spec.config_copy()
            process = await asyncio.create_subprocess_exec(
                *self.spec.command(index, ready_write, config_fd),
                env=self.spec.environment(index, dict(os.environ)),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(ready_write,) if config_fd is None else (ready_write, config_fd),
                preexec_fn=dies_with_parent(signal.SIGTERM),  # drain and exit if the primary is killed
            )
        except OSError as exc:
            os.close(ready_read)
            return f"not started: {exc}"
        finally:
            os.close(ready_write)  # the child has its copy; EOF on the read end means it exited
            if config_fd is not None:
                os.close(config_fd)
        self.processes[index] = process
        log.info("worker started", worker=index, pid=process.pid)
        if self._stopping.is_set():  # the stop began while it was being started: its SIGTERM went to the others
            _terminate(process)
        try:
            return await self._run(index, process, ready_read)
        finally:
            if process.returncode is not None:  # not a worker still running past the stop's kill
                self._clean_up_after(index, process.pid)

    def _clean_up_after(self, index: int, pid: int) -> None:
        """`on_exit`, whose failure is its own: raised from the `finally` above, it hid how the worker exited."""
        try:
            self.on_exit(pid)
        except Exception as exc:
            log.error("cleaning up after a worker failed; its metric files stay", worker=index, pid=pid, exc_info=exc)

    async def _run(self, index: int, process: asyncio.subprocess.Process, ready_read: int) -> int:
        """Wait for the worker to exit; meanwhile count it as serving once it writes to its ready pipe."""
        loop = asyncio.get_running_loop()

        def on_ready() -> None:
            loop.remove_reader(ready_read)
            if os.read(ready_read, 64):  # empty: the worker closed the pipe without being ready (it exited)
                self.serving.add(index)
                self.problems.pop(index, None)
                log.info("worker serving", worker=index, pid=process.pid)

        loop.add_reader(ready_read, on_ready)
        try:
            return await process.wait()
        finally:
            self.serving.discard(index)
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(ready_read)
            os.close(ready_read)

    async def stop(self, grace: float) -> None:
        """SIGTERM every worker (each finishes its batch, as the primary does); SIGKILL any left after `grace` s.

        The stop waits for the tasks that keep the workers running, each of which ends once its worker has exited:
        a worker whose start was under way is signalled as soon as it is started (`_start_and_wait`) and waited
        for too, instead of running on, unstopped, until the primary exits.
        """
        self._stopping.set()
        for process in self.processes.values():
            _terminate(process)
        running = [task for task in self._tasks if not task.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for process in self.processes.values():
                if late and process.returncode is None:
                    log.warning("worker did not stop in time; killing it", pid=process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.wait(late, timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


def _unnamed_temporary_file() -> int:
    """Where there is no memfd_create: a private temporary file, already unlinked (no name to open it by)."""
    import tempfile

    with tempfile.TemporaryFile() as file:
        return os.dup(file.fileno())


def read_config_copy(fd: int) -> bytes:
    """In a worker: the configuration file's content the primary passed (`WorkerSpec.config_copy`)."""
    with os.fdopen(fd, "rb") as file:
        return file.read()


def tell_primary_ready(ready_fd: int | None) -> None:
    """In a worker: tell the primary it has its store and runs its roles (one write, then the pipe closes)."""
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, b"ready\n")
    except OSError as exc:  # the primary is gone; SIGTERM from the kernel follows
        log.warning("could not tell the primary this worker serves", error=str(exc))
    finally:
        with contextlib.suppress(OSError):
            os.close(ready_fd)
