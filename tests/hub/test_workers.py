"""`workers: 2`: a second process on the same port, queue and store; work spread, nothing twice, metrics totalled."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import wait_for

# Worker lifecycles that do not depend on the store: run once, on the embedded default (the PostgreSQL suite is the
# long pole of CI and would only repeat them). The pipeline in several processes at once does depend on it.
store_independent = pytest.mark.store_independent

pytestmark = pytest.mark.slow
FORM = {"name": "site-form", "type": "form", "rate_limit": None}
CONFIG = {"connectors": [FORM], "workers": 2, "pipeline_batch_size": 20}


def _worker_pids(primary: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(primary), "-f", "run --worker"], check=False, capture_output=True, text=True
    )
    return [int(pid) for pid in found.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"  # a zombie has exited; its parent has not reaped it yet


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


async def _get(base_url: str, path: str) -> tuple[int, Any]:
    """One request on a new connection, so the kernel picks a process for it afresh."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(base_url + path) as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body


async def _workers_serving(base_url: str, expected: int) -> bool:
    status, body = await _get(base_url, "/readyz")
    detail = body.get("detail", {}).get("workers") if isinstance(body, dict) else None
    return status == 200 and detail is not None and detail["serving"] == expected


def _exactly_once(items: list[dict[str, Any]], accepted: dict[int, str]) -> None:
    stored = [item["id"] for item in items]
    missing = set(accepted.values()) - set(stored)
    extra = [i for i in stored if i not in set(accepted.values())]
    assert sorted(stored) == sorted(accepted.values()), (
        f"each post is exactly one inquiry: {len(stored)} stored for {len(accepted)} accepted, "
        f"missing {sorted(missing)[:5]}, not accepted {extra[:5]}, stored twice {len(stored) - len(set(stored))}"
    )


def _counter(text: str, name: str, labels: str) -> float:
    selector = rf"\{{{re.escape(labels)}\}}" if labels else ""
    match = re.search(rf"^{name}{selector} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def _post_until_accepted(
    session: aiohttp.ClientSession, url: str, i: int, accepted: dict[int, str], deadline: float = 30
) -> None:
    """Like a provider: a post that got no 2xx is sent again with the same Idempotency-Key."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    while loop.time() < give_up:
        try:
            async with session.post(
                url, json={"name": f"W {i}", "email": f"w{i}@example.com"}, headers={"Idempotency-Key": f"w-{i}"}
            ) as response:
                if response.status == 202:
                    accepted[i] = (await response.json())["id"]
                    return
                assert response.status == 503, await response.text()
        except (aiohttp.ClientError, TimeoutError):
            pass  # the process that had the connection was killed; another one takes the retry
    pytest.fail(f"post {i} was never accepted")


async def _all_inquiries(base_url: str, count: int) -> list[dict[str, Any]] | None:
    status, body = await _get(base_url, "/api/inquiries?limit=1000")
    return body["items"] if status == 200 and len(body["items"]) >= count else None


async def _post_400_and_see_each_stored_once(base_url: str) -> None:
    accepted: dict[int, str] = {}
    url = base_url + "/hooks/site-form"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for start in range(0, 400, 40):
            await asyncio.gather(*(_post_until_accepted(session, url, i, accepted) for i in range(start, start + 40)))
    items = await wait_for(lambda: _all_inquiries(base_url, 400), timeout=40, what="400 inquiries stored")
    _exactly_once(items, accepted)


async def test_workers_share_the_port_and_the_work_and_report_one_total(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(CONFIG)
    await daemon.start()
    await wait_for(lambda: _workers_serving(daemon.base_url, 1), timeout=30, what="worker 1 serving")
    answered: set[int] = set()

    async def both_processes_answer() -> bool:
        _, body = await _get(daemon.base_url, "/healthz")
        answered.add(body["worker"])
        return answered == {0, 1}

    await wait_for(both_processes_answer, timeout=20, what="/healthz answered by the primary and by worker 1")
    [worker] = _worker_pids(daemon.process.pid)
    assert _niceness(worker) == _niceness(daemon.process.pid), "a worker that answers webhooks keeps its priority"

    await _post_400_and_see_each_stored_once(daemon.base_url)

    async def totals_agree() -> bool:  # both pipelines and both relays (each its share) have caught up
        _, text = await _get(daemon.base_url, "/metrics")
        stored = _counter(text, "leadhub_pipeline_processed_total", 'outcome="stored"')
        return stored == 400 and _counter(text, "leadhub_events_published_total", "") >= 1200

    await wait_for(totals_agree, timeout=20, what="400 stored and their events relayed")
    for _ in range(8):  # whichever process answers the scrape, the figures are the totals of both
        _, text = await _get(daemon.base_url, "/metrics")
        assert _counter(text, "leadhub_intake_accepted_total", 'connector="site-form"') == 400
        assert _counter(text, "leadhub_pipeline_processed_total", 'outcome="stored"') == 400
        # each new person: contact.created, inquiry.received, lead.created; relayed once, by one of the two shares
        assert _counter(text, "leadhub_outbox_written_total", "") == 1200
        assert _counter(text, "leadhub_events_published_total", "") == 1200
        # the series the example alerts take increase() of are there at 0 before their first count
        assert 'leadhub_pipeline_processed_total{outcome="dead_letter"} 0.0' in text
        assert 'leadhub_action_runs_total{action="webhook",outcome="failed"} 0.0' in text

    workers = _worker_pids(daemon.process.pid)
    assert len(workers) == 1
    daemon.kill()  # SIGKILL of the primary: the kernel sends its worker SIGTERM
    await wait_for(lambda: asyncio.to_thread(lambda: not _alive(workers[0])), timeout=20, what="the worker to exit")


@store_independent
async def test_a_killed_worker_is_started_again_and_nothing_is_lost(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(CONFIG)
    await daemon.start()
    await wait_for(lambda: _workers_serving(daemon.base_url, 1), timeout=30, what="worker 1 serving")
    [first] = _worker_pids(daemon.process.pid)
    accepted: dict[int, str] = {}
    url = daemon.base_url + "/hooks/site-form"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        posting = asyncio.gather(*(_post_until_accepted(session, url, i, accepted) for i in range(300)))
        await wait_for(lambda: asyncio.sleep(0, len(accepted) >= 100), timeout=30, what="100 posts accepted")
        os.kill(first, signal.SIGKILL)  # mid-burst: it may hold connections and fetched, unacked envelopes
        await posting

    async def replaced() -> bool:
        return await _workers_serving(daemon.base_url, 1) and _worker_pids(daemon.process.pid) not in ([], [first])

    await wait_for(replaced, timeout=30, what="a new worker 1 serving")
    items = await wait_for(lambda: _all_inquiries(daemon.base_url, 300), timeout=40, what="300 inquiries stored")
    _exactly_once(items, accepted)
    assert "worker exited; starting it again" in daemon.log()

    [second] = _worker_pids(daemon.process.pid)
    assert await daemon.terminate() == 0
    assert not _alive(second), "SIGTERM of the primary stops its workers before it exits"


@store_independent
async def test_a_crash_looping_worker_leaves_no_metrics_files_and_its_counts_stay_in_the_totals(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """Each exited worker left its counter and histogram files (prometheus_client's mark_process_dead removes only
    live gauges): a crash loop grew the metrics directory, and the time of every /metrics, without end."""
    daemon = make_daemon(CONFIG)
    await daemon.start()
    await wait_for(lambda: _workers_serving(daemon.base_url, 1), timeout=30, what="worker 1 serving")
    metrics_dir = Path(daemon.env["LEADHUB_DATA_DIR"]) / "metrics"
    accepted: dict[int, str] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        await asyncio.gather(
            *(_post_until_accepted(session, daemon.base_url + "/hooks/site-form", i, accepted) for i in range(40))
        )

    async def accepted_total() -> float:
        _, text = await _get(daemon.base_url, "/metrics")
        return _counter(text, "leadhub_intake_accepted_total", 'connector="site-form"')

    assert await accepted_total() == 40
    files_after: list[int] = []
    for _ in range(3):
        [worker] = _worker_pids(daemon.process.pid)
        os.kill(worker, signal.SIGKILL)

        async def replaced(gone: int = worker) -> bool:
            return await _workers_serving(daemon.base_url, 1) and _worker_pids(daemon.process.pid) not in ([], [gone])

        await wait_for(replaced, timeout=30, what="a new worker 1 serving")
        assert not list(metrics_dir.glob(f"*_{worker}.db")), "the killed worker's files are folded away"
        files_after.append(len(list(metrics_dir.glob("*.db"))))
        for _ in range(4):  # whichever process answers, the killed workers' counts are in the totals
            assert await accepted_total() == 40
    assert files_after[0] == files_after[-1], f"metrics files after each restart: {files_after}"


# A pool whose worker writes to its ready pipe and waits, in a process that has used up its file descriptors (a low
# RLIMIT_NOFILE, as a crowded container has), then gets them back.
POOL_OUT_OF_DESCRIPTORS = """
import asyncio, os, resource, sys, time
from leadhub.hub.workers import WorkerPool, WorkerSpec

WORKER = "import os, signal, sys; os.write(int(sys.argv[1]), b'ready'); signal.pause()"

class WaitingWorker(WorkerSpec):
    def command(self, index, ready_fd, config_fd=None):
        return [sys.executable, "-c", WORKER, str(ready_fd)]

async def until(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # noqa: sleep-ok - polls a condition under a deadline
    return condition()

async def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    taken = []
    try:
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    pool = WorkerPool(WaitingWorker("", 0, "", ((),), None), 2)
    pool.start()
    await until(lambda: pool.status().get("error"), 5)
    print("while out:", pool.status(), flush=True)
    for fd in taken:
        os.close(fd)
    print("recovered" if await until(lambda: pool.status()["ok"], 15) else "not recovered", flush=True)
    print("once serving:", pool.status(), flush=True)
    await pool.stop(5)

{run}(main())
"""


@pytest.mark.parametrize("run", ["asyncio.run", "__import__('uvloop').run"], ids=["asyncio", "uvloop"])
def test_a_worker_that_cannot_be_started_for_want_of_descriptors_is_logged_shown_and_tried_again(run: str) -> None:
    """os.pipe() failing with EMFILE ended the worker's restart task without a word: /readyz stayed 503 for good,
    nothing said why, and the worker never came back once descriptors were free again. (`leadhub run` runs on
    uvloop where it is installed.)"""
    script = POOL_OUT_OF_DESCRIPTORS.replace("{run}", run)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "worker could not be started; trying again" in out and "Too many open files" in out, out
    assert re.search(r"while out: \{'ok': False, .*'error': 'worker 1: not started: .*Too many open files", out), out
    assert "recovered" in out and "not recovered" not in out, out
    assert "once serving: {'ok': True, 'serving': 1, 'expected': 1, 'error': None}" in out, out


# A pool whose worker exits at once, with a clean-up after each exit that fails (as folding its metric files can:
# out of descriptors, a file it cannot read).
POOL_CLEANUP_FAILS = """
import asyncio, sys, time
from leadhub.hub.workers import WorkerPool, WorkerSpec

class FailingWorker(WorkerSpec):
    def command(self, index, ready_fd, config_fd=None):
        return [sys.executable, "-c", "raise SystemExit(7)"]

def clean_up(pid):
    raise OSError(24, "Too many open files")

async def main():
    pool = WorkerPool(FailingWorker("", 0, "", ((),), None), 2, on_exit=clean_up)
    pool.start()
    deadline = time.monotonic() + 10
    while "worker 1: exited with status 7" != pool.status()["error"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # noqa: sleep-ok - polls a condition under a deadline
    print("status:", pool.status(), flush=True)
    await pool.stop(5)

asyncio.run(main())
"""


def test_a_failed_clean_up_after_a_worker_exit_is_logged_as_such_and_the_exit_stays_known() -> None:
    """The clean-up ran in a `finally`: its error replaced the worker's exit status, and the log and /readyz said
    the worker 'could not be started' when it had run and exited with status 7."""
    done = subprocess.run(
        [sys.executable, "-c", POOL_CLEANUP_FAILS], capture_output=True, text=True, timeout=60, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "status: {'ok': False, 'serving': 0, 'expected': 1, 'error': 'worker 1: exited with status 7'}" in out, out
    assert "cleaning up after a worker failed" in out and "Too many open files" in out, out
    assert "could not be started" not in out, out


def test_auto_is_one_worker_per_usable_cpu() -> None:
    from leadhub.hub.config import config_from_dict

    assert config_from_dict({"workers": "auto"}, env={}).settings.workers == len(os.sched_getaffinity(0))
    assert config_from_dict({}, env={"LEADHUB_WORKERS": "3"}).settings.workers == 3
    assert config_from_dict({}, env={}).settings.workers == 1, "one process unless asked"


SPLIT = {**CONFIG, "workers": 3, "roles": ["http", "triggers"], "worker_roles": ["pipeline", "relay"]}


async def test_split_roles_webhooks_in_the_primary_pipeline_and_relay_in_the_workers(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(SPLIT)
    await daemon.start()
    await wait_for(lambda: _workers_serving(daemon.base_url, 2), timeout=40, what="both pipeline workers working")
    workers = _worker_pids(daemon.process.pid)
    assert len(workers) == 2
    assert [_niceness(pid) - _niceness(daemon.process.pid) for pid in workers] == [10, 10], (
        "pipeline-only workers leave the CPU to the webhooks when it is short"
    )
    for _ in range(10):  # a worker without http binds no port: every new connection reaches the primary
        status, body = await _get(daemon.base_url, "/healthz")
        assert (status, body["worker"]) == (200, 0)

    await _post_400_and_see_each_stored_once(daemon.base_url)
    await _see_their_events_relayed_once(daemon.base_url)  # two relaying workers: shares 0/2 and 1/2
    assert await daemon.terminate() == 0


async def _see_their_events_relayed_once(base_url: str) -> None:
    """The 400 new people's 1,200 events (contact, inquiry, lead) relayed, each once, by whichever shares exist."""

    async def every_event_relayed() -> bool:
        _, text = await _get(base_url, "/metrics")
        return _counter(text, "leadhub_events_published_total", "") >= 1200

    await wait_for(every_event_relayed, timeout=30, what="the events of 400 new people relayed")
    _, text = await _get(base_url, "/metrics")
    assert _counter(text, "leadhub_intake_accepted_total", 'connector="site-form"') == 400
    assert _counter(text, "leadhub_pipeline_processed_total", 'outcome="stored"') == 400
    assert _counter(text, "leadhub_outbox_written_total", "") == 1200
    assert _counter(text, "leadhub_events_published_total", "") == 1200, "each event relayed once"


PER_WORKER = {**CONFIG, "workers": 3, "roles": "http,triggers", "worker_roles": "http;pipeline,relay"}


def _worker_index(pid: int) -> int:
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return int(command[command.index(b"--worker") + 1])


@store_independent
async def test_roles_per_worker_two_answer_webhooks_and_one_runs_the_pipeline(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(PER_WORKER)
    await daemon.start()
    await wait_for(lambda: _workers_serving(daemon.base_url, 2), timeout=40, what="both workers working")
    primary = daemon.process.pid
    niceness = {_worker_index(pid): _niceness(pid) - _niceness(primary) for pid in _worker_pids(primary)}
    assert niceness == {1: 0, 2: 10}, "only the pipeline worker leaves the CPU to the webhook processes"
    answered: list[int] = []

    async def both_webhook_processes_answer() -> bool:
        _, body = await _get(daemon.base_url, "/healthz")
        answered.append(body["worker"])
        return {0, 1} <= set(answered)

    await wait_for(both_webhook_processes_answer, timeout=20, what="/healthz answered by the primary and worker 1")
    assert 2 not in answered, "the pipeline worker binds no port"

    await _post_400_and_see_each_stored_once(daemon.base_url)
    await _see_their_events_relayed_once(daemon.base_url)  # one relaying process, worker 2, with share 0/1
    assert await daemon.terminate() == 0


def test_worker_roles_are_checked_and_decide_the_relay_shares() -> None:
    from leadhub.hub.config import ConfigError, config_from_dict
    from leadhub.hub.workers import WorkerSpec, relaying_processes

    one_group = config_from_dict({}, env={"LEADHUB_WORKERS": "3", "LEADHUB_WORKER_ROLES": "pipeline, relay"})
    assert one_group.settings.worker_roles == (("pipeline", "relay"),), "one group: every worker's roles"
    spec = WorkerSpec.of(one_group, "nats://127.0.0.1:1", 8080)
    assert spec.relay_shares == 3 and "--relay-share" in (command := spec.command(2, 9))
    assert command[command.index("--relay-share") + 1] == "2/3", "the primary relays share 0"

    split = config_from_dict({"workers": 3, "roles": "http,triggers", "worker_roles": "pipeline,relay"}, env={})
    spec = WorkerSpec.of(split, "nats://127.0.0.1:1", 8080)
    assert spec.relay_shares == 2
    assert [spec.command(i, 9)[-1] for i in (1, 2)] == ["0/2", "1/2"], (
        "workers take every share when the primary does not relay"
    )
    assert "--relay-share" not in WorkerSpec.of(
        config_from_dict({"workers": 2, "worker_roles": "http,pipeline"}, env={}), "n", 1
    ).command(1, 9)
    unset = WorkerSpec.of(config_from_dict({"workers": 2, "roles": "http,pipeline"}, env={}), "n", 1)
    assert unset.roles_of(1) == ("http", "pipeline"), "unset: the primary's roles that can run more than once"
    assert unset.environment(1, {"LEADHUB_ROLES": "http,pipeline", "KEEP": "1"})["LEADHUB_ROLES"] == "http,pipeline"

    for given in ("http; pipeline,relay", [["http"], ["pipeline", "relay"]]):
        per_worker = config_from_dict({"workers": 3, "roles": "http,triggers", "worker_roles": given}, env={})
        assert per_worker.settings.worker_roles == (("http",), ("pipeline", "relay")), given
        spec = WorkerSpec.of(per_worker, "nats://127.0.0.1:1", 8080)
        assert [spec.environment(i, {})["LEADHUB_ROLES"] for i in (1, 2)] == ["http", "pipeline,relay"]
        assert "--relay-share" not in spec.command(1, 9), "worker 1 does not relay"
        assert spec.command(2, 9)[-1] == "0/1", "worker 2 relays the whole outbox: nobody else does"
        assert relaying_processes(per_worker.settings) == 1
    mixed = config_from_dict({"workers": 4, "worker_roles": "http;pipeline,relay;relay"}, env={})
    spec = WorkerSpec.of(mixed, "n", 1)
    assert [spec.command(i, 9)[-1] for i in (2, 3)] == ["1/3", "2/3"], "the primary 0, then the relaying workers"
    assert relaying_processes(mixed.settings) == spec.relay_shares == 3
    with pytest.raises(ConfigError, match=r"worker_roles: .*2 groups of roles .* starts 3 process\(es\) .* workers: 3"):
        config_from_dict({"workers": 4, "worker_roles": "http;pipeline"}, env={})
    with pytest.raises(ConfigError, match="in each group"):
        config_from_dict({"workers": 3, "worker_roles": "http;"}, env={})
    with pytest.raises(ConfigError, match="worker_roles: has http but roles does not"):
        config_from_dict({"workers": 3, "roles": "pipeline,relay,triggers", "worker_roles": "pipeline;http"}, env={})

    with pytest.raises(ConfigError, match="worker_roles: has http but roles does not"):
        config_from_dict({"workers": 2, "roles": "pipeline,relay", "worker_roles": "http"}, env={})
    with pytest.raises(ConfigError, match="worker_roles"):
        config_from_dict({"workers": 2, "worker_roles": "triggers"}, env={})
    with pytest.raises(ConfigError, match="name at least one of"):
        config_from_dict({"workers": 2}, env={"LEADHUB_WORKER_ROLES": " , "})


def test_roles_that_leave_work_undone_are_refused_or_named(tmp_path: Path) -> None:
    """`worker_roles` with one process was ignored without a word (`roles: http,triggers` then ran no pipeline and
    no relay: webhooks answered 202 and nothing was stored), and so was an empty `LEADHUB_ROLES`; a role no process
    of the daemon runs is named by `config check` and at start."""
    from leadhub.hub.config import ConfigError, config_from_dict
    from leadhub.hub.config_check import describe
    from leadhub.hub.workers import roles_run_nowhere

    with pytest.raises(ConfigError) as caught:
        config_from_dict({"roles": "http,triggers", "worker_roles": "pipeline,relay"}, env={})
    assert caught.value.problems == [
        "(defaults): worker_roles: names the roles of the processes beside the first, but workers is 1: set "
        "workers: 2 or more, or put these roles in roles"
    ]
    with pytest.raises(ConfigError) as caught:
        config_from_dict({}, env={"LEADHUB_ROLES": " , "})
    assert caught.value.problems == [
        "environment LEADHUB_ROLES: roles: name at least one of http, pipeline, relay, triggers"
    ]

    with pytest.raises(ConfigError) as caught:  # the workers started with no role, were refused, and restarted forever
        config_from_dict({"workers": 2, "roles": "triggers"}, env={})
    assert caught.value.problems == [
        "(defaults): worker_roles: unset, so the processes beside the first run the roles of roles among http, "
        "pipeline, relay, and roles has none: set worker_roles, or workers: 1"
    ]
    assert config_from_dict({"workers": 2, "roles": "triggers", "worker_roles": "pipeline,relay"}, env={})

    split = config_from_dict({"workers": 2, "roles": "http,triggers", "worker_roles": "pipeline"}, env={})
    assert roles_run_nowhere(split.settings) == ("relay",)
    assert roles_run_nowhere(config_from_dict({}, env={}).settings) == ()
    assert roles_run_nowhere(config_from_dict({"workers": 3, "roles": "http,triggers"}, env={}).settings) == (
        "pipeline",
        "relay",
    ), "unset worker_roles: the workers run the primary's roles only"
    lines = describe(split, {}).lines
    assert (
        "  not run     relay: by no process of this daemon; the embedded queue keeps what they would take until a "
        "start that runs them"
    ) in lines
    external = config_from_dict({"roles": "http"}, env={"LEADHUB_NATS_URL": "nats://n1:4222"})
    assert "  not run     pipeline, relay, triggers: by no process of this daemon; another replica must run them" in (
        describe(external, {}).lines
    )
    assert not any("not run" in line for line in describe(config_from_dict({}, env={}), {}).lines)


@store_independent
async def test_a_role_no_process_runs_is_warned_of_at_start(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon({"connectors": [FORM], "roles": "http,relay,triggers"})
    await daemon.start()
    assert await daemon.terminate() == 0
    assert "roles run by no process of this daemon" in daemon.log()
    assert "roles=pipeline" in daemon.log()
    assert "the embedded queue keeps what they would take until a start that runs them" in daemon.log()


@store_independent
async def test_a_restarted_worker_runs_the_configuration_the_primary_started_with(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """A worker started again after a crash read `leadhub.yaml` afresh: edited since the start (a rotated form
    token), it refused what the primary accepted, and every other connection the kernel gave it failed."""
    old, new = "old-token-0123456789abcdef", "new-token-0123456789abcdef"
    daemon = make_daemon({**CONFIG, "connectors": [{**FORM, "token": old}]})
    await daemon.start()
    await wait_for(lambda: _workers_serving(daemon.base_url, 1), timeout=30, what="worker 1 serving")
    daemon.config_file.write_text(daemon.config_file.read_text().replace(old, new))
    [first] = _worker_pids(daemon.process.pid)
    os.kill(first, signal.SIGKILL)

    async def replaced() -> bool:
        return await _workers_serving(daemon.base_url, 1) and _worker_pids(daemon.process.pid) not in ([], [first])

    await wait_for(replaced, timeout=30, what="a new worker 1 serving")
    [second] = _worker_pids(daemon.process.pid)
    assert old.encode() not in Path(f"/proc/{second}/cmdline").read_bytes(), "ps shows no secret of the file"
    answers: dict[int, set[int]] = {0: set(), 1: set()}  # process -> statuses its connections got with the old token

    async def both_processes_answered() -> bool:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:  # one connection
            async with session.get(daemon.base_url + "/healthz") as response:
                process = (await response.json())["worker"]
            async with session.post(
                daemon.base_url + "/hooks/site-form",
                json={"name": "T", "email": f"t{len(answers[0]) + len(answers[1])}@example.com"},
                headers={"X-Leadhub-Token": old},
            ) as response:
                answers[process].add(response.status)
        return all(answers.values())

    # a session per pair: the kernel spreads new connections, so both processes are asked
    await wait_for(both_processes_answered, timeout=20, what="posts answered by the primary and by worker 1")
    statuses = answers[0] | answers[1]
    assert statuses == {202}, f"the old token, which the primary validated at start, is accepted everywhere: {answers}"


# Worker 1 of the race below: serves, and on SIGTERM exits once worker 2 runs (at most 3 s later), so the stop is still
# waiting for it while worker 2 comes up.
FIRST_OF_THE_RACE = """
import os, signal, sys, time
from pathlib import Path

def stop(*_):
    deadline = time.monotonic() + 3
    while not Path(sys.argv[2]).exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # noqa: sleep-ok - polls a condition under a deadline
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
os.write(int(sys.argv[1]), b"ready")
while True:
    signal.pause()
"""
SECOND_OF_THE_RACE = "import signal, sys; open(sys.argv[1], 'w').close(); signal.pause()"


async def test_a_worker_started_as_the_stop_begins_is_stopped_with_the_others(tmp_path: Path) -> None:
    """The stop signalled the workers it knew of, then cancelled the tasks that keep them running: a worker whose
    start was under way at that moment missed the SIGTERM and ran on, unstopped, until the primary exited."""
    from leadhub.hub.workers import WorkerPool, WorkerSpec

    marker = tmp_path / "worker-2-runs"
    stopping: list[asyncio.Future[None]] = []

    class RacingWorkers(WorkerSpec):
        def command(self, index: int, ready_fd: int, config_fd: int | None = None) -> list[str]:
            if index == 1:
                return [sys.executable, "-c", FIRST_OF_THE_RACE, str(ready_fd), str(marker)]
            if 1 not in pool.serving:  # not yet: this start of worker 2 fails, the next one comes after a back-off
                return [sys.executable, "-c", "raise SystemExit(1)"]
            stopping.append(asyncio.ensure_future(pool.stop(10)))  # runs while worker 2 is being started
            return [sys.executable, "-c", SECOND_OF_THE_RACE, str(marker)]

    pool = WorkerPool(RacingWorkers("", 0, "", ((), ()), None), 3)
    pool.start()
    try:
        await wait_for(lambda: asyncio.sleep(0, stopping), timeout=30, what="the stop to begin as worker 2 starts")
        await asyncio.wait_for(stopping[0], 30)
        second = pool.processes[2]
        assert second.returncode is not None, "worker 2, started as the stop began, was stopped too"
    finally:
        for process in pool.processes.values():
            if process.returncode is None:
                process.kill()
                await process.wait()


def test_auto_counts_the_cpu_quota_of_a_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` counted the CPUs of the affinity mask only: in a container limited to 2 CPUs (`docker run --cpus 2`,
    `CPUQuota=200%`) on a 64-core host it started 64 processes (~120 MiB each) that shared two CPUs' time."""
    from leadhub.hub import usable_cpus
    from leadhub.hub.config import config_from_dict

    cores = len(os.sched_getaffinity(0))
    v2 = tmp_path / "v2"
    (v2 / "system.slice" / "leadhub.service").mkdir(parents=True)
    (v2 / "system.slice" / "cpu.max").write_text("max 100000\n")
    (v2 / "system.slice" / "leadhub.service" / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: 2 processes
    own = tmp_path / "cgroup"
    own.write_text("0::/system.slice/leadhub.service\n")
    monkeypatch.setattr(usable_cpus, "CGROUP_ROOTS", (v2,))
    monkeypatch.setattr(usable_cpus, "OWN_CGROUP", own)
    assert config_from_dict({"workers": "auto"}, env={}).settings.workers == min(cores, 2)

    v1 = tmp_path / "v1" / "cpu,cpuacct"  # cgroup v1 in a container: its own group is the mount's root
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    own.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    monkeypatch.setattr(usable_cpus, "CGROUP_ROOTS", (tmp_path / "v1",))
    assert config_from_dict({"workers": "auto"}, env={}).settings.workers == 1

    (v1 / "cpu.cfs_quota_us").write_text("-1\n")  # no limit: the affinity counts
    assert config_from_dict({"workers": "auto"}, env={}).settings.workers == cores
