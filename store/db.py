"""Engines and migrations: SQLite in WAL mode with a busy timeout, or PostgreSQL, behind one async API."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from leadhub.compact_json import compact_encoder
from leadhub.error_text import brief
from leadhub.private_files import create_private_file, make_private_dir
from leadhub.url_redaction import redact_urls

if TYPE_CHECKING:
    from alembic.config import Config

log = structlog.get_logger("leadhub.store")

MIGRATIONS = Path(__file__).parent / "migrations"
# The head revisions of migrations/versions (several branches off 0001, none merged). A database whose
# alembic_version holds exactly these needs no migration, and start-up then never imports alembic (~7 MiB
# resident). A new migration must be added here; tests/store/test_migrations.py compares with alembic.
MIGRATION_HEADS = frozenset({"0002", "0003", "0006", "0007", "0009", "0010"})
# Every revision in migrations/versions: one outside it in alembic_version was written by a newer leadhub. Known
# without importing alembic, so the daemon can tell before it migrates, and /readyz while it runs.
KNOWN_REVISIONS = frozenset({"0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010"})
SQLITE_BUSY_TIMEOUT_MS = 5000
# SQLite's own page cache per connection (its default is 2,000 KiB). The operating system's file cache sits behind
# it, and a quarter MiB per connection measured the same throughput, at 1,000,000 contacts too, for ~5 MiB less
# resident memory at a burst's peak (BENCHMARKS.md).
SQLITE_CACHE_KIB = 256


def json_dumps(value: object) -> str:
    """JSON for every JSON column, valid for both stores whatever came from outside.

    Payload text can hold lone UTF-16 surrogates (a `\\ud800` escape) and numbers Python reads as NaN or
    infinity (`NaN`, `1e999`); PostgreSQL refuses both. Surrogates become `?`, non-finite numbers `null`.
    """
    try:
        text = _encode(value)
    except ValueError:
        text = _encode(_finite(value))
    if text.isascii():  # most of it: no surrogate can be in it
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


# One encoder for every call: `json.dumps` with options builds a new encoder each time (leadhub/compact_json.py).
_encode = compact_encoder(ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


async def lock_for_writing(conn: AsyncConnection) -> None:
    """On SQLite, take the database's write lock now, before the transaction reads what it will change.

    The driver begins a transaction only at the first write, so the reads before it see whatever a
    concurrent writer commits meanwhile (two batches would both open a lead for one person). A write
    that matches nothing begins the transaction and takes the lock, waiting up to the busy timeout.
    On PostgreSQL callers lock the rows they read instead (`FOR UPDATE`); this does nothing there.
    """
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql("DELETE FROM outbox_event WHERE 0")


def redacted_url(url: str) -> str:
    """The database URL with its credentials as `***`, for logs and messages: the password in the user info and
    in the query (`?password=`, which asyncpg reads as well), and a user given alone, as every logged URL shows it."""
    return redact_urls(make_url(url).render_as_string(hide_password=True))


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 5, existing: bool = False, read_only: bool = False) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and foreign keys on every connection.

    Statement errors leave their parameters out (`hide_parameters`): their text reaches logs and dead letters,
    and the parameters are contacts' addresses and messages. `existing`: for commands that only read, a SQLite
    file that is not there raises SchemaNotMigrated instead of being created (with its directory) where they looked.
    `read_only` (with `existing`): a SQLite file that is not in WAL mode (a backup, a restored file) opened read-only;
    one in WAL mode is the daemon's own and opened as it does (read-only, it would be left with a -wal and -shm).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = None
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            if existing and not path.exists():
                raise SchemaNotMigrated("no such file yet: `leadhub run` or `leadhub db upgrade` creates it")
            if read_only and not _in_wal_mode(path):
                return _read_only_sqlite_engine(path)
            make_private_dir(path.parent)
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            json_serializer=json_dumps,
            hide_parameters=True,
        )
        if path is not None:
            event.listen(engine.sync_engine, "do_connect", _created_private(path))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        json_serializer=json_dumps,
        hide_parameters=True,
    )


def _in_wal_mode(path: Path) -> bool:
    """Whether the file's header says WAL (its read and write versions, bytes 18 and 19, are 2)."""
    with open(path, "rb") as file:
        return file.read(20)[18:20] == b"\x02\x02"


def _read_only_sqlite_engine(path: Path) -> AsyncEngine:
    """For `db status`, which changes nothing: the daemon's engine turned a backup it was asked about into a WAL
    database (its header rewritten, -wal and -shm beside it) and failed on a read-only disk. A URI names the file
    whatever its name holds (`#`, `?`, `%`)."""
    url = URL.create("sqlite+aiosqlite", database=path.resolve().as_uri(), query={"uri": "true", "mode": "ro"})
    return create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, hide_parameters=True)


def _created_private(path: Path):  # type: ignore[no-untyped-def]
    """A `do_connect` listener: the database file made this user's only before SQLite would create it with the
    umask's mode (0644: every contact readable by any local user); its -wal and -shm files take that mode."""

    def create(_dialect, _record, _cargs, _cparams) -> None:  # type: ignore[no-untyped-def]
        create_private_file(path)

    return create


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


class SchemaMismatch(RuntimeError):
    """The database's schema is not the one this code was written for; the message says what to do."""


class SchemaNewerThanCode(SchemaMismatch):
    """The database records a revision this code does not have: a newer leadhub migrated it."""

    def __init__(self, revisions: frozenset[str]) -> None:
        self.revisions = revisions  # the ones this code does not have
        super().__init__(newer_schema_message(revisions))


def newer_schema_message(revisions: frozenset[str]) -> str:
    """The one wording of "a newer release migrated this database": every command, `leadhub run` and /readyz."""
    return (
        f"database schema {', '.join(sorted(revisions))} is newer than this release "
        f"({', '.join(sorted(MIGRATION_HEADS))}): a newer leadhub migrated it; run that release, "
        "or restore a backup taken before it migrated the database"
    )


class SchemaNotMigrated(SchemaMismatch):
    """A command that only reads found the database short of the heads (it does not migrate on its own)."""


# Any fixed number: every leadhub migrating a PostgreSQL database takes this one lock for the transaction.
MIGRATION_LOCK_ID = 0x1EAD_0B
Direction = Literal["upgrade", "downgrade"]  # alembic.command's function of that name


class MigrationError(RuntimeError):
    """A migration could not be applied and nothing changed; the message is one line saying why."""


def _migrate(connection: Connection, direction: Direction, revision: str) -> frozenset[str]:
    """Run alembic's `upgrade` or `downgrade` in one transaction that holds the database's migration lock.

    Two processes starting on an empty database would otherwise both create the same tables. On SQLite the
    driver sends no BEGIN before DDL, so without one every statement committed on its own and a migration that
    failed (or was killed) half-way left a schema no revision describes. A failure is a MigrationError naming
    its cause in one line (a newer release's schema stays SchemaNewerThanCode: no retry helps there). Returns the
    revisions the database had before.
    """
    try:
        if connection.dialect.name == "sqlite":
            return _migrate_sqlite(connection, direction, revision)
        with connection.begin():
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            return _run_alembic(connection, direction, revision)
    except (MigrationError, SchemaMismatch):
        raise
    except Exception as exc:
        # brief: the driver's error, without SQLAlchemy's statement dump
        raise MigrationError(f"{direction} to {revision} failed, nothing changed: {brief(exc, 300)}") from exc


def _migrate_sqlite(connection: Connection, direction: Direction, revision: str) -> frozenset[str]:
    """SQLite's procedure for schema changes (sqlite.org/lang_altertable.html): foreign keys off, one write
    transaction, a foreign key check before the commit. A table alembic rebuilds (batch mode) is dropped and
    renamed, which the foreign keys of the rows pointing at it would otherwise refuse."""
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # no effect inside a transaction: before BEGIN
    connection.commit()
    try:
        with connection.begin():
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # waits (busy timeout) for another migrating process
            before = _orphans(connection)
            found = _run_alembic(connection, direction, revision)
            _refuse_new_orphans(before, _orphans(connection), f"{direction} to {revision}")
            return found
    finally:  # the connection goes back to the pool: as every other, with foreign keys on
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


def _orphans(connection: Connection) -> Counter[tuple[str, str]]:
    """Rows whose foreign key points nowhere, counted by (table, the table their key names)."""
    found = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    return Counter((table, parent) for table, _rowid, parent, _key in found)


def _refuse_new_orphans(before: Counter[tuple[str, str]], after: Counter[tuple[str, str]], step: str) -> None:
    """Refuse a migration that leaves more orphan rows in a table than it found there; warn about the rest.

    Orphans can be there before any migration (a parent deleted while SQLite's foreign keys were off, by hand
    or by an older release). Refusing them made every upgrade fail and `leadhub run` retry for ever; the
    migration is answerable only for those it would add.
    """
    added = {key: count - before[key] for key, count in after.items() if count > before[key]}
    if added:
        where = ", ".join(f"{count} in {table} (to {parent})" for (table, parent), count in sorted(added.items()))
        raise MigrationError(f"{step} would leave rows whose foreign key points nowhere: {where}; nothing changed")
    for (table, parent), count in sorted(after.items()):
        log.warning(
            "rows whose foreign key points nowhere were there before the migration; left as they are",
            table=table,
            parent=parent,
            rows=count,
        )


def refuse_newer(applied: frozenset[str]) -> None:
    """Raise when the database records a revision missing from migrations/versions (KNOWN_REVISIONS)."""
    if unknown := applied - KNOWN_REVISIONS:
        raise SchemaNewerThanCode(unknown)


def _run_alembic(connection: Connection, direction: Direction, revision: str) -> frozenset[str]:
    """Migrate; the revisions the database had before (read under the migration lock, as alembic reads them)."""
    from alembic import command

    found = recorded_revisions(connection)
    refuse_newer(found)
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, direction)(config, revision)
    return found


def recorded_revisions(connection: Connection) -> frozenset[str]:
    """The revisions in alembic_version; none when the table does not exist yet (an empty database)."""
    if not inspect(connection).has_table("alembic_version"):
        return frozenset()
    return frozenset(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


async def applied_revisions(engine: AsyncEngine) -> frozenset[str]:
    """The database's alembic revisions, read with plain SQL (alembic stays out of the daemon)."""
    async with engine.connect() as connection:
        return await connection.run_sync(recorded_revisions)


async def at_heads(engine: AsyncEngine) -> bool:
    """True when the database needs no migration; raises SchemaNewerThanCode when a newer leadhub migrated it."""
    applied = await applied_revisions(engine)
    refuse_newer(applied)
    return applied == MIGRATION_HEADS


async def require_heads(engine: AsyncEngine) -> None:
    """For read-only commands: a clear error instead of the first query's `no such table`."""
    applied = await applied_revisions(engine)
    if applied == MIGRATION_HEADS:
        return
    if not applied:
        raise SchemaNotMigrated("the database has no leadhub tables yet: run `leadhub db upgrade`")
    refuse_newer(applied)
    raise SchemaNotMigrated(
        f"the database is at revision {', '.join(sorted(applied))}, this leadhub needs "
        f"{', '.join(sorted(MIGRATION_HEADS))}: run `leadhub db upgrade`"
    )


@contextlib.asynccontextmanager
async def engine_at_heads(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine for a command that does not migrate, disposed after: it creates no SQLite file where none was
    and no tables, and a database short of this release's schema raises SchemaNotMigrated saying what to run."""
    engine = create_engine(url, existing=True)
    try:
        await require_heads(engine)
        yield engine
    finally:
        await engine.dispose()


async def upgrade(engine: AsyncEngine, revision: str = "heads") -> frozenset[str]:
    """Apply migrations up to `revision` (idempotent; `run` calls it on every start); the revisions found before.

    A database already at the heads is only read, with plain SQL: alembic is imported when there is
    something to migrate (or a revision other than the heads is asked for). `leadhub run` migrates in a
    child process instead (hub/migrate_child.py), so its long-running process never imports alembic.
    """
    if revision == "heads" and await at_heads(engine):
        return MIGRATION_HEADS
    async with engine.connect() as connection:
        return await connection.run_sync(_migrate, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Take migrations back to `revision`, keeping the rows (for tests and for going back to an older release)."""
    async with engine.connect() as connection:
        await connection.run_sync(_migrate, "downgrade", revision)


def run_upgrade(url: str) -> frozenset[str]:
    """Blocking wrapper for the CLI: the database brought to the heads; the revisions it was at before."""

    async def main() -> frozenset[str]:
        engine = create_engine(url)
        try:
            return await upgrade(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())
