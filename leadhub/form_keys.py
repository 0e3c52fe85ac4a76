"""A form body's idempotency key: the body's hash in a dedupe bucket, and the keys its neighbouring buckets give.

The form connector writes the key; the pipeline reads the neighbours from it, so the store can recognise a copy
of the same body that fell on the other side of a bucket edge (see `store/intake.py`, `write_batch`).
"""

from __future__ import annotations

from datetime import timedelta

DEFAULT_DEDUPE_WINDOW = timedelta(minutes=10)


def body_key(connector: str, digest: str, first_seen: float, window: timedelta) -> str:
    """`form:<connector>:body:<digest>:<bucket>`, the bucket being the window-long slice of time `first_seen` is in."""
    return f"form:{connector}:body:{digest}:{int(first_seen // window.total_seconds())}"


def neighbour_body_keys(connector: str, key: str) -> tuple[str, ...]:
    """The keys an identical body gets in the buckets before and after `key`'s; none when `key` is not a body key."""
    prefix = f"form:{connector}:body:"
    digest, _, bucket = key.removeprefix(prefix).rpartition(":")
    if not key.startswith(prefix) or not digest or not (bucket.isascii() and bucket.isdigit()):
        return ()
    return tuple(f"{prefix}{digest}:{int(bucket) + step}" for step in (-1, 1))
