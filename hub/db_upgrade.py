"""`leadhub db upgrade`: bring the database to this release's schema and say what that took.

Run as root on a new machine (`sudo leadhub db upgrade` before the first start), it left the SQLite database and
the data dir it made root's, and the daemon's user could not open them: they go to the owner of the directory
they were made in, as `db restore` does (hub/db_restore.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from leadhub.private_files import owner_of_nearest_directory
from leadhub.store.db import MIGRATION_HEADS, redacted_url, run_upgrade


@dataclass(frozen=True)
class Upgraded:
    database: str  # the URL, its password hidden
    before: frozenset[str]  # the revisions it was at

    @property
    def message(self) -> str:
        heads = ", ".join(sorted(MIGRATION_HEADS))
        if self.before == MIGRATION_HEADS:
            return f"{self.database}: up to date (revisions {heads}); nothing to do"
        if not self.before:
            return f"{self.database}: created the leadhub tables at revisions {heads}"
        return f"{self.database}: migrated from revisions {', '.join(sorted(self.before))} to {heads}"


def upgrade_database(url: str) -> Upgraded:
    new_file = _NewSqliteFile.of(url)
    try:
        before = run_upgrade(url)
    finally:
        if new_file is not None:
            new_file.hand_over()
    return Upgraded(redacted_url(url), before)


@dataclass(frozen=True)
class _NewSqliteFile:
    """A SQLite database the upgrade is about to create, and who should own it."""

    path: Path
    new_directory: bool
    owner: os.stat_result

    @classmethod
    def of(cls, url: str) -> _NewSqliteFile | None:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return None
        path = Path(parsed.database)
        if path.exists():
            return None
        return cls(path, not path.parent.is_dir(), owner_of_nearest_directory(path.parent))

    def hand_over(self) -> None:
        """Made by root where another user owns the directory: the database (with its journal, if any is left) and
        the directory made for it are that user's."""
        if os.geteuid() != 0 or self.owner.st_uid == 0:
            return
        made = [self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")]
        for path in ([self.path.parent] if self.new_directory else []) + made:
            if path.exists():
                os.chown(path, self.owner.st_uid, self.owner.st_gid)
