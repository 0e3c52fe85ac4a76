"""Give a finished file its final name unless that name is taken, also where the filesystem has no hard links."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path

# What os.link raises where the filesystem has no hard links: exFAT and FAT (EPERM), CIFS/SMB shares and some FUSE
# filesystems (ENOTSUP, ENOSYS).
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _find_renameat2() -> Callable[..., int] | None:
    """Linux's renameat2 (glibc 2.28+, musl 1.2.2+), or None (another system, an older C library)."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:  # no C library to load symbols from (not a case leadhub supports; then the plain fallback)
        return None


_renameat2 = _find_renameat2()


def name_without_replacing(source: Path, target: Path) -> None:
    """Give `source` the name `target`; FileExistsError, and nothing changed, when `target` exists.

    A hard link is the usual way (`source` is left for the caller to remove); where the filesystem has none, a
    rename that refuses to replace (renameat2 with RENAME_NOREPLACE, which exFAT, FAT and CIFS have too).
    """
    try:
        os.link(source, target)
        return
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
    _rename_without_replacing(source, target)


def _rename_without_replacing(source: Path, target: Path) -> None:
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):  # EINVAL, ENOSYS: no RENAME_NOREPLACE here (filesystem, kernel)
            raise OSError(code, os.strerror(code), str(source), None, str(target))  # EEXIST: FileExistsError
    # A check, then a plain rename: a file another process creates under `target` between the two is replaced. The
    # window is microseconds and needs a second writer choosing the same new name; the fallback only runs without
    # both hard links and RENAME_NOREPLACE.
    if target.exists():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    os.rename(source, target)
