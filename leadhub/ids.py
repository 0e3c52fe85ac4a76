"""Identifiers: time-ordered ULIDs for new rows, and stable ids derived from idempotency keys."""

import hashlib
import os
import threading
import time

# Base32 in 10-bit steps: a lookup of two characters per step, 13 steps for the 130 bits of 26 characters.
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"  # ULID's alphabet, lower case
_RFC4648 = "abcdefghijklmnopqrstuvwxyz234567"  # base64.b32encode's, lower case
_PAIRS_ULID = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_PAIRS_RFC = [a + b for a in _RFC4648 for b in _RFC4648]
_SHIFTS = tuple(range(120, -1, -10))
_RANDOM_MAX = (1 << 80) - 1

_lock = threading.Lock()
_last_ms = 0
_last_random = 0


def _encode130(value: int, pairs: list[str]) -> str:
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


# The first 24 characters of the last id made, with the millisecond and the random part's upper 70 bits they
# encode: ids made in one millisecond count the random part up, so all but the last character repeat, 1,023 times
# in 1,024. A tuple, replaced whole, so a thread never pairs one id's values with another's text.
_head: tuple[int, int, str] = (-1, -1, "")


def _ulid_text(ms: int, random: int) -> str:
    """`_encode130((ms << 80) | random, _PAIRS_ULID)`; 130-bit shifts for every id were most of `new_id`'s cost."""
    global _head  # noqa: PLW0603 - one tuple, replaced whole (see above)
    upper = random >> 10
    head = _head
    if head[0] != ms or head[1] != upper:
        head = _head = (ms, upper, _encode130((ms << 80) | random, _PAIRS_ULID)[:24])
    return head[2] + _PAIRS_ULID[random & 1023]


def new_id() -> str:
    """A new 26-character, lexicographically time-ordered id (ULID, lower case).

    Strictly increasing within the process, as python-ulid's ULID() was: in the same millisecond the
    random part counts up (events of one batch are relayed in id order).
    """
    global _last_ms, _last_random
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last_ms:  # the same millisecond (or the clock stepped back): count up from the last id
            ms, random = _last_ms, _last_random + 1
            if random > _RANDOM_MAX:
                ms, random = ms + 1, int.from_bytes(os.urandom(10), "big")
        else:
            random = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_random = ms, random
    return _ulid_text(ms, random)


def typed_id(text: str) -> str:
    """An id as a person or script gave it, in the case leadhub writes ids in. Every id leadhub makes is lower-case
    base32 (ULID's alphabet, or RFC 4648's for inquiries), and both alphabets are case-insensitive: a ULID is often
    shown in upper case, and an id copied from such a tool must find its row, not a 404."""
    return text.lower()


def id_for_key(key: str) -> str:
    """The id of the inquiry stored under `key`: the same for every delivery of the same item.

    A webhook answers with this id before the pipeline has stored anything, and the stored
    inquiry carries the same id, so a client can look it up later. It is the first 26 characters of
    the lower-case RFC 4648 base32 of the key's SHA-256 (the first 130 bits of the digest).
    """
    digest = hashlib.sha256(key.encode()).digest()
    return _encode130(int.from_bytes(digest[:17], "big") >> 6, _PAIRS_RFC)
