"""Identifiers: time-ordered ULIDs for new rows, and stable ids derived from idempotency keys."""

import base64
import hashlib

from ulid import ULID


def new_id() -> str:
    """A new 26-character, lexicographically time-ordered id (ULID)."""
    return str(ULID()).lower()


def id_for_key(key: str) -> str:
    """The id of the inquiry stored under `key`: the same for every delivery of the same item.

    A webhook answers with this id before the pipeline has stored anything, and the stored
    inquiry carries the same id, so a client can look it up later.
    """
    digest = hashlib.sha256(key.encode()).digest()
    return base64.b32encode(digest).decode()[:26].lower()
