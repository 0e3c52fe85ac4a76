"""Dead letters: what cannot be processed is kept whole with its reason, never blocks others, and can be replayed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.aio.msg import Msg
from sqlalchemy import Engine, event, func, select

from leadhub.envelope import Envelope
from leadhub.pipelines.consumer import DURABLE, InboundConsumer, Stats
from leadhub.pipelines.dead_letters import DeadLetterSink
from leadhub.pipelines.intake import IntakePipeline
from leadhub.store.intake import BatchResult, InquiryRow
from leadhub.store.models import DeadLetter, Inquiry
from tests.conftest import PG_ADMIN_URL, HubFactory, RunningHub
from tests.helpers import run_leadhub, wait_for

FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def _form_dead_letter(
    conn: Any, key: str, email: str, *, connector: str = "site-form", reason: str = "test"
) -> str:
    """A form submission's dead letter, as the pipeline records one: its envelope's headers and payload, whole."""
    from leadhub.store import dead_letters

    envelope = Envelope(
        key=f"form:{connector}:{key}", channel="form", connector=connector,
        payload=f'{{"email": "{email}"}}'.encode(), content_type="application/json",
    )  # fmt: skip
    return await dead_letters.add(
        conn, source="inbound", subject="intake.form", key=envelope.key, reason=reason, error=None,
        deliveries=1, headers=envelope.headers(), payload=envelope.payload, now=datetime.now(UTC),
    )  # fmt: skip


async def _dead_letters(hub: RunningHub) -> list:
    async with hub.engine.connect() as conn:
        return list((await conn.execute(select(DeadLetter.__table__).order_by(DeadLetter.id))).all())


def _cli(*args: str, config: dict, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config_file = tmp_path / "cli.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return run_leadhub(*args, "--config", str(config_file))


async def test_unconfigured_connector_is_dead_lettered_then_replayed(
    make_hub: HubFactory, database_url: str, tmp_path: Path
) -> None:
    hub = await make_hub([FORM])
    envelope = Envelope(
        key="form:old-form:idem:1",
        channel="form",
        connector="old-form",
        payload=b'{"name": "Late Lead", "email": "late@example.com"}',
        content_type="application/json",
    )
    await hub.hub.queue.publish_envelope(envelope)
    dead = await wait_for(lambda: _dead_letters(hub), timeout=30, what="a dead letter")
    assert len(dead) == 1
    assert dead[0].key == envelope.key and dead[0].payload == envelope.payload
    assert "connector 'old-form' is not configured" in dead[0].reason
    async with hub.session.get(hub.url("/metrics")) as response:
        assert 'leadhub_dead_letters_total{reason="PermanentError"} 1.0' in await response.text()

    base = {"database_url": database_url, "data_dir": str(tmp_path / "cli")}
    listed = await asyncio.to_thread(_cli, "dead", "list", config={**base, "connectors": [FORM]}, tmp_path=tmp_path)
    assert listed.returncode == 0 and dead[0].id in listed.stdout and "not configured" in listed.stdout

    still_missing = await asyncio.to_thread(
        _cli, "dead", "replay", dead[0].id, config={**base, "connectors": [FORM]}, tmp_path=tmp_path
    )
    assert still_missing.returncode == 1 and "failed again" in still_missing.stdout

    restored = {**base, "connectors": [FORM, {"name": "old-form", "type": "form"}]}
    replayed = await asyncio.to_thread(_cli, "dead", "replay", "--all", config=restored, tmp_path=tmp_path)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"{dead[0].id}: resolved" in replayed.stdout
    leads = await hub.wait_items("/api/leads", 1)
    inquiry = await hub.api(f"/api/inquiries/{envelope.id}")
    assert inquiry["lead_id"] == leads[0]["id"]
    after = await _dead_letters(hub)
    assert after[0].resolved_at is not None and after[0].replays == 2

    again = await asyncio.to_thread(_cli, "dead", "replay", "--all", config=restored, tmp_path=tmp_path)
    assert "nothing to replay" in again.stdout
    await hub.wait_items("/api/leads", 1)  # replay is idempotent: still one lead


async def test_undecodable_payload_is_dead_lettered_with_its_raw_bytes(form_hub: RunningHub) -> None:
    raw = b'{"name": "broken'
    await form_hub.hub.queue.publish_envelope(
        Envelope(
            key="form:site-form:idem:broken",
            channel="form",
            connector="site-form",
            payload=raw,
            content_type="application/json",
        )
    )
    dead = await wait_for(lambda: _dead_letters(form_hub), timeout=30, what="a dead letter")
    assert dead[0].payload == raw
    assert "form body cannot be decoded: malformed JSON" in dead[0].reason
    assert dead[0].headers["Leadhub-Key"] == "form:site-form:idem:broken"
    copy = await form_hub.hub.queue.jetstream.get_last_msg("DEAD", "dead.inbound")
    assert copy.data == raw and copy.headers["Leadhub-Dead-Id"] == dead[0].id


async def test_message_that_is_not_an_envelope_is_dead_lettered(form_hub: RunningHub) -> None:
    await form_hub.hub.queue.publish("inbound.form.site-form", b"stray", {"Nats-Msg-Id": "stray-1"}, "INBOUND")
    dead = await wait_for(lambda: _dead_letters(form_hub), timeout=30, what="a dead letter")
    assert "lacks header(s) Leadhub-Key" in dead[0].reason and dead[0].payload == b"stray"


LONG_NUMBER = b"9" * 5000  # json.loads raises a plain ValueError: int() refuses more than 4,300 digits
JSON_CONNECTORS = [
    FORM,
    {"name": "bot", "type": "telegram", "secret": "s"},
    {"name": "chat", "type": "jivo", "secret": "s"},
    {"name": "phones", "type": "telephony", "auth": "token", "secret": "s", "fields": {"phone": "p"}},
    {"name": "pbx", "type": "mango", "api_key": "k", "secret": "s"},
    {"name": "shop", "type": "order", "auth": "token", "secret": "s"},
]


async def test_json_with_a_number_too_long_to_read_is_dead_lettered_at_once(make_hub: HubFactory) -> None:
    """Queued before the edge refused it: each parser's own reason naming the number, counted as PermanentError;
    it was a parser crash (ValueError) whose reason told the reader to raise Python's digit limit."""
    hub = await make_hub(JSON_CONNECTORS)
    channels = {"form": "form", "telegram": "chat", "jivo": "chat", "telephony": "phone", "mango": "phone"}
    for connector in JSON_CONNECTORS:
        body = b'{"name": %s}' % LONG_NUMBER
        payload = b"json=" + body if connector["type"] == "mango" else body
        await hub.hub.queue.publish_envelope(
            Envelope(
                key=f"{connector['type']}:{connector['name']}:long-number",
                channel=channels.get(connector["type"], "shop"),
                connector=connector["name"],
                payload=payload,
                content_type="application/json",
                meta={"kind": "call"} if connector["type"] == "mango" else {},
            )
        )

    async def all_dead() -> list:
        dead = await _dead_letters(hub)
        return dead if len(dead) == len(JSON_CONNECTORS) else []

    dead = await wait_for(all_dead, timeout=30, what="a dead letter for each connector")
    for row in dead:
        assert "a number has more than 4300 digits" in row.reason, row.reason
    async with hub.session.get(hub.url("/metrics")) as response:
        assert f'leadhub_dead_letters_total{{reason="PermanentError"}} {len(dead)}.0' in await response.text()


def _raw_envelope(key: str, channel: str) -> dict[str, str]:
    return {
        "Nats-Msg-Id": key[:100],
        "Leadhub-Key": key,
        "Leadhub-Channel": channel,
        "Leadhub-Connector": "site-form",
        "Leadhub-Received-At": "2026-01-05T10:00:00+00:00",
        "Leadhub-Content-Type": "application/json",
    }


async def test_envelope_with_an_unknown_channel_or_an_overlong_key_is_dead_lettered(form_hub: RunningHub) -> None:
    """Queue input no connector writes: a channel outside CHANNELS, a key longer than the store's column (on
    PostgreSQL the dead letter itself could not be written, and the message was retried forever). Each is dead-lettered
    with a reason naming the header, and the envelope after them is stored."""
    body = b'{"name": "Queue Lead", "email": "queue@example.com"}'
    long_key = "form:site-form:idem:" + "k" * 500
    queue = form_hub.hub.queue
    await queue.publish("inbound.bogus.site-form", body, _raw_envelope("raw:bogus", "bogus"), "INBOUND")
    await queue.publish("inbound.form.site-form", body, _raw_envelope(long_key, "form"), "INBOUND")
    await queue.publish("inbound.form.site-form", body, _raw_envelope("raw:good", "form"), "INBOUND")

    async def two_dead() -> list:
        dead = await _dead_letters(form_hub)
        return dead if len(dead) == 2 else []

    dead = await wait_for(two_dead, timeout=30, what="two dead letters")
    reasons = {row.headers["Leadhub-Key"]: row.reason for row in dead}
    assert "Leadhub-Channel 'bogus' is not one of email, phone, chat, form, shop" in reasons["raw:bogus"]
    assert "Leadhub-Key is longer than 400 characters" in reasons[long_key]
    assert {row.key for row in dead} == {"raw:bogus", long_key[:400]}
    inquiries = await form_hub.wait_items("/api/inquiries", 1)
    assert [item["key"] for item in inquiries] == ["raw:good"]


async def test_envelope_with_a_nul_in_its_key_is_dead_lettered_not_retried_forever(form_hub: RunningHub) -> None:
    """Queue input with a NUL character in the key: PostgreSQL refuses NUL in text, so neither the inquiry nor the
    dead letter (its `key` column) could be written, and the message was handed back and retried forever, pausing
    the pipeline each time. It is dead-lettered with a reason naming the header, and the envelope after it stored."""
    body = b'{"name": "Queue Lead", "email": "queue@example.com"}'
    queue = form_hub.hub.queue
    await queue.publish("inbound.form.site-form", body, _raw_envelope("raw:nul\x00key", "form"), "INBOUND")
    await queue.publish("inbound.form.site-form", body, _raw_envelope("raw:after-nul", "form"), "INBOUND")
    dead = await wait_for(lambda: _dead_letters(form_hub), timeout=30, what="the NUL key's dead letter")
    assert len(dead) == 1 and dead[0].deliveries == 1
    assert "Leadhub-Key holds a NUL character" in dead[0].reason
    assert dead[0].key == "raw:nulkey" and dead[0].headers["Leadhub-Key"] == "raw:nul\x00key"
    inquiries = await form_hub.wait_items("/api/inquiries", 1)
    assert [item["key"] for item in inquiries] == ["raw:after-nul"]


class PoisonedPipeline(IntakePipeline):
    """Stands for a bug in a step: storing any batch that holds the poisoned row fails."""

    async def store(self, rows: Sequence[InquiryRow]) -> BatchResult:
        if any(row.name == "Poison" for row in rows):
            raise ValueError("step crashed on the poisoned row")
        return await super().store(rows)


async def test_one_bad_envelope_never_blocks_its_batch(make_hub: HubFactory) -> None:
    """Accept a burst with the pipeline off, then consume it as one batch: the good ones land, the bad one is retried
    up to the delivery limit and then dead-lettered."""
    hub = await make_hub([FORM], roles="http,relay")
    for i in range(10):
        async with await hub.post("/hooks/site-form", json={"name": "Poison" if i == 4 else f"Good {i}"}) as r:
            assert r.status == 202
    inner = hub.hub
    pipeline = PoisonedPipeline(inner.engine, {"site-form": _spec()}, default_region="RU")
    dead_sink = DeadLetterSink(inner.engine, inner.queue.publish, lambda reason: None)
    consumer = InboundConsumer(lambda: inner.queue.jetstream, pipeline, dead_sink, batch_size=100, max_deliveries=3)
    task = asyncio.create_task(consumer.run())
    try:
        await hub.wait_items("/api/leads", 9)
        dead = await wait_for(lambda: _dead_letters(hub), timeout=30, what="the poisoned envelope's dead letter")
    finally:
        consumer.stop()
        await task
    assert len(dead) == 1 and dead[0].deliveries == 3
    assert dead[0].error == "ValueError" and "poisoned row" in dead[0].reason
    assert all(item["name"] != "Poison" for item in (await hub.api("/api/inquiries"))["items"])


class AckLostOnce(InboundConsumer):
    """The first ack never reaches the queue, as when the process dies between the dead letter's commit and the ack:
    the same message is delivered again."""

    acks_lost = 0

    async def _ack_all(self, messages: list[Msg]) -> None:
        if self.acks_lost:
            return await super()._ack_all(messages)
        self.acks_lost += 1
        for msg in messages:
            await msg.nak()


async def test_a_redelivered_message_is_dead_lettered_once(make_hub: HubFactory) -> None:
    """A message recorded as a dead letter whose ack was lost comes back: it is acked, not recorded or counted again
    (leadhub_dead_letters_total counted it twice); an item with other headers is not taken for it."""
    hub = await make_hub([FORM], roles="http,relay")
    inner = hub.hub
    headers = {"Nats-Msg-Id": "garbage-1", "Leadhub-Key": "garbage-1"}
    await inner.queue.publish("inbound.form.site-form", b"garbage", headers, "INBOUND")
    counted: list[str] = []
    outcomes: Counter[str] = Counter()
    stats = Stats()
    stats.on_outcome = lambda outcome, n: outcomes.update({outcome: n})
    dead_sink = DeadLetterSink(inner.engine, inner.queue.publish, counted.append)
    pipeline = IntakePipeline(inner.engine, {"site-form": _spec()}, default_region="RU")
    consumer = AckLostOnce(lambda: inner.queue.jetstream, pipeline, dead_sink, batch_size=10, stats=stats)
    task = asyncio.create_task(consumer.run())
    try:

        async def delivered_again() -> bool:
            return outcomes["duplicate"] == 1

        await wait_for(delivered_again, timeout=30, what="the message delivered again and acked")
    finally:
        consumer.stop()
        await task
    dead = await _dead_letters(hub)
    assert [row.key for row in dead] == ["garbage-1"] and len(counted) == 1
    assert {k: v for k, v in outcomes.items() if v} == {"dead_letter": 1, "duplicate": 1}

    async def acked() -> bool:
        info = await inner.queue.jetstream.consumer_info("INBOUND", DURABLE)
        return info.num_ack_pending == 0 and info.num_pending == 0

    await wait_for(acked, timeout=10, what="the message acked")

    other = {**headers, "Nats-Msg-Id": "garbage-2"}  # the same place in a stream created anew
    fields = {"source": "inbound", "subject": "inbound.form.site-form", "payload": b"garbage", "key": "garbage-1"}
    assert await dead_sink.send(
        headers=other, reason="r", error=None, deliveries=1, queue_message=dead[0].queue_message, **fields
    )
    assert len(await _dead_letters(hub)) == 2


def _spec():  # type: ignore[no-untyped-def]
    from leadhub.pipelines.model import SourceSpec

    return SourceSpec("form", {"name": "site-form"})


async def test_replay_all_walks_pages_and_reads_each_payload_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dead replay --all` over more dead letters than a page: every one replayed once, the ones that fail again
    left open without being retried in a loop, and no query reads many payloads (each can be tens of MiB)."""
    from leadhub.hub import dead_letters_cli
    from leadhub.hub.config import load_config
    from leadhub.store.db import create_engine, upgrade

    monkeypatch.setattr(dead_letters_cli, "REPLAY_PAGE", 3)
    config_file = tmp_path / "replay.yaml"
    config_file.write_text(yaml.safe_dump({"database_url": database_url, "connectors": [FORM]}))
    config = load_config(config_file)
    engine = create_engine(database_url)
    await upgrade(engine)
    ids = []
    async with engine.begin() as conn:
        for n in range(8):
            connector = "old-form" if n in (2, 6) else "site-form"  # two that still cannot be processed
            ids.append(await _form_dead_letter(conn, f"idem:{n}", f"replay{n}@example.com", connector=connector))

    payload_reads: list[str] = []

    def record(_conn, _cursor, statement: str, parameters, _context, _executemany) -> None:  # type: ignore[no-untyped-def]
        if "dead_letter.payload" in statement and statement.lstrip().upper().startswith("SELECT"):
            payload_reads.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        outcomes = await dead_letters_cli.replay_dead(config, None)
    finally:
        event.remove(Engine, "before_cursor_execute", record)

    assert [o.id for o in outcomes] == ids
    assert [o.result == "resolved" for o in outcomes] == [n not in (2, 6) for n in range(8)]
    assert len(payload_reads) == 8 and all("dead_letter.id =" in s for s in payload_reads), payload_reads
    async with engine.connect() as conn:
        rows = {r.id: r for r in (await conn.execute(select(DeadLetter.__table__))).all()}
        stored = (await conn.execute(select(func.count()).select_from(Inquiry))).scalar_one()
    await engine.dispose()
    assert all(rows[i].replays == 1 for i in ids)
    assert [rows[i].resolved_at is None for i in ids] == [n in (2, 6) for n in range(8)]
    assert stored == 6


async def test_concurrent_replays_of_one_person_all_resolve(database_url: str, tmp_path: Path) -> None:
    """Two `dead replay` runs at once (or a replay while the daemon stores the same person): on PostgreSQL the one
    that lost the race on a unique key reported "failed again: duplicate key value ..." and wrote that over the dead
    letter's reason. A lost race is tried again, as the pipeline does, and finds the winner's rows."""
    from leadhub.hub.config import load_config
    from leadhub.hub.dead_letter_replay import replay_by_id, replay_pipeline
    from leadhub.store.db import create_engine, upgrade

    config_file = tmp_path / "replay.yaml"
    config_file.write_text(yaml.safe_dump({"database_url": database_url, "connectors": [FORM]}))
    config = load_config(config_file)
    engine = create_engine(database_url)
    await upgrade(engine)
    async with engine.begin() as conn:  # two submissions of one person: one contact, one identifier
        ids = [await _form_dead_letter(conn, f"idem:{n}", "same@example.com", reason="original") for n in range(2)]
    pipeline = replay_pipeline(engine, config.settings, config.connectors)
    try:
        outcomes = await asyncio.gather(*(replay_by_id(engine, pipeline, i) for i in (ids[0], ids[0], ids[1])))
        async with engine.connect() as conn:
            rows = (await conn.execute(select(DeadLetter.__table__))).all()
            stored = (await conn.execute(select(func.count()).select_from(Inquiry))).scalar_one()
    finally:
        await engine.dispose()
    results = [o.result if o else None for o in outcomes]
    assert results[2] == "resolved", results
    # The two replays of one id: both ran at once, or one ended before the other began (under load, on SQLite).
    assert sorted(results[:2]) in (["resolved", "resolved"], ["already resolved", "resolved"]), results
    assert all(row.resolved_at is not None and row.reason == "original" for row in rows)
    assert stored == 2


async def test_replaying_a_resolved_dead_letter_again_leaves_it_as_it_is(database_url: str, tmp_path: Path) -> None:
    """`dead replay ID` run twice: the second ran the pipeline again and counted another replay (the API answers 409
    for it). It says the dead letter is resolved already, exits 0, and changes nothing."""
    from leadhub.hub.config import load_config
    from leadhub.hub.dead_letters_cli import replay_dead
    from leadhub.store import dead_letters
    from leadhub.store.db import create_engine, upgrade

    config_file = tmp_path / "replay.yaml"
    config_file.write_text(yaml.safe_dump({"database_url": database_url, "connectors": [FORM]}))
    config = load_config(config_file)
    engine = create_engine(database_url)
    await upgrade(engine)
    async with engine.begin() as conn:
        dead_id = await _form_dead_letter(conn, "idem:twice", "twice@example.com")
    try:
        first = await replay_dead(config, dead_id)
        async with engine.connect() as conn:
            resolved = await dead_letters.get(conn, dead_id)
        second = await replay_dead(config, dead_id)
        async with engine.connect() as conn:
            after = await dead_letters.get(conn, dead_id)
    finally:
        await engine.dispose()
    assert [o.result for o in first] == ["resolved"] and [o.result for o in second] == ["already resolved"]
    assert second[0].resolved and after.replays == 1 and after.replayed_at == resolved.replayed_at

    cli = await asyncio.to_thread(
        _cli, "dead", "replay", dead_id, config={"database_url": database_url}, tmp_path=tmp_path
    )
    assert cli.returncode == 0 and f"{dead_id}: already resolved" in cli.stdout, cli.stdout + cli.stderr


async def test_listing_dead_letters_leaves_their_payloads_in_the_database(database_url: str) -> None:
    from leadhub.store import dead_letters
    from leadhub.store.db import create_engine, upgrade

    engine = create_engine(database_url)
    await upgrade(engine)
    async with engine.begin() as conn:
        await dead_letters.add(
            conn, source="inbound", subject="intake.email", key="imap:big", reason="too deep", error=None,
            deliveries=1, headers={"Leadhub-Key": "imap:big"}, payload=b"x" * 1_000_000, now=datetime.now(UTC),
        )  # fmt: skip
        listed = (await dead_letters.list_open(conn))[0]
        whole = (await dead_letters.list_open(conn, payloads=True))[0]
    await engine.dispose()
    assert listed.key == "imap:big" and listed.reason == "too deep" and "payload" not in listed._fields
    assert len(whole.payload) == 1_000_000


async def test_dead_show_prints_one_dead_letter_whole_and_raw_gives_its_exact_bytes(
    database_url: str, tmp_path: Path
) -> None:
    """An admin reads why an item failed and what it held; the payload is a sender's bytes, so it cannot steer the
    terminal (ANSI escapes, carriage returns are shown escaped) and `--raw` gives the bytes for a file."""
    from leadhub.store import dead_letters
    from leadhub.store.db import create_engine, upgrade

    hostile = "Name: Ivan\tPetrov\r\nNote: \x1b[2J\x1b[31mcleared\u202e\n".encode()
    binary = b"\xff\xfe\x00PK\x03\x04" * 10
    big = ("x" + "Ж" * 40_000).encode()  # 80,001 bytes: the cut at 64 KiB falls inside a two-byte character
    engine = create_engine(database_url)
    await upgrade(engine)
    ids = {}
    async with engine.begin() as conn:
        for name, payload in (("hostile", hostile), ("binary", binary), ("big", big), ("\x1b]0;owned\x07", b"")):
            ids[name] = await dead_letters.add(
                conn, source="inbound", subject="intake.form", key=f"form:site-form:idem:{name}",
                reason=f"form body cannot be decoded: {name}", error="PermanentError", deliveries=1,
                headers={"Leadhub-Key": f"form:site-form:idem:{name}", "Leadhub-Content-Type": "text/plain"},
                payload=payload, now=datetime.now(UTC),
            )  # fmt: skip
    await engine.dispose()
    config = {"database_url": database_url, "data_dir": str(tmp_path / "cli"), "connectors": [FORM]}

    shown = await asyncio.to_thread(_cli, "dead", "show", ids["hostile"], config=config, tmp_path=tmp_path)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"id:          {ids['hostile']}" in out and "key:         form:site-form:idem:hostile" in out
    assert "reason:      form body cannot be decoded: hostile" in out and "error:       PermanentError" in out
    assert "  Leadhub-Content-Type: text/plain" in out and f"payload:     {len(hostile)} bytes, text/plain" in out
    assert "Name: Ivan\tPetrov\n" in out and "Note: \\x1b[2J\\x1b[31mcleared\\u202e" in out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out

    not_text = await asyncio.to_thread(_cli, "dead", "show", ids["binary"], config=config, tmp_path=tmp_path)
    assert f"not UTF-8 text, not printed: `leadhub dead show {ids['binary']} --raw > FILE`" in not_text.stdout
    assert "PK" not in not_text.stdout

    long = await asyncio.to_thread(_cli, "dead", "show", ids["big"], config=config, tmp_path=tmp_path)
    assert long.returncode == 0 and "Ж" * 1000 in long.stdout
    assert f"... {80_001 - 65_535:,} more bytes not printed" in long.stdout, long.stdout[-300:]

    config_file = tmp_path / "cli.yaml"
    for name, payload in (("hostile", hostile), ("binary", binary), ("big", big)):
        raw = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "leadhub.hub", "dead", "show", ids[name], "--raw", "--config", str(config_file)],
            env={k: v for k, v in os.environ.items() if not k.startswith("LEADHUB_")},
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert raw.returncode == 0 and raw.stdout == payload, (name, raw.stderr)

    listed = await asyncio.to_thread(_cli, "dead", "list", config=config, tmp_path=tmp_path)
    assert listed.returncode == 0 and "key=form:site-form:idem:hostile" in listed.stdout
    assert "\x1b" not in listed.stdout and "key=form:site-form:idem:\\x1b]0;owned\\x07" in listed.stdout

    missing = await asyncio.to_thread(_cli, "dead", "show", "nope", config=config, tmp_path=tmp_path)
    assert missing.returncode == 1 and "no dead letter with id 'nope'" in missing.stderr


async def test_dead_letters_over_the_api_list_show_download_and_replay(make_hub: HubFactory) -> None:
    hub = await make_hub([FORM])
    envelope = Envelope(
        key="form:old-form:idem:api", channel="form", connector="old-form",
        payload='{"name": "Пётр", "email": "petr@example.com"}'.encode(), content_type="application/json",
    )  # fmt: skip
    await hub.hub.queue.publish_envelope(envelope)
    [dead] = await wait_for(lambda: _dead_letters(hub), timeout=30, what="a dead letter")

    listed = (await hub.api("/api/dead-letters"))["items"]
    assert [d["id"] for d in listed] == [dead.id] and "payload" not in listed[0] and "headers" not in listed[0]
    assert "connector 'old-form' is not configured" in listed[0]["reason"] and listed[0]["resolved_at"] is None
    shown = await hub.api(f"/api/dead-letters/{dead.id}")
    assert shown["payload_text"] == envelope.payload.decode() and shown["payload_size"] == len(envelope.payload)
    assert shown["headers"]["Leadhub-Key"] == envelope.key
    async with hub.session.get(hub.url(f"/api/dead-letters/{dead.id}/payload")) as response:
        assert response.status == 200 and await response.read() == envelope.payload
        assert response.content_type == "application/octet-stream"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Disposition"] == f'attachment; filename="{dead.id}.bin"'

    async with hub.session.post(hub.url(f"/api/dead-letters/{dead.id}/replay")) as response:
        body = await response.json()
        assert response.status == 422 and body["error"] == "replay_failed", body
        assert "connector 'old-form' is not configured" in body["detail"]
    assert (await hub.api(f"/api/dead-letters/{dead.id}"))["replays"] == 1

    fixed = await make_hub([FORM, {"name": "old-form", "type": "form"}])  # the admin configured the connector
    async with fixed.session.post(fixed.url(f"/api/dead-letters/{dead.id}/replay")) as response:
        assert response.status == 200 and await response.json() == {"id": dead.id, "resolved": True}
    [lead] = await fixed.wait_items("/api/leads", 1)
    assert (await fixed.api(f"/api/inquiries/{envelope.id}"))["lead_id"] == lead["id"]
    async with fixed.session.post(fixed.url(f"/api/dead-letters/{dead.id}/replay")) as response:
        assert response.status == 409 and (await response.json())["error"] == "already_resolved"
    assert [d["id"] for d in (await fixed.api("/api/dead-letters", resolved="true"))["items"]] == [dead.id]
    assert (await fixed.api("/api/dead-letters", resolved="false"))["items"] == []

    for method, path in [("GET", "/api/dead-letters/nope"), ("GET", "/api/dead-letters/nope/payload"),
                         ("POST", "/api/dead-letters/nope/replay")]:  # fmt: skip
        async with fixed.session.request(method, fixed.url(path)) as response:
            assert response.status == 404, path
    async with fixed.session.get(fixed.url("/api/dead-letters"), params={"reason": "x"}) as response:
        assert response.status == 400 and "this list takes cursor, limit, resolved" in (await response.json())["detail"]


@pytest.mark.skipif(not PG_ADMIN_URL, reason="holds one dead letter's row locked while another is replayed")
async def test_dead_replay_all_prints_each_outcome_as_it_comes(database_url: str, tmp_path: Path) -> None:
    """`dead replay --all` kept every outcome and printed them at the end: a backlog of 100,000 showed nothing for
    many minutes and its outcomes filled memory. The first is printed while the second is still being replayed
    (its dead letter's row held locked, as a slow store would)."""
    from sqlalchemy import text

    from leadhub.store.db import create_engine, upgrade

    engine = create_engine(database_url)
    await upgrade(engine)
    ids = []
    for n in (1, 2):
        async with engine.begin() as conn:
            ids.append(await _form_dead_letter(conn, f"idem:stream{n}", f"stream{n}@example.com"))
    first, second = sorted(ids)
    config_file = tmp_path / "cli.yaml"
    config_file.write_text(yaml.safe_dump({"database_url": database_url, "connectors": [FORM]}))
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("LEADHUB_")}
    try:
        async with engine.connect() as holder:
            await holder.execute(text("SELECT id FROM dead_letter WHERE id = :id FOR UPDATE"), {"id": second})
            replay = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "leadhub.hub", "dead", "replay", "--all", "--config", str(config_file),
                env=clean, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert replay.stdout is not None
            try:
                line = await asyncio.wait_for(replay.stdout.readline(), 30)
            except TimeoutError:
                replay.kill()
                pytest.fail("nothing printed while the second dead letter was being replayed")
            assert line.decode().strip() == f"{first}: resolved"
            await holder.rollback()  # the second's row free again
        rest, errors = await asyncio.wait_for(replay.communicate(), 60)
    finally:
        await engine.dispose()
    assert replay.returncode == 0, errors.decode()
    assert rest.decode().splitlines() == [f"{second}: resolved"]
