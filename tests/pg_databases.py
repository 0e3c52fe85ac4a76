"""PostgreSQL databases for the tests: one per test, and a migrated one emptied for the next test, not dropped.

CREATE DATABASE copies its template through the WAL (~8 MB for the migrated schema) and DROP DATABASE unlinks it
again: ~0.25 s on an idle machine and a second or more under CI's load, for each of several hundred tests. A
migrated database a test left with the template's schema is emptied (DELETE, a few rows) and handed to the process's
next test; one whose schema the test changed (a dropped column, a newer alembic_version, a trigger) is dropped, as
is one a check fails on.
"""

from __future__ import annotations

import uuid

import asyncpg
import structlog
from sqlalchemy.engine import make_url

log = structlog.get_logger("tests.pg_databases")

# Everything a test can change outside the rows: relations and their columns, defaults, constraints, indexes,
# triggers, functions, types, schemas, owners and grants, the database's own settings, and the applied revisions
# (a query on alembic_version fails when a test dropped it: not reusable).
SCHEMA_FINGERPRINT = r"""
SELECT md5(string_agg(item, E'\n' ORDER BY item)) FROM (
    SELECT format('relation %s.%s %s %s %s', n.nspname, c.relname, c.relkind, c.relowner::regrole, c.relacl)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
    UNION ALL
    SELECT format('column %s.%s %s %s %s', a.attrelid::regclass, a.attname, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL
    SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'
    UNION ALL
    SELECT format('trigger %s %s', tgrelid::regclass, tgname) FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT format('function %s', oid::regprocedure) FROM pg_proc WHERE pronamespace = 'public'::regnamespace
    UNION ALL
    SELECT format('type %s %s', typname, typtype) FROM pg_type WHERE typnamespace = 'public'::regnamespace
    UNION ALL
    SELECT format('schema %s %s %s', nspname, nspowner::regrole, nspacl) FROM pg_namespace
    WHERE nspname !~ '^pg_(temp_|toast_temp_)'  -- a session's temporary schema stays listed after it
    UNION ALL
    SELECT format('extension %s %s', extname, extversion) FROM pg_extension
    UNION ALL
    SELECT format('setting %s', setconfig) FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT format('revision %s', version_num) FROM public.alembic_version
) AS schema(item)
"""
TABLES_TO_EMPTY = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
MOST_ROWS_DELETED = 5000  # more leave dead rows the next test's reads would wade through: dropped instead
SESSIONS_OF = "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1"
OTHER_SESSIONS = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


class PgDatabases:
    """Creates, empties for reuse and drops the test databases of one test process."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.template: str | None = None  # the migrated database copies are made of
        self.template_fingerprint: str | None = None
        self.reusable: list[str] = []  # migrated copies emptied by a test's teardown

    def url(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    async def _connect(self, name: str | None = None) -> asyncpg.Connection:
        url = make_url(self.admin_url)
        return await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=name or url.database,
        )

    async def create(self, template: str | None = None) -> str:
        name = _new_name()
        conn = await self._connect()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        finally:
            await conn.close()
        return name

    async def drop(self, name: str) -> None:
        conn = await self._connect()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def fingerprint(self, name: str) -> str:
        conn = await self._connect(name)
        try:
            return await conn.fetchval(SCHEMA_FINGERPRINT)
        finally:
            await conn.close()

    async def use_as_template(self, name: str) -> None:
        """`name` is migrated: copies for tests are made of it, and a copy with its schema can be reused."""
        self.template_fingerprint = await self.fingerprint(name)
        self.template = name

    async def migrated_copy(self) -> str:
        assert self.template is not None
        if self.reusable:
            return self.reusable.pop()
        return await self.create(self.template)

    async def give_back(self, name: str, *, migrated: bool) -> None:
        """After a test: empty a migrated copy with the template's schema for the next test, else drop it."""
        renamed = await self._renamed(name) if migrated and await self._emptied(name) else None
        if renamed:
            self.reusable.append(renamed)
        else:
            await self.drop(name)

    async def _renamed(self, name: str) -> str | None:
        """The emptied database under a new name: a process the test left behind cannot write into the next test's."""
        renamed = _new_name()
        conn = await self._connect()
        try:
            await conn.execute(SESSIONS_OF, name)  # RENAME waits up to 5 s for them to be gone
            await conn.execute(f'ALTER DATABASE "{name}" RENAME TO "{renamed}"')
        except asyncpg.PostgresError:  # a session came back in between: dropped instead
            return None
        finally:
            await conn.close()
        return renamed

    async def _emptied(self, name: str) -> bool:
        try:
            conn = await self._connect(name)
        except (OSError, asyncpg.PostgresError):
            return False
        try:
            await conn.execute(OTHER_SESSIONS)  # a daemon killed mid-transaction, a hub's pool: their locks go too
            if await conn.fetchval(SCHEMA_FINGERPRINT) != self.template_fingerprint:
                return False
            tables = [row["tablename"] for row in await conn.fetch(TABLES_TO_EMPTY)]
            await conn.execute("SET lock_timeout = '10s'")
            deleted = 0
            async with conn.transaction():  # DELETE: TRUNCATE makes and unlinks files, ~10x the time for a few rows
                await conn.execute("SET LOCAL session_replication_role = replica")  # no foreign key checks: all go
                for table in tables:
                    deleted += int((await conn.execute(f'DELETE FROM public."{table}"')).split()[-1])
            return deleted <= MOST_ROWS_DELETED
        except asyncpg.PostgresError as exc:  # dropped instead; the next test gets a new copy
            log.warning("test database not reused", database=name, error=str(exc))
            return False
        finally:
            await conn.close()

    async def drop_all(self) -> None:
        for name in [*self.reusable, *filter(None, [self.template])]:
            await self.drop(name)
        self.reusable.clear()


def _new_name() -> str:
    return f"lh_test_{uuid.uuid4().hex[:12]}"
