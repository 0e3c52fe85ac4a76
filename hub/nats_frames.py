"""HPUB frames written straight into nats-py's outgoing buffer, headers encoded once per message.

nats-py's `Client.publish` checks every header key with a regex, strips and `str.translate`s every value
and encodes both piece by piece: for the eight headers an inbound item carries that was ~10 µs of a
~12 µs publish, about 8% of an accepted webhook's CPU (measured with the client on a loopback NATS; see
BENCHMARKS.md). `FrameSender` sends the same frame — same checks, same bytes on the wire — with the
header block built in one join. It uses two nats-py internals, `_send_command` and the flusher's queue;
`FrameSender.for_client` gives None on a nats-py without them, and the caller publishes through
`Client.publish` instead, as it also does while the client is not connected (nats-py's own buffering).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import nats.errors
from nats.aio.client import Client
from nats.protocol.command import hpub_cmd

from leadhub.queue_errors import ItemTooLarge

# The same rules as nats-py's publish: a key is an HTTP token, a value loses CR/LF, a subject has no whitespace.
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SUBJECT_INVALID = re.compile(r"[ \t\r\n]")
_KNOWN_LIMIT = 4096  # checked keys and subjects remembered; they repeat (a handful of header names, subjects)


class FrameSender:
    """Publishes on a connected nats-py client without its per-header encoding cost."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._keys: set[str] = set()
        self._subjects: set[str] = set()

    @classmethod
    def for_client(cls, client: Client) -> FrameSender | None:
        """A sender for `client`, or None when this nats-py lacks the internals it writes through."""
        internals = (getattr(client, "_send_command", None), getattr(client, "_flush_pending", None))
        if all(callable(f) for f in internals) and hasattr(client, "_flush_queue"):
            return cls(client)
        return None

    def ready(self) -> bool:
        """Whether a frame can go out now: connected and not closing (else Client.publish knows what to do)."""
        client = self.client
        return client.is_connected and not client.is_draining_pubs

    async def publish(self, subject: str, payload: bytes, reply: str, headers: Mapping[str, str]) -> None:
        """Queue one HPUB frame and kick nats-py's flusher, as `Client.publish` does."""
        client = self.client
        if subject not in self._subjects:
            self._check_subject(subject)
        block = self.header_block(headers)
        if len(payload) + len(block) > client.max_payload:  # the server's limit counts the headers too
            raise ItemTooLarge(len(payload) + len(block), client.max_payload)
        client.stats["out_msgs"] += 1
        client.stats["out_bytes"] += len(payload)
        await client._send_command(hpub_cmd(subject, reply, block, payload))
        flush_queue = client._flush_queue
        if flush_queue is not None and flush_queue.empty():
            await client._flush_pending()

    def header_block(self, headers: Mapping[str, str]) -> bytes:
        """`NATS/1.0` and one `Key: value` line per header, as nats-py writes them (empty keys skipped)."""
        lines = ["NATS/1.0\r\n"]
        for given_key, given_value in headers.items():
            if given_key in self._keys:
                key = given_key
            else:
                key = given_key.strip()
                if not key:
                    continue
                self._check_key(key)
            value = given_value.strip()
            if "\r" in value or "\n" in value:
                value = value.replace("\r", " ").replace("\n", " ")
            lines.append(f"{key}: {value}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode()

    def _check_key(self, key: str) -> None:
        if not _HEADER_KEY.fullmatch(key):
            raise nats.errors.BadHeaderError(key)
        if len(self._keys) < _KNOWN_LIMIT:
            self._keys.add(key)

    def _check_subject(self, subject: str) -> None:
        if not subject or _SUBJECT_INVALID.search(subject):
            raise nats.errors.BadSubjectError
        if len(self._subjects) < _KNOWN_LIMIT:
            self._subjects.add(subject)


def message_size(payload: bytes, headers: Mapping[str, str]) -> int:
    """What a message counts against the server's `max_payload`: its payload and its header block as sent."""
    block = len("NATS/1.0\r\n\r\n")
    for key, value in headers.items():
        if key.strip():
            block += len(key.strip().encode()) + len(value.strip().encode()) + len(": \r\n")
    return len(payload) + block
