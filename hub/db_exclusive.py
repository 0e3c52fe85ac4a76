"""Hold a SQLite database so that no other process uses it while `db restore` replaces it, whole or damaged."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from typing import IO

from leadhub.hub.db_backup import BackupError

# SQLite's pending, reserved and shared lock bytes (os_unix.c): every process that has the file open as a database
# holds a lock on some of them (in WAL mode a shared one for as long as it has the file open).
LOCK_BYTES_START = 0x40000000
LOCK_BYTES_LENGTH = 512
HEADER_SIZE = 100
MAGIC = b"SQLite format 3\0"


def lock_unused(database: Path) -> sqlite3.Connection | IO[bytes]:
    """The database held exclusively until the returned object is closed; BackupError if another process has it.

    A whole database: SQLite's own exclusive lock, with the WAL folded into the file (which leaves WAL mode: the kept
    copy is one self-contained file). In WAL mode that lock can only be had while no other connection has the database
    open at all. A damaged one (not a database, cut short) SQLite cannot lock, since it reads the file to lock it, and
    on closing it removed the WAL that may hold its last commits: SQLite's lock bytes are taken directly instead.
    """
    if _damaged(database):
        return _lock_bytes(database)
    connection = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        connection.execute("PRAGMA locking_mode=EXCLUSIVE")
        connection.execute("BEGIN EXCLUSIVE")
        connection.execute("COMMIT")  # the lock stays: exclusive locking mode keeps it until the connection closes
        connection.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.OperationalError as exc:
        connection.close()
        raise _in_use(database, str(exc)) from None
    except sqlite3.DatabaseError:  # damaged where its header does not show it: `database disk image is malformed`
        connection.close()
        return _lock_bytes(database)
    return connection


def _damaged(database: Path) -> bool:
    """Whether the file's header says it is no SQLite database, or one longer than the file (cut short).

    An empty file is one SQLite takes for an empty database.
    """
    with open(database, "rb") as file:  # before this process has any lock on it (closing drops a POSIX lock)
        header = file.read(HEADER_SIZE)
        size = os.fstat(file.fileno()).st_size
    if size == 0:
        return False
    if len(header) < HEADER_SIZE or not header.startswith(MAGIC):
        return True
    page_size = int.from_bytes(header[16:18], "big")
    pages = int.from_bytes(header[28:32], "big")
    size_is_valid = header[24:28] == header[92:96]  # the page count is kept up to date (SQLite's file format)
    return size_is_valid and size < pages * (65536 if page_size == 1 else page_size)


def _lock_bytes(database: Path) -> IO[bytes]:
    """The file, open, with a write lock on SQLite's lock bytes: refused while any process holds a lock there.

    A POSIX lock ends when this process closes any descriptor of the file: the caller opens it no more.
    """
    file = open(database, "r+b")  # noqa: SIM115 - returned open: it holds the lock
    try:
        fcntl.lockf(file, fcntl.LOCK_EX | fcntl.LOCK_NB, LOCK_BYTES_LENGTH, LOCK_BYTES_START)
    except OSError:  # EAGAIN or EACCES: another process holds a lock on them
        file.close()
        raise _in_use(database, "another process holds a lock on it") from None
    return file


def _in_use(database: Path, why: str) -> BackupError:
    return BackupError(
        f"{database} is in use ({why}): stop the leadhub that has it open (and any other program), then restore; "
        "nothing changed"
    )
