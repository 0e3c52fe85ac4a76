"""HPUB frames written by hub/nats_frames.py: the bytes nats-py's publish writes, on a real embedded NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg

from leadhub.envelope import Envelope, EnvelopeError
from leadhub.hub.embedded_nats import EmbeddedNats
from leadhub.hub.nats_frames import FrameSender, message_size
from leadhub.queue_errors import ItemTooLarge

TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=1)
VALUE = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # any text, CR/LF and padding included


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    server = EmbeddedNats(tmp_path / "nats")
    connection = await nats.connect(await server.start())
    try:
        yield connection
    finally:
        await connection.close()
        await server.stop()


class Recorder:
    """Takes the frames a client would send, instead of its outgoing buffer, for one comparison."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.frames: list[bytes] = []

    def __enter__(self) -> list[bytes]:
        async def record(command: bytes, priority: bool = False) -> None:
            self.frames.append(command)

        self.client._send_command = record  # type: ignore[method-assign]
        return self.frames

    def __exit__(self, *_: object) -> None:
        del self.client._send_command


async def frames_of_both(client: Client, subject: str, payload: bytes, headers: dict[str, str]) -> list[bytes]:
    sender = FrameSender.for_client(client)
    assert sender is not None and sender.ready()
    with Recorder(client) as frames:
        await client.publish(subject, payload, reply="_INBOX.test.1", headers=headers)
        await sender.publish(subject, payload, "_INBOX.test.1", headers)
    return frames


async def test_a_frame_is_byte_for_byte_what_nats_py_writes(client: Client) -> None:
    headers = {
        "Nats-Msg-Id": "form:site-form:42",
        "Leadhub-Received-At": "2026-12-03T13:00:00+00:00",
        "Leadhub-Meta": '{"ip": "127.0.0.1", "note": "line one\r\nline two"}',  # CR/LF become spaces
        " Padded-Key ": "  padded value\t",  # both are trimmed
        "": "an empty key is skipped",
        "Unicode": "Иван Петров",
    }
    nats_py, ours = await frames_of_both(client, "inbound.form.site-form", b'{"name":"x"}', headers)
    assert ours == nats_py
    assert b'Leadhub-Meta: {"ip": "127.0.0.1", "note": "line one  line two"}\r\n' in ours


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(TOKEN, VALUE, max_size=6), payload=st.binary(max_size=64))
async def test_any_headers_give_the_same_frame_as_nats_py(
    client: Client, headers: dict[str, str], payload: bytes
) -> None:
    nats_py, ours = await frames_of_both(client, "events.lead.created", payload, headers)
    assert ours == nats_py


async def test_bad_keys_subjects_and_sizes_fail_as_nats_py_fails(client: Client) -> None:
    sender = FrameSender.for_client(client)
    assert sender is not None
    with pytest.raises(nats.errors.BadHeaderError):
        await sender.publish("events.x", b"{}", "_INBOX.t.1", {"Bad:Key": "v"})
    with pytest.raises(nats.errors.BadSubjectError):
        await sender.publish("events. x", b"{}", "_INBOX.t.1", {})
    with pytest.raises(nats.errors.BadSubjectError):
        await sender.publish("", b"{}", "_INBOX.t.1", {})
    with pytest.raises(ItemTooLarge):
        await sender.publish("events.x", b"x" * (client.max_payload + 1), "_INBOX.t.1", {})
    # The server counts the headers too (nats-py does not): under the limit alone, over it with them.
    with pytest.raises(ItemTooLarge):
        await sender.publish("events.x", b"x" * (client.max_payload - 10), "_INBOX.t.1", {"Nats-Msg-Id": "m1"})
    assert message_size(b"x" * 10, {"Nats-Msg-Id": "m1"}) == 10 + len(sender.header_block({"Nats-Msg-Id": "m1"}))
    # A key that failed once is not remembered as checked.
    with pytest.raises(nats.errors.BadHeaderError):
        await sender.publish("events.x", b"{}", "_INBOX.t.1", {"Bad:Key": "v"})


async def test_a_subscriber_gets_the_message_and_its_headers(client: Client) -> None:
    sender = FrameSender.for_client(client)
    assert sender is not None
    got: asyncio.Queue[Msg] = asyncio.Queue()
    await client.subscribe("frames.>", cb=got.put)
    await client.flush()
    await sender.publish("frames.one", b"payload", "_INBOX.t.9", {"Nats-Msg-Id": "m-1", "Leadhub-Key": " k\n1 "})
    message = await asyncio.wait_for(got.get(), timeout=5)
    assert (message.subject, message.reply, message.data) == ("frames.one", "_INBOX.t.9", b"payload")
    assert message.headers == {"Nats-Msg-Id": "m-1", "Leadhub-Key": "k 1"}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=VALUE.filter(bool), content_type=VALUE)
async def test_an_envelope_that_passes_its_check_arrives_with_the_key_and_content_type_sent(
    client: Client, key: str, content_type: str
) -> None:
    """The id answered at the edge derives from the key sent; the one stored, from the key that arrives."""
    envelope = Envelope(key=key, channel="form", connector="site", payload=b"{}", content_type=content_type)
    try:
        envelope.check()
    except EnvelopeError:
        return
    sender = FrameSender.for_client(client)
    assert sender is not None
    inbox = client.new_inbox()
    got: asyncio.Queue[Msg] = asyncio.Queue()
    subscription = await client.subscribe(inbox, cb=got.put)
    await client.flush()
    await sender.publish(inbox, envelope.payload, "", envelope.headers())
    message = await asyncio.wait_for(got.get(), timeout=5)
    await subscription.unsubscribe()
    arrived = Envelope.from_message(message.headers, message.data)
    assert (arrived.key, arrived.content_type, arrived.id) == (key, content_type, envelope.id)


async def test_no_sender_without_nats_py_internals_and_not_ready_once_closed(client: Client) -> None:
    assert FrameSender.for_client(object()) is None  # type: ignore[arg-type]  # another nats-py: publish instead
    sender = FrameSender.for_client(client)
    assert sender is not None and sender.ready()
    await client.close()
    assert not sender.ready()  # the caller falls back to Client.publish, which raises ConnectionClosedError
