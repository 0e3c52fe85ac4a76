"""Hot reload: a valid change applies without a restart; a broken file keeps its last good version and says so
in /readyz and /metrics; other files are unaffected."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from leadhub.store.db import create_engine
from leadhub.triggers.loader import load_rules
from leadhub.triggers.sandbox import Templates
from leadhub.triggers.service import TriggerService
from tests.helpers import wait_for

A = """
rules:
  - id: a
    on: lead.created
    do: [{create_task: {title: "A1"}}]
"""
B = """
rules:
  - id: b
    on: order.created
    do: [{create_task: {title: "B"}}]
"""


async def _readyz(running: Any) -> dict[str, Any]:
    async with running.session.get(running.url("/readyz")) as response:
        return await response.json()


async def test_rules_reload_on_change_and_a_broken_file_keeps_its_last_version(trigger_hub, rules_dir: Path) -> None:
    (rules_dir / "a.yaml").write_text(A)
    (rules_dir / "b.yaml").write_text(B)
    running = await trigger_hub()
    service = running.hub.triggers
    assert sorted(r.id for r in service.index.rules) == ["a", "b"]

    (rules_dir / "a.yaml").write_text(
        A.replace("A1", "A2") + "  - id: a2\n    on: lead.created\n    do: [{create_task: {title: x}}]\n"
    )

    async def reloaded() -> bool:
        return "a2" in service.index.by_id

    await wait_for(reloaded, timeout=30, what="the valid change to apply")
    (rules_dir / "a.yaml").write_text(A.replace("create_task", "create_tsk"))
    reloads = service.reloads

    async def problem_reported() -> bool:
        return service.reloads > reloads and bool(service.problems)

    await wait_for(problem_reported, timeout=30, what="the broken file to be reported")
    assert sorted(service.index.by_id) == ["a", "a2", "b"], "the last good version of a.yaml stays active"
    assert any("a.yaml" in p and "unknown action type 'create_tsk'" in p for p in service.problems)
    detail = (await _readyz(running))["detail"]["triggers"]
    assert detail["rules"] == 3 and "create_tsk" in detail["problems"][0]
    async with running.session.get(running.url("/metrics")) as response:
        metrics = await response.text()
    assert "leadhub_rule_problems 1.0" in metrics and "leadhub_rules_loaded 3.0" in metrics

    (rules_dir / "b.yaml").unlink()

    async def b_gone() -> bool:
        return "b" not in service.index.by_id

    await wait_for(b_gone, timeout=30, what="the removed file's rules to go")
    assert sorted(service.index.by_id) == ["a", "a2"]


@contextlib.asynccontextmanager
async def watching(
    tmp_path: Path, rules_dir: Path, templates_dir: Path | None = None, **options: Any
) -> AsyncIterator[tuple[TriggerService, asyncio.Task[None]]]:
    """A TriggerService on its own (no queue) that loaded `rules_dir`, with its watcher task created but not yet
    run: the body's first await is the watcher's first step. Stopped, and its store closed, afterwards."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'leadhub.db'}")
    service = TriggerService(
        engine,
        lambda: None,
        rules_dir=rules_dir,
        templates_dir=templates_dir,
        smtp_url=None,
        public_url=None,
        **options,
    )
    watcher = asyncio.create_task(service.watch())
    try:
        yield service, watcher
    finally:
        service.stop()
        await asyncio.wait_for(watcher, 10)
        await engine.dispose()


def rule_loaded(service: TriggerService, rule_id: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return rule_id in service.index.by_id

    return probe


async def test_a_change_made_before_the_watcher_is_in_place_is_still_picked_up(tmp_path: Path, rules_dir: Path) -> None:
    """Start-up loads the rules, then the watcher starts: a change in between raises no file event of its own."""
    (rules_dir / "a.yaml").write_text(A)
    async with watching(tmp_path, rules_dir) as (service, _):
        assert [r.id for r in service.index.rules] == ["a"]
        (rules_dir / "a.yaml").write_text(A + "  - id: a2\n    on: lead.created\n    do: [{create_task: {title: x}}]\n")
        await wait_for(rule_loaded(service, "a2"), timeout=10, what="the change made before the watcher started")


async def test_a_rules_directory_created_after_start_up_is_loaded_and_watched(tmp_path: Path) -> None:
    """Found by trying the README's first command: with no rules directory at start the watcher gave up, so the
    rules an admin then wrote there waited for a restart."""
    rules_dir = tmp_path / "rules"
    async with watching(tmp_path, rules_dir) as (service, _):
        assert service.index.rules == [] and service.problems == []  # nothing loaded, nothing lost: a warning
        await asyncio.sleep(0)  # the watcher's first step: it finds no directory
        rules_dir.mkdir()
        (rules_dir / "a.yaml").write_text(A)
        await wait_for(rule_loaded(service, "a"), timeout=10, what="the rules of the directory created after start-up")
        assert service.problems == []
        (rules_dir / "b.yaml").write_text(B)
        await wait_for(rule_loaded(service, "b"), timeout=10, what="a file added later to that directory")


@pytest.mark.parametrize("watcher_in_place", [True, False])
async def test_a_rules_directory_gone_keeps_the_loaded_rules_and_says_so(
    tmp_path: Path, rules_dir: Path, watcher_in_place: bool
) -> None:
    """Found by an audit: a deleted or unmounted rules directory unloaded every rule with no problem reported
    (/readyz ok, 0 problems), and the pending actions coming due meanwhile were cancelled for good."""
    (rules_dir / "a.yaml").write_text(A)
    async with watching(tmp_path, rules_dir) as (service, _):
        if watcher_in_place:
            (rules_dir / "b.yaml").write_text(B)
            await wait_for(rule_loaded(service, "b"), timeout=10, what="a change, the watcher being in place")
        shutil.rmtree(rules_dir)

        async def reported() -> bool:
            return service.problems == [f"{rules_dir}:1:1: rules directory not found"]

        await wait_for(reported, timeout=10, what="the vanished rules directory to be reported")
        loaded = ["a", "b"] if watcher_in_place else ["a"]
        assert sorted(r.id for r in service.index.rules) == loaded, "the loaded rules stay"
        rules_dir.mkdir()
        (rules_dir / "a.yaml").write_text(A + "  - id: a2\n    on: lead.created\n    do: [{create_task: {title: x}}]\n")
        await wait_for(rule_loaded(service, "a2"), timeout=10, what="the rules of the directory once it is back")
        assert service.problems == []


async def test_stop_ends_a_watcher_still_waiting_for_its_rules_directory(tmp_path: Path) -> None:
    async with watching(tmp_path, tmp_path / "none") as (service, watcher):
        await asyncio.sleep(0)  # the watcher is waiting for the directory
        assert not watcher.done()
        service.stop()
        await asyncio.wait_for(watcher, 5)


async def test_an_edited_template_file_reloads_the_rules_that_use_it(tmp_path: Path, rules_dir: Path) -> None:
    """Found by an audit: only rule files were watched, so a template edit waited for a rule file change."""
    templates = tmp_path / "templates"
    (templates / "email").mkdir(parents=True)
    (templates / "email" / "hello.subject.txt").write_text("Hello\n")
    (templates / "email" / "hello.txt").write_text("Hello {{ contact.name }}\n")
    (rules_dir / "a.yaml").write_text(
        "rules:\n  - id: hello\n    on: lead.created\n    do:\n"
        "      - send_email: {template: hello, to: x@example.com}\n"
    )
    async with watching(tmp_path, rules_dir, templates) as (service, _):
        assert [r.id for r in service.index.rules] == ["hello"] and service.problems == []
        (templates / "email" / "hello.txt").write_text("Hello {{ contact.name }\n")  # a syntax error

        async def reported() -> bool:
            return any("hello.txt" in p and "template syntax error" in p for p in service.problems)

        await wait_for(reported, timeout=10, what="the broken template to be reported")
        assert [r.id for r in service.index.rules] == ["hello"], "the rule's last good version stays active"


async def test_email_rules_without_a_public_url_are_warned_about(tmp_path: Path, rules_dir: Path) -> None:
    """Survey and unsubscribe links fall back to loopback: an admin who forgot LEADHUB_PUBLIC_URL hears of it at
    load, not from customers whose links do not open."""
    (rules_dir / "a.yaml").write_text(
        "rules:\n  - id: survey\n    on: order.completed\n    do:\n"
        "      - send_email: {template: survey, to: '{{ contact.email }}'}\n"
        "  - id: task\n    on: lead.created\n    do: [{create_task: {title: x}}]\n"
    )
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'leadhub.db'}")
    for public_url, warned in ((None, True), ("https://leads.example.com", False)):
        with structlog.testing.capture_logs() as lines:
            service = TriggerService(
                engine, lambda: None, rules_dir=rules_dir, templates_dir=None, smtp_url=None, public_url=public_url
            )
        assert [r.id for r in service.index.rules] == ["survey", "task"]
        warnings = [line for line in lines if "LEADHUB_PUBLIC_URL" in line["event"]]
        assert bool(warnings) is warned, lines
        if warned:
            assert warnings[0]["log_level"] == "warning" and warnings[0]["rules"] == ["survey"], warnings
    await engine.dispose()


WELCOME = "rules:\n  - id: welcome\n    on: lead.created\n    do: [{create_task: {title: '%s'}}]\n"


async def test_a_new_file_reusing_a_loaded_rule_id_leaves_the_running_rule_alone(
    tmp_path: Path, rules_dir: Path
) -> None:
    """Found by an audit: a new a.yaml reusing the id of a rule loaded from b.yaml replaced it (b.yaml's pending
    runs then ran a.yaml's actions), and the problem was reported at b.yaml:1:1, a file nobody had touched."""
    (rules_dir / "b.yaml").write_text(WELCOME % "call {{ contact.name }}")
    async with watching(tmp_path, rules_dir) as (service, _):
        (rules_dir / "a.yaml").write_text(WELCOME % "something else" + B.removeprefix("\nrules:\n"))
        service.reload()
        assert service.index.by_id["welcome"].file == str(rules_dir / "b.yaml")
        assert "b" in service.index.by_id, "the new file's other rules load"
        assert service.problems == [
            f"{rules_dir / 'a.yaml'}:2:5: rule 'welcome': id: duplicate rule id; already loaded from "
            f"{rules_dir / 'b.yaml'}:2"
        ]


async def test_an_edited_file_reusing_a_loaded_rule_id_keeps_its_last_version(tmp_path: Path, rules_dir: Path) -> None:
    (rules_dir / "a.yaml").write_text(A)
    (rules_dir / "b.yaml").write_text(WELCOME % "call {{ contact.name }}")
    async with watching(tmp_path, rules_dir) as (service, _):
        (rules_dir / "a.yaml").write_text(
            A
            + "  - id: welcome\n    on: lead.created\n    do: [{create_task: {title: x}}]\n"
            + "  - id: c\n    on: lead.created\n    do: [{create_task: {title: x}}]\n"
        )
        (rules_dir / "c.yaml").write_text(
            "rules:\n  - id: c\n    on: lead.created\n    do: [{create_task: {title: C}}]\n"
        )
        service.reload()
        assert sorted(service.index.by_id) == ["a", "c", "welcome"]
        assert service.index.by_id["welcome"].file == str(rules_dir / "b.yaml")
        assert service.index.by_id["c"].file == str(rules_dir / "c.yaml"), "a.yaml's last version leaves `c` free"
        assert service.problems == [
            f"{rules_dir / 'a.yaml'}:6:5: rule 'welcome': id: duplicate rule id; already loaded from "
            f"{rules_dir / 'b.yaml'}:2"
        ]
        (rules_dir / "b.yaml").unlink()
        (rules_dir / "c.yaml").unlink()
        service.reload()
        assert sorted(service.index.by_id) == ["a", "c", "welcome"] and service.problems == []
        assert {rule.file for rule in service.index.rules} == {str(rules_dir / "a.yaml")}


async def test_a_rule_id_in_two_files_at_start_up_is_reported_as_rules_check_does(
    tmp_path: Path, rules_dir: Path
) -> None:
    (rules_dir / "b.yaml").write_text(WELCOME % "call {{ contact.name }}")
    (rules_dir / "a.yaml").write_text(WELCOME % "something else")
    async with watching(tmp_path, rules_dir) as (service, _):
        assert service.index.by_id["welcome"].file == str(rules_dir / "a.yaml")
        assert service.problems == [str(p) for p in load_rules(rules_dir, Templates()).problems]
        assert service.problems == [
            f"{rules_dir / 'b.yaml'}:2:5: rule 'welcome': id: duplicate rule id; first defined at "
            f"{rules_dir / 'a.yaml'}:2"
        ]


async def test_an_editors_lock_file_is_not_a_rule_file(tmp_path: Path, rules_dir: Path) -> None:
    """Found by an audit: Emacs's lock `.#a.yaml`, a symlink to nowhere, was read as a rule file: `cannot read`
    in /readyz and the rule-problems alert while the admin was only editing a.yaml."""
    (rules_dir / "a.yaml").write_text(A)
    async with watching(tmp_path, rules_dir) as (service, _):
        (rules_dir / ".#a.yaml").symlink_to("admin@host.1234:1700000000")
        (rules_dir / "a.yaml").write_text(A + "  - id: a2\n    on: lead.created\n    do: [{create_task: {title: x}}]\n")
        await wait_for(rule_loaded(service, "a2"), timeout=10, what="the edit made beside the lock")
        assert service.problems == []


async def test_a_rule_file_written_with_a_pause_is_not_loaded_half_written(tmp_path: Path, rules_dir: Path) -> None:
    """Found by an audit: a writer pausing mid-file had the part written so far loaded as the whole file; cut
    between rules, the later ones went with no problem reported (and their due actions were cancelled)."""
    two = A + "  - id: a2\n    on: lead.created\n    do: [{create_task: {title: x}}]\n"
    three = two + "  - id: a3\n    on: lead.created\n    do: [{create_task: {title: x}}]\n"
    (rules_dir / "a.yaml").write_text(A)
    loaded: list[int] = []
    async with watching(tmp_path, rules_dir, on_reload=lambda rules, problems: loaded.append(rules)) as (service, _):
        (rules_dir / "b.yaml").write_text(B)
        await wait_for(rule_loaded(service, "b"), timeout=10, what="a change, the watcher being in place")
        loaded.clear()
        with (rules_dir / "a.yaml").open("w") as writer:
            writer.write(two)
            writer.flush()
            await asyncio.sleep(0.6)  # noqa: sleep-ok - the writer's pause mid-file, not a wait
            writer.write(three.removeprefix(two))
        await wait_for(rule_loaded(service, "a3"), timeout=10, what="the whole file to load")
        assert set(loaded) == {4}, f"a part of a.yaml was loaded: rules per reload {loaded}"
        assert service.problems == []


TYPO_FILTER = (
    'rules:\n  - id: c\n    on: lead.created\n    do: [{create_task: {title: "{{ contact.name|capitalise }}"}}]\n'
)
BAD_DATE = (
    "rules:\n  - id: d\n    on: lead.created\n"
    '    do: [{webhook: {url: "https://crm.example/x", body: {since: 2026-02-30}}}]\n'
)


async def test_a_misspelt_filter_or_an_impossible_date_at_start_up_is_a_problem_and_the_daemon_runs(
    trigger_hub, rules_dir: Path, tmp_path: Path
) -> None:
    """Found by an audit: a misspelt Jinja filter, a date that does not exist, or an e-mail template saved as cp1251
    raised out of the rule loading, and `leadhub run` stopped ("background task failed; stopping")."""
    templates = tmp_path / "templates"
    (templates / "email").mkdir(parents=True)
    (templates / "email" / "hello.subject.txt").write_text("Hi\n")
    (templates / "email" / "hello.txt").write_bytes("Здравствуйте\n".encode("cp1251"))
    (rules_dir / "a.yaml").write_text(A)
    (rules_dir / "c.yaml").write_text(TYPO_FILTER)
    (rules_dir / "d.yaml").write_text(BAD_DATE)
    (rules_dir / "e.yaml").write_text(
        "rules:\n  - {id: e, on: lead.created, do: [{send_email: {template: hello, to: x@example.com}}]}\n"
    )
    running = await trigger_hub(templates_dir=str(templates))
    service = running.hub.triggers
    assert sorted(service.index.by_id) == ["a"]
    detail = (await _readyz(running))["detail"]["triggers"]
    assert [p.removeprefix(f"{rules_dir}/").split(":")[:2] for p in detail["problems"]] == [
        ["c.yaml", "4"],
        ["d.yaml", "4"],
        ["e.yaml", "2"],
    ]
    assert "unknown filter 'capitalise'" in detail["problems"][0]
    assert "not a valid date or time" in detail["problems"][1]
    assert "email/hello.txt:1: not UTF-8 text" in detail["problems"][2]
    async with running.session.get(running.url("/metrics")) as response:
        metrics = await response.text()
    assert "leadhub_rule_problems 3.0" in metrics and "leadhub_rules_loaded 1.0" in metrics


async def test_a_misspelt_filter_or_an_impossible_date_edited_in_is_reported_and_other_files_still_load(
    tmp_path: Path, rules_dir: Path
) -> None:
    """Found by an audit: such an edit made every reload fail ("reloading rules failed", nothing else), so the
    problem never reached /readyz and edits of other files were ignored until it was fixed."""
    (rules_dir / "a.yaml").write_text(A)
    async with watching(tmp_path, rules_dir) as (service, _):
        (rules_dir / "c.yaml").write_text(TYPO_FILTER)
        (rules_dir / "d.yaml").write_text(BAD_DATE)
        (rules_dir / "a.yaml").write_text(A.replace("id: a", "id: a1") + B.removeprefix("\nrules:\n"))
        await wait_for(rule_loaded(service, "b"), timeout=10, what="the valid edit beside the broken files")
        assert sorted(service.index.by_id) == ["a1", "b"]
        assert [p.removeprefix(f"{rules_dir}/").split(":")[:2] for p in service.problems] == [
            ["c.yaml", "4"],
            ["d.yaml", "4"],
        ]
        (rules_dir / "a.yaml").write_text(TYPO_FILTER.replace("id: c", "id: a1"))

        async def reported() -> bool:
            return any(p.startswith(f"{rules_dir / 'a.yaml'}:4:") for p in service.problems)

        await wait_for(reported, timeout=10, what="the misspelt filter in a.yaml to be reported")
        assert sorted(service.index.by_id) == ["a1", "b"], "a.yaml's last loaded version stays"


async def test_an_unexpected_error_loading_the_rules_is_a_problem_the_loaded_rules_stay_and_it_is_retried(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last resort behind the located problems: whatever else a file or the loading raises (a bug) is reported
    in /readyz and the metric, never stops the daemon, and is tried again without waiting for another edit."""
    import leadhub.triggers.service as service_module

    real_load_file, real_load_hours = service_module.load_file, service_module.load_hours

    def load_file(path: Path, *args: Any) -> Any:
        if path.name == "c.yaml":
            raise RuntimeError("a bug reading c.yaml")
        return real_load_file(path, *args)

    def load_hours(paths: list[Path]) -> Any:
        raise RuntimeError("a bug reading the hours")

    (rules_dir / "a.yaml").write_text(A)
    reported: list[tuple[int, int]] = []
    async with watching(tmp_path, rules_dir, on_reload=lambda *counts: reported.append(counts)) as (service, _):
        monkeypatch.setattr(service_module, "load_file", load_file)
        (rules_dir / "c.yaml").write_text(TYPO_FILTER.replace("capitalise", "capitalize"))
        (rules_dir / "b.yaml").write_text(B)
        await wait_for(rule_loaded(service, "b"), timeout=10, what="b.yaml beside the file that fails")
        assert service.problems == [
            f"{rules_dir / 'c.yaml'}:1:1: could not be loaded: RuntimeError: a bug reading c.yaml"
        ]

        monkeypatch.setattr(service_module, "load_hours", load_hours)
        (rules_dir / "b.yaml").unlink()

        async def failed() -> bool:
            return service.problems == [
                f"{rules_dir}:1:1: the rules could not be loaded: RuntimeError: a bug reading the hours"
            ]

        await wait_for(failed, timeout=10, what="the failed load to be reported")
        assert sorted(service.index.by_id) == ["a", "b"], "the loaded rules keep running"
        assert reported[-1] == (2, 1), "the rule-problems metric counts it"
        assert service._why_not_loaded("b") is not None, "due actions of rules not loaded wait, not cancelled"

        monkeypatch.setattr(service_module, "load_hours", real_load_hours)
        monkeypatch.setattr(service_module, "load_file", real_load_file)

        async def retried() -> bool:
            return sorted(service.index.by_id) == ["a", "c"] and service.problems == []

        await wait_for(retried, timeout=10, what="the next pass to load the unchanged files")
