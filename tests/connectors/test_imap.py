"""The `imap` connector against a real Dovecot on loopback (tests/imap_server.py), through the in-process hub:
appended mail becomes leads, IDLE is quick, restarts resume from the checkpoint, a UIDVALIDITY change and a killed
server lose and double nothing, post-actions, the size limit, a message the server cannot deliver, TLS, and prompt
stop.

Messages are built by tests.imap_server.make_mail (plain inquiries from distinct senders).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from leadhub.store.connector_state import load_state
from tests.conftest import PG_ADMIN_URL, HubFactory, RunningHub
from tests.helpers import wait_for
from tests.imap_server import Dovecot, make_mail, running_dovecot


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A fresh Dovecot with user `sales@example.test` and an empty INBOX."""
    with running_dovecot() as server:
        yield server


async def checkpoint(hub: RunningHub, folder: str = "INBOX", name: str = "inbox") -> dict[str, Any] | None:
    return await load_state(hub.engine, name, f"folder:{folder}")


async def readyz_detail(hub: RunningHub, name: str = "inbox") -> dict[str, Any]:
    async with hub.session.get(hub.url("/readyz")) as response:
        return (await response.json())["detail"].get(f"connector:{name}") or {}


async def synced(hub: RunningHub, last_uid: int, folder: str = "INBOX") -> bool:
    state = await checkpoint(hub, folder)
    return state is not None and state["last_uid"] >= last_uid


async def test_appended_mail_becomes_leads_unread(make_hub: HubFactory, dovecot: Dovecot) -> None:
    dovecot.append([make_mail(i) for i in range(1, 4)])
    hub = await make_hub([dovecot.connector()])

    leads = await hub.wait_items("/api/leads", 3)
    assert sorted(lead["channel"] for lead in leads) == ["email"] * 3
    inquiries = await hub.wait_items("/api/inquiries", 3)
    assert {i["email"] for i in inquiries} == {f"customer{i}@client.example" for i in range(1, 4)}
    assert {(i["meta"]["folder"], i["meta"]["uid"]) for i in inquiries} == {("INBOX", 1), ("INBOX", 2), ("INBOX", 3)}
    assert all(i["key"].startswith("imap:inbox:mid:") for i in inquiries)

    admin = dovecot.client()
    admin.select_folder("INBOX", readonly=True)
    assert all(b"\\Seen" not in f[b"FLAGS"] for f in admin.fetch(admin.search(), ["FLAGS"]).values())  # BODY.PEEK[]

    async def caught_up_and_idling() -> dict[str, Any] | None:  # the report follows the checkpoint, after the leads
        detail = await readyz_detail(hub)
        folder = detail.get("folders", {}).get("INBOX", {})
        return detail if detail.get("ok") and detail.get("uid_lag") == 0 and folder.get("mode") == "idle" else None

    detail = await wait_for(caught_up_and_idling, what="the mailbox caught up and idling in /readyz")
    assert detail["ok"] and detail["uid_lag"] == 0 and detail["folders"]["INBOX"]["mode"] == "idle"
    assert (await checkpoint(hub))["last_uid"] == 3


async def test_first_start_reads_only_the_backfill_window(make_hub: HubFactory, dovecot: Dovecot) -> None:
    admin = dovecot.client()
    month_ago = datetime.now(UTC) - timedelta(days=30)
    admin.append("INBOX", make_mail(1), msg_time=month_ago)  # arrived a month ago (INTERNALDATE)
    admin.append("INBOX", make_mail(2))
    hub = await make_hub([dovecot.connector(backfill_days=7)])
    inquiries = await hub.wait_items("/api/inquiries", 1)
    assert inquiries[0]["meta"]["uid"] == 2
    await wait_for(lambda: synced(hub, 2), what="the checkpoint past the old message")
    dovecot.append([make_mail(3)])
    await hub.wait_items("/api/leads", 2)
    assert {i["meta"]["uid"] for i in (await hub.api("/api/inquiries"))["items"]} == {2, 3}


async def test_idle_picks_up_new_mail_within_two_seconds(make_hub: HubFactory, dovecot: Dovecot) -> None:
    hub = await make_hub([dovecot.connector(poll_interval="10m")])
    await wait_for(lambda: checkpoint(hub), what="the first sync")

    async def idling() -> bool:  # the first sync ends before the folder enters IDLE
        detail = await readyz_detail(hub)
        return detail.get("folders", {}).get("INBOX", {}).get("mode") == "idle"

    await wait_for(idling, what="the INBOX folder in IDLE mode")

    for n in (1, 2):
        dovecot.append([make_mail(n)])
        started = time.monotonic()
        await hub.wait_items("/api/leads", n, timeout=2.0)
        assert time.monotonic() - started < 2.0


async def test_without_idle_the_folder_is_polled(make_hub: HubFactory, dovecot: Dovecot) -> None:
    hub = await make_hub([dovecot.connector(idle=False, poll_interval="500ms")])
    await wait_for(lambda: checkpoint(hub), what="the first sync")
    assert (await readyz_detail(hub))["folders"]["INBOX"]["mode"] == "poll"
    dovecot.append([make_mail(1)])
    await hub.wait_items("/api/leads", 1)


async def test_restart_resumes_from_the_checkpoint(make_hub: HubFactory, dovecot: Dovecot) -> None:
    dovecot.append([make_mail(1), make_mail(2)])
    first = await make_hub([dovecot.connector()])
    await first.wait_items("/api/inquiries", 2)
    await wait_for(lambda: synced(first, 2), what="the checkpoint at UID 2")
    await first.hub.stop()

    dovecot.append([make_mail(3), make_mail(4)])
    second = await make_hub([dovecot.connector()])  # same database, its own NATS
    await second.wait_items("/api/inquiries", 4)
    await wait_for(lambda: synced(second, 4), what="the checkpoint at UID 4")
    # the second hub published only the two new messages: its stream has seen exactly two
    info = await second.hub.queue.jetstream.stream_info("INBOUND")  # type: ignore[union-attr]
    assert info.state.last_seq == 2
    await second.wait_items("/api/leads", 4)


async def test_stop_during_the_first_sync_skips_nothing(make_hub: HubFactory, dovecot: Dovecot) -> None:
    """A stop (SIGTERM, or a lost lease) in the middle of the first sync must not checkpoint the unread rest."""
    count = 300
    dovecot.append([make_mail(i, body="x" * 2000 + "\r\n") for i in range(1, count + 1)])
    first = await make_hub([dovecot.connector(fetch_batch=5)])
    await wait_for(lambda: synced(first, 1), timeout=20, what="the first batch to be checkpointed")
    for stop in first.hub.connector_stops:
        await stop()
    first.hub.connector_stops.clear()
    state = await checkpoint(first)
    assert state is not None
    published = {i["meta"]["uid"] for i in (await first.api("/api/inquiries", limit=1000))["items"]}
    assert len(published) < count, "the first sync finished before the stop; raise `count`"
    assert state["last_uid"] < count, f"stopped mid-sync, yet the checkpoint jumped to UID {state['last_uid']}"

    second = await make_hub([dovecot.connector()])  # same database: resumes from the checkpoint
    inquiries = await second.wait_items("/api/inquiries", count, timeout=60)
    assert {i["meta"]["uid"] for i in inquiries} == set(range(1, count + 1))


async def test_uidvalidity_change_causes_no_duplicates(make_hub: HubFactory, dovecot: Dovecot) -> None:
    old = [make_mail(i) for i in range(1, 4)]
    dovecot.append(old, folder="Leads")
    hub = await make_hub([dovecot.connector(folders=["Leads"], poll_interval="1s")])
    await hub.wait_items("/api/inquiries", 3)
    await wait_for(lambda: synced(hub, 3, "Leads"), what="the checkpoint at UID 3")
    before = (await checkpoint(hub, "Leads"))["uidvalidity"]

    admin = dovecot.client()
    admin.delete_folder("Leads")
    admin.create_folder("Leads")
    dovecot.append([*old, make_mail(4)], folder="Leads")
    assert admin.folder_status("Leads", [b"UIDVALIDITY"])[b"UIDVALIDITY"] != before

    async def resynced() -> bool:
        state = await checkpoint(hub, "Leads")
        return state is not None and state["uidvalidity"] != before and state["last_uid"] == 4

    await wait_for(resynced, timeout=20, what="the folder to be re-read under the new UIDVALIDITY")
    inquiries = await hub.wait_items("/api/inquiries", 4)
    assert len({i["key"] for i in inquiries}) == 4
    await hub.wait_items("/api/leads", 4)


async def test_folders_with_spaces_and_non_ascii_names(make_hub: HubFactory, dovecot: Dovecot) -> None:
    folders = ["Входящие заявки", "Sales.Web form"]  # Dovecot maildir: "." separates levels
    dovecot.append([make_mail(1)], folder=folders[0])
    dovecot.append([make_mail(2)], folder=folders[1])
    hub = await make_hub([dovecot.connector(folders=["INBOX", *folders])])
    inquiries = await hub.wait_items("/api/inquiries", 2)
    assert {i["meta"]["folder"] for i in inquiries} == set(folders)
    await hub.wait_items("/api/leads", 2)
    for folder in folders:
        await wait_for(lambda f=folder: synced(hub, 1, f), what=f"the checkpoint of {folder}")


async def test_server_killed_mid_sync_loses_nothing(make_hub: HubFactory, dovecot: Dovecot) -> None:
    count = 400
    dovecot.append([make_mail(i, body="x" * 2000 + "\r\n") for i in range(1, count + 1)])
    hub = await make_hub([dovecot.connector(fetch_batch=5)])
    await wait_for(lambda: synced(hub, 1), timeout=20, what="the first batch to be checkpointed")
    dovecot.kill()
    done_at_kill = (await checkpoint(hub))["last_uid"]
    assert done_at_kill < count, "the sync finished before the server was killed; raise `count`"

    async def failing() -> dict[str, Any] | None:
        detail = await readyz_detail(hub)
        return detail if detail and not detail["ok"] else None

    detail = await wait_for(failing, what="the folder to report the lost server")
    assert detail["error"]
    dovecot.start()
    await wait_for(lambda: synced(hub, count), timeout=60, what="the rest after the restart")
    inquiries = await hub.wait_items("/api/inquiries", count, timeout=60)
    assert len({i["key"] for i in inquiries}) == count
    assert (await readyz_detail(hub))["ok"]


@pytest.mark.parametrize(
    ("action", "flag_or_folder"),
    [("seen", b"\\Seen"), ("keyword:$LeadhubDone", b"$LeadhubDone"), ("move:Processed", "Processed")],
)
async def test_post_action_runs_after_the_mail_is_durable(
    make_hub: HubFactory, dovecot: Dovecot, action: str, flag_or_folder: Any
) -> None:
    dovecot.append([make_mail(1), make_mail(2)])
    if action.startswith("move:"):
        dovecot.client().create_folder("Processed")
    hub = await make_hub([dovecot.connector(post_action=action)])
    await hub.wait_items("/api/inquiries", 2)
    admin = dovecot.client()

    async def acted() -> bool:
        if isinstance(flag_or_folder, str):
            moved = admin.folder_status(flag_or_folder, [b"MESSAGES"])[b"MESSAGES"]
            left = admin.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"]
            return moved == 2 and left == 0
        admin.select_folder("INBOX", readonly=True)
        flags = admin.fetch(admin.search(), ["FLAGS"]).values()
        admin.unselect_folder()
        return len(flags) == 2 and all(flag_or_folder in f[b"FLAGS"] for f in flags)

    await wait_for(acted, what=f"post_action {action}")
    await wait_for(lambda: synced(hub, 2), what="the checkpoint")
    assert len((await hub.api("/api/inquiries"))["items"]) == 2


async def test_a_message_over_the_limit_is_kept_short_and_dropped(make_hub: HubFactory, dovecot: Dovecot) -> None:
    big = make_mail(1, body="y" * 200_000 + "\r\n")
    dovecot.append([big, make_mail(2)])
    hub = await make_hub([dovecot.connector(max_message_bytes=100_000)])
    inquiries = await hub.wait_items("/api/inquiries", 2)
    by_uid = {i["meta"]["uid"]: i for i in inquiries}
    assert by_uid[1]["meta"]["too_large"] == len(big)
    assert by_uid[1]["dropped"]
    assert by_uid[2]["dropped"] is None and "too_large" not in by_uid[2]["meta"]
    await hub.wait_items("/api/leads", 1)


def maildir_file(dovecot: Dovecot, n: int) -> Path:
    """The file Dovecot keeps message make_mail(n) in."""
    files = (p for p in (dovecot.root / "home" / "Maildir").glob("*/*") if p.parent.name in ("cur", "new"))
    return next(p for p in files if f"<inquiry-{n}@".encode() in p.read_bytes())


async def test_a_message_the_server_cannot_deliver_holds_up_only_itself(make_hub: HubFactory, dovecot: Dovecot) -> None:
    dovecot.append([make_mail(i) for i in range(1, 5)])
    maildir_file(dovecot, 2).chmod(0)  # Dovecot answers its FETCH with "Internal error" and ends the session
    hub = await make_hub([dovecot.connector(post_action="seen")])

    inquiries = await hub.wait_items("/api/inquiries", 4, timeout=40)
    by_uid = {i["meta"]["uid"]: i for i in inquiries}
    assert [by_uid[uid]["dropped"] for uid in (1, 3, 4)] == [None, None, None]
    placeholder = by_uid[2]
    assert placeholder["key"].startswith("imap:inbox:unreadable:")
    assert placeholder["dropped"].startswith("unreadable: the server could not deliver message UID 2: ")
    assert "Internal error" in placeholder["dropped"]
    await wait_for(lambda: synced(hub, 4), what="the checkpoint past the message")

    async def ready() -> bool:
        return bool((await readyz_detail(hub)).get("ok"))

    await wait_for(ready, what="the folder ready again")
    dovecot.append([make_mail(5)])
    await hub.wait_items("/api/leads", 4, timeout=20)
    admin = dovecot.client()

    async def only_the_unread_one_unseen() -> bool:  # the post-action is not for the message leadhub never read
        admin.select_folder("INBOX", readonly=True)
        flags = admin.fetch(admin.search(), ["FLAGS"])
        admin.unselect_folder()
        return {uid for uid, item in flags.items() if b"\\Seen" not in item[b"FLAGS"]} == {2}

    await wait_for(only_the_unread_one_unseen, what="\\Seen on every message but UID 2")


async def source_failures(hub: RunningHub, name: str = "inbox") -> float:
    """The folder's failed attempts so far: leadhub_connector_failures_total{reason="source"} on /metrics."""
    async with hub.session.get(hub.url("/metrics")) as response:
        text = await response.text()
    label = f'leadhub_connector_failures_total{{connector="{name}",reason="source"}}'
    return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(label)), 0.0)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnect back-off of at most half a second, so a test sees many retries quickly."""
    monkeypatch.setattr("leadhub.connectors.imap_folder.RETRY_FIRST", 0.1)
    monkeypatch.setattr("leadhub.connectors.imap_folder.RETRY_MAX", 0.5)


async def retried(hub: RunningHub, times: int, unless_past: int) -> None:
    """Wait until the folder has failed `times` times (enough for several failures of one message alone), or until
    the checkpoint passed UID `unless_past` (what a placeholder for it would do)."""

    async def enough() -> bool:
        return await source_failures(hub) >= times or await synced(hub, unless_past + 1)

    await wait_for(enough, timeout=30, what=f"{times} failed attempts of the folder")


@pytest.mark.usefixtures("quick_retries")
async def test_a_server_that_delivers_no_message_gets_no_placeholders(make_hub: HubFactory, dovecot: Dovecot) -> None:
    dovecot.append([make_mail(i) for i in range(1, 4)])
    for n in range(1, 4):
        maildir_file(dovecot, n).chmod(0)  # every FETCH fails: the server's trouble, not any message's
    hub = await make_hub([dovecot.connector()])

    async def server_failing() -> str | None:
        error = (await readyz_detail(hub)).get("error") or ""
        return error if "the server fails to deliver messages" in error else None

    await retried(hub, 12, unless_past=0)
    state = await checkpoint(hub)
    assert state is None or state["last_uid"] == 0, state  # no placeholder passed by the checkpoint
    assert (await hub.api("/api/inquiries"))["items"] == []
    error = await wait_for(server_failing, what="/readyz saying the server fails to deliver messages")
    assert "UID 1 failed alone, then UID" in error and "Internal error" in error  # the probe: UID 2, then 3, ...

    for n in range(1, 4):
        maildir_file(dovecot, n).chmod(0o600)
    inquiries = await hub.wait_items("/api/inquiries", 3, timeout=20)
    assert sorted(i["meta"]["uid"] for i in inquiries) == [1, 2, 3]
    assert [i["dropped"] for i in inquiries] == [None] * 3
    await wait_for(lambda: synced(hub, 3), what="the checkpoint past every message")
    await hub.wait_items("/api/leads", 3)


@pytest.mark.usefixtures("quick_retries")
async def test_two_unreadable_messages_side_by_side_are_each_given_up(make_hub: HubFactory, dovecot: Dovecot) -> None:
    dovecot.append([make_mail(i) for i in range(1, 5)])
    for n in (2, 3):  # UID 2's first probe, UID 3, fails too; the next probe is UID 4
        maildir_file(dovecot, n).chmod(0)
    hub = await make_hub([dovecot.connector()])
    inquiries = await hub.wait_items("/api/inquiries", 4, timeout=30)
    by_uid = {i["meta"]["uid"]: i["dropped"] or "" for i in inquiries}
    assert by_uid[1] == by_uid[4] == ""
    assert all(by_uid[n].startswith(f"unreadable: the server could not deliver message UID {n}: ") for n in (2, 3))
    await wait_for(lambda: synced(hub, 4), what="the checkpoint past both")


@pytest.mark.usefixtures("quick_retries")
async def test_the_last_message_is_given_up_only_once_mail_after_it_is_delivered(
    make_hub: HubFactory, dovecot: Dovecot
) -> None:
    dovecot.append([make_mail(1), make_mail(2)])
    maildir_file(dovecot, 2).chmod(0)
    hub = await make_hub([dovecot.connector()])
    await hub.wait_items("/api/inquiries", 1)
    await retried(hub, 12, unless_past=1)  # UID 2 failed alone many times, with nothing after it to probe
    assert [i["meta"]["uid"] for i in (await hub.api("/api/inquiries"))["items"]] == [1]
    assert (await checkpoint(hub))["last_uid"] == 1
    assert "could not deliver message UID 2" in (await readyz_detail(hub))["error"]

    dovecot.append([make_mail(3)])  # delivered: now UID 2's failures count, and it holds up UID 3
    inquiries = await hub.wait_items("/api/inquiries", 3, timeout=20)
    by_uid = {i["meta"]["uid"]: i for i in inquiries}
    assert by_uid[3]["dropped"] is None
    assert by_uid[2]["dropped"].startswith("unreadable: the server could not deliver message UID 2: ")
    await wait_for(lambda: synced(hub, 3), what="the checkpoint past the new message")
    await hub.wait_items("/api/leads", 2)


@pytest.mark.parametrize("security", ["ssl", "starttls"])
async def test_tls_with_a_self_signed_certificate(make_hub: HubFactory, security: str) -> None:
    with running_dovecot(tls=True) as server:
        server.append([make_mail(1)])
        port = server.ssl_port if security == "ssl" else server.port
        config = server.connector(security=security, port=port, ca_file=str(server.cert))
        hub = await make_hub([config])
        await hub.wait_items("/api/leads", 1)
        await hub.hub.stop()


async def test_an_untrusted_certificate_is_refused(make_hub: HubFactory) -> None:
    with running_dovecot(tls=True) as server:
        server.append([make_mail(1)])
        hub = await make_hub([server.connector(security="ssl", port=server.ssl_port)])

        async def refused() -> dict[str, Any] | None:
            detail = await readyz_detail(hub)
            return detail if detail.get("error") and "CERTIFICATE_VERIFY_FAILED" in detail["error"] else None

        await wait_for(refused, what="a certificate error in /readyz")
        assert (await hub.api("/api/inquiries"))["items"] == []
        await hub.hub.stop()


async def test_stop_is_prompt_while_idling(make_hub: HubFactory, dovecot: Dovecot) -> None:
    hub = await make_hub([dovecot.connector(poll_interval="10m")])
    await wait_for(lambda: checkpoint(hub), what="the first sync")
    started = time.monotonic()
    for stop in hub.hub.connector_stops:
        await stop()
    assert time.monotonic() - started < 2.0
    hub.hub.connector_stops.clear()


@pytest.mark.skipif(not PG_ADMIN_URL, reason="the mailbox lease is a PostgreSQL advisory lock (SQLite is one process)")
async def test_one_replica_at_a_time_reads_a_mailbox(make_hub: HubFactory, dovecot: Dovecot) -> None:
    dovecot.append([make_mail(1)])
    connector = dovecot.connector(poll_interval="1s")
    first = await make_hub([connector])
    await first.wait_items("/api/leads", 1)
    second = await make_hub([connector])  # same database: a second replica

    async def standby() -> dict[str, Any] | None:
        detail = await readyz_detail(second)
        return detail if detail.get("standby") else None

    detail = await wait_for(standby, what="the second replica to stand by")
    assert detail["ok"] is True and "folders" not in detail
    assert (await readyz_detail(first))["folders"]["INBOX"]["ok"]

    await first.hub.stop()  # its lease connection closes; the standby takes over on its next try
    dovecot.append([make_mail(2)])

    async def took_over() -> bool:
        detail = await readyz_detail(second)
        return bool(detail.get("folders", {}).get("INBOX", {}).get("ok"))

    await wait_for(took_over, what="the second replica to take the mailbox over")
    await second.wait_items("/api/leads", 2)
    assert len((await second.api("/api/inquiries"))["items"]) == 2


async def test_stop_is_prompt_when_the_server_hangs(make_hub: HubFactory, dovecot: Dovecot) -> None:
    hub = await make_hub([dovecot.connector(poll_interval="10m", timeout="60s")])
    await wait_for(lambda: checkpoint(hub), what="the first sync")
    assert dovecot.process is not None
    os.killpg(dovecot.process.pid, signal.SIGSTOP)  # the server stops answering but keeps the connection open
    try:
        started = time.monotonic()
        for stop in hub.hub.connector_stops:
            await stop()
        assert time.monotonic() - started < 2.0  # the 60 s read timeout did not hold it up
        hub.hub.connector_stops.clear()
    finally:
        os.killpg(dovecot.process.pid, signal.SIGCONT)
