"""`leadhub run` migrates in a child process, so the long-running daemon never holds alembic.

Once imported, alembic, mako and the pygments lexers mako loads stay resident for the rest of the run, and
the migration's own allocations leave the heap larger: a daemon idled at 105.9 MiB after a first start and
97.2 MiB after a restart on the same database (BENCHMARKS.md). Only a first start and the first start after
an upgrade migrate; every other start finds the database at the heads with one plain query (store/db.py)
and starts no child.

The child gets the database URL in its environment, not on its command line (`ps` shows the latter). Its log
lines (a warning about rows the migration found broken) go to its stderr, which the daemon copies to its own,
redacted as its own log lines are: what the child prints outside its log (the reason it exits with, a traceback,
a warning) quotes whatever the error quoted, a URL with its password or a customer's address.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.hub.exit_codes import SCHEMA_NEWER
from leadhub.hub.logging import configure, redact_text
from leadhub.hub.process_ties import dies_with_parent
from leadhub.store.db import SchemaNewerThanCode, applied_revisions, at_heads, refuse_newer, run_upgrade

URL_VARIABLE = "LEADHUB_MIGRATE_URL"
LOG_VARIABLE = "LEADHUB_MIGRATE_LOG"  # "<level> <format>": the child logs as the daemon does
LINE_LIMIT = 1 << 20  # bytes of one line of the child's stderr (a traceback's longest, should it crash)
ERROR_TAIL = 2000  # characters of the child's stderr kept in the error

log = structlog.get_logger("leadhub.store")


class MigrationFailed(RuntimeError):
    """The migration child exited with an error; the message is the end of what it printed."""


async def upgrade_in_child(engine: AsyncEngine, *, log_level: str = "info", log_format: str = "console") -> None:
    """Bring the database to the heads as `store.db.upgrade` would, in a child process when there is work."""
    if await at_heads(engine):  # raises SchemaNewerThanCode: no child is started for a newer release's database
        return
    log.info("migrating the database in a child process")
    environment = {
        **os.environ,
        URL_VARIABLE: engine.url.render_as_string(hide_password=False),
        LOG_VARIABLE: f"{log_level} {log_format}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        env=environment,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        limit=LINE_LIMIT,
        preexec_fn=dies_with_parent(signal.SIGKILL),  # a migration transaction dies with the daemon, then rolls back
    )
    try:
        stderr = await _copied_to_stderr(process)
    except BaseException:  # the daemon is stopping (or cannot read it): the migration's transaction rolls back
        process.kill()  # not left running beside the next try, holding the migration lock
        await process.wait()
        raise
    if process.returncode == SCHEMA_NEWER:  # a newer leadhub migrated it since the check above
        refuse_newer(await applied_revisions(engine))
    if process.returncode != 0:
        said = stderr.strip()[-ERROR_TAIL:] or "no output"
        raise MigrationFailed(f"the migration process exited with {process.returncode}: {said}")
    log.info("database migrated", child=process.pid)


async def _copied_to_stderr(process: asyncio.subprocess.Process) -> str:
    """Each line the child writes, redacted, written to this process's stderr as it comes (its log lines: a warning
    about rows broken before the migration is seen without a failure); the end of it returned, for the error."""
    assert process.stderr is not None
    said = ""
    async for line in _lines(process.stderr):
        text = redact_text(line.decode(errors="replace"))
        said = (said + text)[-2 * ERROR_TAIL :]  # room for the blank lines the error strips
        sys.stderr.write(text)
        sys.stderr.flush()
    await process.wait()
    return said


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The stream's lines, each ending in a newline; one longer than LINE_LIMIT cut to it, saying how much was left
    out. Iterating the stream raised ValueError on such a line: the migration was taken for failed and tried again,
    the child that printed it neither killed nor waited for, migrating beside the next."""
    kept, left_out, at_end = b"", 0, False
    while not at_end:
        ended = True
        try:
            part = (await stream.readuntil(b"\n"))[:-1]
        except asyncio.LimitOverrunError as exc:  # no newline within the limit: take what is buffered, go on
            part, ended = await stream.readexactly(exc.consumed), False
        except asyncio.IncompleteReadError as exc:  # the end: a last line without its newline, or nothing
            part, at_end = exc.partial, True
            if not (part or kept or left_out):
                return
        room = LINE_LIMIT - len(kept)
        kept, left_out = kept + part[:room], left_out + max(0, len(part) - room)
        if ended:
            note = f" [{left_out} more bytes of this line left out]".encode() if left_out else b""
            yield kept + note + b"\n"
            kept, left_out = b"", 0


def main() -> None:
    """The child: migrate the database named in the environment; one line on stderr when it cannot."""
    url = os.environ.pop(URL_VARIABLE, None)
    if not url:
        sys.exit(f"{URL_VARIABLE} is not set: this module is run by `leadhub run`, not by hand")
    level, _, fmt = os.environ.pop(LOG_VARIABLE, "info console").partition(" ")
    configure(level, fmt or "console")
    try:
        run_upgrade(url)
    except SchemaNewerThanCode as exc:  # the parent stops: no retry can help
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(SCHEMA_NEWER)
    except Exception as exc:  # the parent logs it and retries with back-off
        sys.exit(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
