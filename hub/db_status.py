"""`leadhub db status`: whether the database's schema is this release's, read without changing anything.

Before a deploy (is a migration due?) and after one (did it run?), with an exit status a script can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

from leadhub.hub.exit_codes import NEEDS_UPGRADE, SCHEMA_NEWER
from leadhub.store.db import (
    KNOWN_REVISIONS,
    MIGRATION_HEADS,
    SchemaNotMigrated,
    applied_revisions,
    create_engine,
    newer_schema_message,
    redacted_url,
)


@dataclass(frozen=True)
class SchemaStatus:
    exit_code: int
    message: str


async def schema_status(url: str) -> SchemaStatus:
    database = redacted_url(url)
    release = ", ".join(sorted(MIGRATION_HEADS))
    try:
        engine = create_engine(url, existing=True, read_only=True)  # a backup on a read-only disk too
    except SchemaNotMigrated as exc:  # a SQLite file not there yet
        return SchemaStatus(NEEDS_UPGRADE, f"{database}: {exc} at revisions {release}")
    try:
        applied = await applied_revisions(engine)
    finally:
        await engine.dispose()
    if unknown := applied - KNOWN_REVISIONS:
        return SchemaStatus(SCHEMA_NEWER, f"{database}: {newer_schema_message(unknown)}")
    if applied == MIGRATION_HEADS:
        return SchemaStatus(0, f"{database}: up to date (revisions {release})")
    if not applied:
        return SchemaStatus(
            NEEDS_UPGRADE,
            f"{database}: no leadhub tables yet; `leadhub db upgrade` (or `leadhub run`) creates them at revisions "
            f"{release}",
        )
    due = ", ".join(sorted(MIGRATION_HEADS - applied))
    return SchemaStatus(
        NEEDS_UPGRADE,
        f"{database}: at revisions {', '.join(sorted(applied))}, this release is at {release}; "
        f"`leadhub db upgrade` (or `leadhub run`) applies {due}",
    )
