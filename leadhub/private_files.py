"""leadhub's own files are its user's only: the store holds every contact, raw payload and the signing key of
survey and unsubscribe links, so another local user who could read them could forge those links too."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dir(path: Path) -> bool:
    """Create `path` (its parents as the umask has them) for this user only; False if it was there.

    A directory that exists is the admin's and keeps its mode: a group they share it with may be on purpose.
    """
    if path.is_dir():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:  # made meanwhile (a worker process, a second command): its maker chose the mode
        return False
    return True


def create_private_file(path: Path) -> None:
    """Create `path` empty for this user only, unless it exists; a later open keeps the mode it has."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))


def owner_of_nearest_directory(directory: Path) -> os.stat_result:
    """`directory`'s owner, or that of the nearest of its parents that exists (the one a new directory goes in): whom
    files root makes there for the daemon belong to (`sudo leadhub db restore` or `db upgrade` on a new machine)."""
    for candidate in (directory, *directory.absolute().parents):
        if candidate.is_dir():
            return candidate.stat()
    return Path("/").stat()


def others_can_read(path: Path) -> bool:
    """Whether users other than the owner may read or list `path` (any group or other permission bit)."""
    return bool(path.stat().st_mode & 0o077)
