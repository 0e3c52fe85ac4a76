"""Rule files: examples load, every kind of mistake is reported as `file:line:col: rule 'id': path: message`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from leadhub.triggers.jsonschema import render
from leadhub.triggers.loader import load_rules
from leadhub.triggers.sandbox import Templates
from tests.helpers import REPO, run_leadhub

EXAMPLES = REPO / "examples" / "rules"
GOOD = """\
  - id: good
    on: lead.created
    do:
      - create_task: {title: "call {{ contact.name }}"}
"""


def _write(tmp_path: Path, body: str) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir(exist_ok=True)
    (directory / "r.yaml").write_text("rules:\n" + GOOD + body)
    return directory


def _problems(tmp_path: Path, body: str) -> list[str]:
    result = load_rules(_write(tmp_path, body), Templates())
    assert [r.id for r in result.rules] == ["good"], "one bad rule must never disable the others"
    return [str(p).replace(str(tmp_path / "rules") + "/", "") for p in result.problems]


def test_examples_load_without_problems() -> None:
    result = load_rules(EXAMPLES, Templates())
    assert result.problems == []
    assert {"post-sale-survey", "low-score-task", "callback-task", "weekly-digest"} <= {r.id for r in result.rules}


CASES = {
    "unknown event": (
        """\
  - id: e
    on: lead.creatd
    do: [{create_task: {title: x}}]
""",
        "r.yaml:7:9: rule 'e': on[0]: unknown event type 'lead.creatd'; valid types: contact.created,",
    ),
    "unknown action": (
        """\
  - id: a
    on: lead.created
    do:
      - send_mail: {to: x}
""",
        "r.yaml:9:9: rule 'a': do[0]: unknown action type 'send_mail'; valid types: create_task, notify_telegram, "
        "send_email, update_lead, webhook",
    ),
    "unknown template": (
        """\
  - id: t
    on: order.completed
    do:
      - send_email: {template: nope, to: "{{ contact.email }}"}
""",
        "r.yaml:9:22: rule 't': do[0].send_email.template: unknown template 'nope'",
    ),
    "template syntax": (
        """\
  - id: s
    on: lead.created
    do:
      - create_task: {title: "{{ lead.title "}
""",
        "r.yaml:9:23: rule 's': do[0].create_task.title: template syntax error (line 1): unexpected end of template",
    ),
    "condition syntax": (
        """\
  - id: c
    on: lead.created
    if: "lead.status =="
    do: [{create_task: {title: x}}]
""",
        "r.yaml:8:5: rule 'c': if: expression syntax error",
    ),
    "bad duration": (
        """\
  - id: d
    on: lead.created
    wait: 5 parsecs
    do: [{create_task: {title: x}}]
""",
        "r.yaml:8:5: rule 'd': wait: invalid duration '5 parsecs': write a number and a unit, e.g. 30s, 15m, 2h, 7d",
    ),
    "bad cron": (
        """\
  - id: k
    schedule: {cron: "61 * * * *", timezone: Europe/Moscow}
    do: [{create_task: {title: x}}]
""",
        "r.yaml:7:16: rule 'k': schedule.cron: invalid cron expression '61 * * * *'",
    ),
    "bad time zone": (
        """\
  - id: z
    schedule: {cron: "0 9 * * *", timezone: Mars/Olympus}
    do: [{create_task: {title: x}}]
""",
        "r.yaml:7:35: rule 'z': schedule.timezone: unknown time zone 'Mars/Olympus'",
    ),
    # No timeout at all (aiohttp reads 0 as none): a receiver that never answers held the scheduler's batch, and
    # with it every other action, for good. Past the 5-minute lease another replica ran the batch's actions again.
    "webhook without a timeout": (
        """\
  - id: w
    on: lead.created
    do: [{webhook: {url: "https://crm.example/hook", timeout: 0s}}]
""",
        "r.yaml:8:54: rule 'w': do[0].webhook.timeout: "
        "a webhook timeout must be more than 0s and at most 60s, not '0s'",
    ),
    "webhook timeout past the lease": (
        """\
  - id: w
    on: lead.created
    do: [{webhook: {url: "https://crm.example/hook", timeout: 10m}}]
""",
        "r.yaml:8:54: rule 'w': do[0].webhook.timeout: "
        "a webhook timeout must be more than 0s and at most 60s, not '10m'",
    ),
    "field the event cannot have": (
        """\
  - id: f
    on: lead.created
    if: "order.total > 5"
    do: [{create_task: {title: x}}]
""",
        "r.yaml:8:5: rule 'f': if: 'order' is not available here; available: contact, days, dict, event, inquiry, lead",
    ),
    "misspelt field": (
        """\
  - id: m
    on: lead.created
    do: [{create_task: {title: "{{ lead.colour }}"}}]
""",
        "r.yaml:8:25: rule 'm': do[0].create_task.title: lead has no field 'colour'; fields: attribution, channel,",
    ),
    "wait anchor not a date": (
        """\
  - id: w
    on: order.completed
    wait: order.total + 7d
    do: [{create_task: {title: x}}]
""",
        "r.yaml:8:5: rule 'w': wait: order has no date field 'total'; date fields: cancelled_at, completed_at,",
    ),
    "unknown key": (
        """\
  - id: u
    on: lead.created
    do: [{create_task: {title: x, asignee: anna}}]
""",
        "r.yaml:8:35: rule 'u': do[0].create_task.asignee: unknown key 'asignee'; "
        "allowed keys: assignee, due, note, title",
    ),
    "on and schedule": (
        """\
  - id: b
    on: lead.created
    schedule: "0 9 * * *"
    do: [{create_task: {title: x}}]
""",
        "r.yaml:6:5: rule 'b': give exactly one of `on` (event types) or `schedule` (cron)",
    ),
    "late": (
        """\
  - id: l
    on: lead.created
    late: {run_if_within: soon}
    do: [{create_task: {title: x}}]
""",
        "r.yaml:8:5: rule 'l': late: invalid duration 'soon'",
    ),
    "wait too long": (
        """\
  - id: w
    on: lead.created
    wait: 100000000000d
    do: [{create_task: {title: x}}]
""",
        "r.yaml:8:5: rule 'w': wait: duration '100000000000d' is too long: at most 36500d (100 years)",
    ),
    "throttle too long": (
        """\
  - id: t
    on: contact.created
    throttle: 1000000d
    do: [{create_task: {title: x}}]
""",
        "r.yaml:8:15: rule 't': throttle.for: duration '1000000d' is too long: at most 36500d (100 years)",
    ),
    "misspelt filter": (
        """\
  - id: f
    on: lead.created
    do:
      - create_task: {title: "Call {{ contact.name|capitalise }}"}
""",
        "r.yaml:9:23: rule 'f': do[0].create_task.title: unknown filter 'capitalise'; did you mean 'capitalize'?",
    ),
    "misspelt test": (
        """\
  - id: t
    on: lead.created
    if: contact.name is nonexistenttest
    do: [{create_task: {title: x}}]
""",
        "r.yaml:8:5: rule 't': if: unknown test 'nonexistenttest'",
    ),
    "misspelt filter in an if block": (
        """\
  - id: b
    on: lead.created
    do:
      - create_task: {title: "{% if contact.name %}{{ contact.name|titel }}{% endif %}"}
""",
        "r.yaml:9:23: rule 'b': do[0].create_task.title: unknown filter 'titel'; did you mean 'title'?",
    ),
    "unknown lead status": (
        """\
  - id: s
    on: lead.created
    do:
      - update_lead: {status: qualified}
""",
        "r.yaml:9:23: rule 's': do[0].update_lead.status: "
        "Input should be 'new', 'in_progress', 'won', 'lost' or 'closed'",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_mistake_is_reported_with_its_place(tmp_path: Path, case: str) -> None:
    body, expected = CASES[case]
    problems = _problems(tmp_path, body)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


def test_duplicate_ids_and_yaml_errors(tmp_path: Path) -> None:
    directory = _write(tmp_path, GOOD)
    (directory / "broken.yaml").write_text("rules:\n  - id: x\n    on: [\n")
    result = load_rules(directory, Templates())
    messages = [str(p) for p in result.problems]
    assert any("r.yaml:6:5: rule 'good': id: duplicate rule id; first defined at" in m for m in messages), messages
    assert any("broken.yaml:4:1: not valid YAML" in m for m in messages), messages
    assert [r.id for r in result.rules] == ["good"]


def test_a_rule_file_that_is_not_utf8_is_a_located_problem(tmp_path: Path) -> None:
    directory = _write(tmp_path, "")
    (directory / "latin1.yaml").write_bytes(b"rules:\n  - id: caf\xe9\n")
    result = load_rules(directory, Templates())
    expected = f"{directory}/latin1.yaml:2:12: not UTF-8 text; save the file as UTF-8"
    assert [str(p) for p in result.problems] == [expected]
    assert [r.id for r in result.rules] == ["good"]
    assert str(load_rules(directory / "r.yaml", Templates()).problems[0]).endswith("is a file, not a rules directory")


def test_a_key_written_twice_is_a_located_problem_not_the_last_one_winning(tmp_path: Path) -> None:
    directory = _write(tmp_path, "")
    (directory / "twice.yaml").write_text(
        "rules:\n  - id: twice\n    on: lead.created\n    on: lead.updated\n    do:\n      - create_task: {title: x}\n"
    )
    (directory / "flow.yaml").write_text("rules:\n  - {id: flow, on: lead.created, id: other, do: []}\n")
    result = load_rules(directory, Templates())
    assert sorted(str(p).replace(f"{directory}/", "") for p in result.problems) == [
        "flow.yaml:2:34: duplicate key 'id' (first at line 2); keep one",
        "twice.yaml:4:5: duplicate key 'on' (first at line 3); keep one",
    ]
    assert [r.id for r in result.rules] == ["good"]


def test_yaml_aliases_and_deep_nesting_are_located_problems_not_a_traceback(tmp_path: Path) -> None:
    """Found by an audit: an alias to itself raised RecursionError (the daemon did not start), and seven levels of
    ten aliases each ("billion laughs") took seconds to check, on the event loop at a reload."""
    directory = _write(tmp_path, "")
    (directory / "cycle.yaml").write_text("x: &a [*a]\nrules: []\n")
    laughs = ["a0: &a0 [lol]"] + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 8)]
    (directory / "laughs.yaml").write_text("\n".join(laughs) + "\nrules: []\n")
    (directory / "deep.yaml").write_text("rules: " + "[" * 20000 + "]" * 20000 + "\n")
    result = load_rules(directory, Templates())
    alias = "aliases (*name) are not allowed here; write the value out"
    assert sorted(str(p).replace(f"{directory}/", "") for p in result.problems) == [
        f"cycle.yaml:1:8: {alias}",
        "deep.yaml:1:1: nested too deeply; write a flatter file",
        f"laughs.yaml:2:10: {alias}",
    ]
    assert [r.id for r in result.rules] == ["good"]


def test_yaml_values_that_cannot_be_built_are_located_problems_not_a_traceback(tmp_path: Path) -> None:
    """Found by an audit: a value PyYAML reads but cannot build (February 30th, hour 25, `!!int xyz`) raised
    ValueError or TypeError, not a YAML error: `rules check` printed a traceback, the daemon did not start."""
    directory = _write(tmp_path, "")
    values = {
        "date": "2026-02-30",
        "hour": "2026-01-01 25:00:00",
        "int": "!!int xyz",
        "float": "!!float x",
        "timestamp": "!!timestamp x",
    }
    for name, value in values.items():
        (directory / f"{name}.yaml").write_text(
            f"rules:\n  - id: {name}\n    on: lead.created\n"
            f'    do: [{{webhook: {{url: "https://crm.example/x", body: {{since: {value}}}}}}}]\n'
        )
    result = load_rules(directory, Templates())
    quote = "write a valid one, or quote the value to keep it as text"
    assert sorted(str(p).replace(f"{directory}/", "") for p in result.problems) == [
        f"date.yaml:4:65: not a valid date or time (day is out of range for month); {quote}",
        f"float.yaml:4:65: not a valid number; {quote}",
        f"hour.yaml:4:65: not a valid date or time (hour must be in 0..23); {quote}",
        f"int.yaml:4:65: not a valid whole number; {quote}",
        f"timestamp.yaml:4:65: not a valid date or time; {quote}",
    ]
    assert [r.id for r in result.rules] == ["good"]


def _email_rule(tmp_path: Path, subject: bytes, body: bytes) -> tuple[Path, Path]:
    templates = tmp_path / "templates"
    (templates / "email").mkdir(parents=True)
    (templates / "email" / "hello.subject.txt").write_bytes(subject)
    (templates / "email" / "hello.txt").write_bytes(body)
    directory = _write(tmp_path, "")
    (directory / "mail.yaml").write_text(
        "rules:\n  - id: hello\n    on: lead.created\n    do:\n"
        '      - send_email: {template: hello, to: "{{ contact.email }}"}\n'
    )
    return directory, templates


def test_a_misspelt_filter_in_an_email_template_file_is_a_located_problem(tmp_path: Path) -> None:
    directory, templates = _email_rule(tmp_path, b"Hi\n", b"Hello,\n{{ contact.name|capitalise }}\n")
    result = load_rules(directory, Templates(templates))
    assert [str(p) for p in result.problems] == [
        f"{directory}/mail.yaml:5:22: rule 'hello': do[0].send_email.template: email/hello.txt: "
        "unknown filter 'capitalise'; did you mean 'capitalize'?"
    ]
    assert [r.id for r in result.rules] == ["good"]


def test_an_email_template_file_that_is_not_utf8_is_a_located_problem(tmp_path: Path) -> None:
    """Found by an audit: a template saved as cp1251 raised UnicodeDecodeError out of the rule loading."""
    body = "Hello,\nЗдравствуйте, {{ contact.name }}\n".encode("cp1251")  # noqa: RUF001
    directory, templates = _email_rule(tmp_path, b"Hi\n", body)
    result = load_rules(directory, Templates(templates))
    assert [str(p) for p in result.problems] == [
        f"{directory}/mail.yaml:5:22: rule 'hello': do[0].send_email.template: email/hello.txt:2: "
        "not UTF-8 text; save the file as UTF-8"
    ]
    assert [r.id for r in result.rules] == ["good"]


def test_rules_check_cli_reports_template_and_yaml_value_mistakes_at_their_place(tmp_path: Path) -> None:
    directory, templates = _email_rule(tmp_path, b"Hi\n", "Здравствуйте\n".encode("cp1251"))
    (directory / "typo.yaml").write_text(
        "rules:\n  - id: typo\n    on: lead.created\n"
        '    do: [{create_task: {title: "{{ contact.name|capitalise }}"}}]\n'
    )
    (directory / "date.yaml").write_text("rules: []\nsince: 2026-02-30\n")
    run = run_leadhub("rules", "check", str(directory), cwd=tmp_path, env={"LEADHUB_TEMPLATES_DIR": str(templates)})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert run.stdout.strip().splitlines() == [
        f"{directory}/date.yaml:2:8: not a valid date or time (day is out of range for month); write a valid one, "
        "or quote the value to keep it as text",
        f"{directory}/mail.yaml:5:22: rule 'hello': do[0].send_email.template: email/hello.txt:1: not UTF-8 text; "
        "save the file as UTF-8",
        f"{directory}/typo.yaml:4:25: rule 'typo': do[0].create_task.title: unknown filter 'capitalise'; "
        "did you mean 'capitalize'?",
    ]


def test_rules_check_cli_prints_problems_and_exits_1(tmp_path: Path) -> None:
    directory = _write(tmp_path, CASES["unknown action"][0])
    run = run_leadhub("rules", "check", str(directory), cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert run.stdout.strip().splitlines() == [
        f"{directory}/r.yaml:9:9: rule 'a': do[0]: unknown action type 'send_mail'; valid types: create_task, "
        "notify_telegram, send_email, update_lead, webhook"
    ]
    ok = run_leadhub("rules", "check", str(EXAMPLES), cwd=tmp_path)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stdout + ok.stderr


def test_hidden_files_are_not_rule_files(tmp_path: Path) -> None:
    """Found by an audit: Emacs's lock `.#r.yaml` (a symlink to nowhere) failed the check with `cannot read`."""
    directory = _write(tmp_path, "")
    (directory / ".#r.yaml").symlink_to("admin@host.1234:1700000000")
    (directory / "._r.yaml").write_bytes(b"\x00\x05\x16\x07 Mac OS X")  # macOS's metadata beside a copied file
    run = run_leadhub("rules", "check", str(directory), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "1 rules in 1 files: OK"


def test_rules_check_without_a_rules_directory_says_where_it_looked_and_how_to_name_one(tmp_path: Path) -> None:
    """It printed `rules:1:1: rules directory not found`, as if line 1 of a file were wrong."""
    run = run_leadhub("rules", "check", cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip() == "leadhub: rules: rules directory not found (give a directory or set LEADHUB_RULES_DIR)"
    (tmp_path / "r.yaml").write_text("rules: []\n")
    a_file = run_leadhub("rules", "check", "r.yaml", cwd=tmp_path)
    assert a_file.returncode == 2 and "leadhub: r.yaml: is a file, not a rules directory" in a_file.stderr


def test_rules_test_cli_dry_run_renders_the_survey(tmp_path: Path) -> None:
    event = {
        "type": "order.completed",
        "data": {"order_id": "o1", "contact_id": "c1"},
        "contact": {"id": "c1", "name": "Ivan {{ 7*7 }}", "email": "ivan@example.com"},
        "order": {"id": "o1", "number": "1001", "status": "completed", "completed_at": "2026-11-20T10:00:00+00:00"},
        "lead": {"id": "l1", "owner": "anna", "status": "new", "tags": [], "channel": "shop"},
    }
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    env = {"LEADHUB_PUBLIC_URL": "https://shop.example"}
    run = run_leadhub("rules", "test", str(path), "--rules", str(EXAMPLES), cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "rule 'post-sale-survey': matched; due 2026-11-27T10:00:00+00:00" in out
    assert "subject: How was your order #1001?" in out
    assert "https://shop.example/s/" in out and "https://shop.example/u/" in out
    assert "Hello Ivan {{ 7*7 }}," in out, "inbound data must never be evaluated as a template"
    assert "rule 'low-score-task': not matched: listens to feedback.received" in out


def test_without_a_public_url_links_point_at_the_http_port_the_daemon_listens_on(tmp_path: Path) -> None:
    """They pointed at http://127.0.0.1:8080 whatever `http_port` said; a wildcard host is reached on loopback."""
    event = {
        "type": "order.completed",
        "data": {"order_id": "o1", "contact_id": "c1"},
        "contact": {"id": "c1", "name": "Ivan", "email": "ivan@example.com"},
        "order": {"id": "o1", "number": "1001", "status": "completed", "completed_at": "2026-11-20T10:00:00+00:00"},
    }
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    for host, base in (("127.0.0.1", "http://127.0.0.1:18081"), ("0.0.0.0", "http://127.0.0.1:18081")):
        env = {"LEADHUB_HTTP_HOST": host, "LEADHUB_HTTP_PORT": "18081"}
        run = run_leadhub("rules", "test", str(path), "--rules", str(EXAMPLES), cwd=tmp_path, env=env)
        assert run.returncode == 0, run.stderr
        assert f"{base}/s/" in run.stdout and f"{base}/u/" in run.stdout, run.stdout
        assert ":8080" not in run.stdout


def test_rules_test_gives_the_objects_of_an_event_file_every_field_the_daemon_gives_them(tmp_path: Path) -> None:
    """An event file holds a few fields of each object; the others were undefined, so the shipped rules, which
    run in the daemon, failed the dry run (`'Record object' has no attribute 'owner'`). They are none now, or the
    column's default (a lead's tags are []), as in a stored row nothing set them in."""
    from leadhub.triggers.dryrun import read_event
    from leadhub.triggers.events import OBJECT_FIELDS

    event = {
        "type": "lead.created",
        "data": {"lead_id": "l1", "tags": ["callback_requested"]},  # what the callback rule reads, as intake writes
        "contact": {"id": "c1", "name": "Ivan"},
        "lead": {"id": "l1", "status": "new", "tags": ["callback_requested"]},
    }
    (tmp_path / "e.json").write_text(json.dumps(event))
    run = run_leadhub("rules", "test", "e.json", "--rules", str(EXAMPLES), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "error" not in run.stdout, run.stdout
    assert "matched" in run.stdout and "do[0] create_task:" in run.stdout
    assert (
        '    body: {"lead_id": "l1", "status": "new", "email": ""}' in run.stdout
    )  # a missing value prints as nothing

    (tmp_path / "e.json").write_text(json.dumps({**event, "lead": {"id": "l1"}}))
    _, objects = read_event(tmp_path / "e.json")
    assert set(objects["lead"]) == OBJECT_FIELDS["lead"] and set(objects["contact"]) == OBJECT_FIELDS["contact"]
    assert objects["lead"]["owner"] is None and objects["lead"]["tags"] == [] and objects["lead"]["status"] == "new"
    assert objects["contact"]["unsubscribed"] is False and objects["contact"]["orders_count"] == 0
    assert objects["inquiry"] is None


def test_published_json_schema_is_in_sync() -> None:
    """docs/rules.schema.json is generated: `python -m leadhub.triggers.jsonschema > docs/rules.schema.json`."""
    assert (REPO / "docs" / "rules.schema.json").read_text() == render()


def _schema_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft202012Validator(json.loads(render()))


def _on_key(rules: list[dict[Any, Any]]) -> None:
    """YAML 1.1 reads the key `on` as true."""
    for rule in rules:
        if True in rule:
            rule["on"] = rule.pop(True)


def test_examples_validate_against_the_json_schema() -> None:
    validator = _schema_validator()
    for path in sorted(EXAMPLES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        _on_key(data["rules"])
        errors = [e.message for e in validator.iter_errors(data)]
        assert errors == [], (path, errors)
    bad = {"rules": [{"id": "x", "on": "lead.created", "do": [{"send_mail": {}}]}]}
    assert list(validator.iter_errors(bad))


def _documented_rule_files() -> list[tuple[str, dict[str, Any]]]:
    """Each YAML block of docs/rules.md as a rule file, and one more for each commented alternative in it
    (`# for_each: contact`) put in place of its key. A block holding only part of a rule gets an id and a `do`."""
    text = (REPO / "docs" / "rules.md").read_text()
    keys = json.loads(render())["$defs"]["Rule"]["properties"]
    files = []
    for block in re.findall(r"^```yaml\n(.*?)^```", text, flags=re.M | re.S):
        data = yaml.safe_load(block)
        if isinstance(data, list):
            data = {"rules": data}
        elif "rules" not in data and "business_hours" not in data:
            data = {"rules": [data]}
        _on_key(data["rules"])
        for rule in data["rules"]:
            rule.setdefault("id", "documented")
            rule.setdefault("do", [{"create_task": {"title": "x"}}])
        files.append((block, data))
        for key, value in re.findall(r"^\s*# (\w+): (.*)$", block, flags=re.M):
            if key in keys:
                (rule,) = data["rules"]
                files.append((f"# {key}: {value}", {**data, "rules": [{**rule, **yaml.safe_load(f"{key}: {value}")}]}))
    return files


def test_the_rules_in_docs_validate_against_the_json_schema() -> None:
    """The schema allowed only a mapping for `for_each`: editors flagged the documented `for_each: contact`,
    which `rules check` accepts."""
    validator = _schema_validator()
    files = _documented_rule_files()
    for snippet, data in files:
        errors = [e.message for e in validator.iter_errors(data)]
        assert errors == [], (snippet, errors)
    assert any(rule.get("for_each") == "contact" for _, data in files for rule in data["rules"])
    rule = {"id": "x", "schedule": "0 9 * * *", "do": [{"create_task": {"title": "x"}}]}
    assert list(validator.iter_errors({"rules": [{**rule, "for_each": {"contact": None}}]})) == []  # `contact:`
    assert list(validator.iter_errors({"rules": [{**rule, "for_each": "lead"}]}))


@pytest.mark.parametrize(
    ("when", "per", "expected"),
    [
        ('schedule: "0 9 * * *"', "throttle: 7d", "throttle per contact needs a rule whose events have a contact"),
        ("on: lead.created", "throttle: {per: order, for: 30d}", "throttle per order needs a rule whose events have"),
    ],
)
def test_a_throttle_on_an_object_the_events_do_not_have_is_a_problem(
    tmp_path: Path, when: str, per: str, expected: str
) -> None:
    """It would never throttle: the key is made from an object that is always `none` for this rule."""
    body = f"  - id: t\n    {when}\n    {per}\n    do: [{{create_task: {{title: x}}}}]\n"
    (problem,) = _problems(tmp_path, body)
    assert problem.startswith(f"r.yaml:8:5: rule 't': throttle: {expected}"), problem
    fine = "  - id: t\n    schedule: '0 9 * * *'\n    for_each: contact\n    throttle: 7d\n"
    fine += "    do: [{create_task: {title: x}}]\n"
    loaded = load_rules(_write(tmp_path, fine), Templates())
    assert loaded.problems == [] and [r.id for r in loaded.rules] == ["good", "t"]


def test_rules_test_says_when_late_would_cancel_a_past_due_action(tmp_path: Path) -> None:
    """The survey of an order completed long ago is due in the past: `late: {run_if_within: 2d}` cancels it."""
    from datetime import UTC, datetime, timedelta

    from leadhub.triggers.dryrun import dry_run, format_outcomes, read_event
    from leadhub.triggers.engine import RuleIndex

    def outcome(completed: datetime) -> str:
        event = {
            "type": "order.completed",
            "data": {"order_id": "o1", "contact_id": "c1"},
            "contact": {"id": "c1", "name": "Ivan", "email": "ivan@example.com"},
            "order": {"id": "o1", "number": "1001", "status": "completed", "completed_at": completed.isoformat()},
        }
        (tmp_path / "event.json").write_text(json.dumps(event))
        rules = RuleIndex(load_rules(EXAMPLES, Templates()).rules)
        return format_outcomes(dry_run(rules, *read_event(tmp_path / "event.json"), None))

    now = datetime.now(UTC)
    old = outcome(now - timedelta(days=30))
    assert "  not run: the due time is past, the scheduler would cancel it as late by 23 days" in old
    assert "(late: run_if_within 2d)" in old
    assert "not run" not in outcome(now - timedelta(days=6))  # due tomorrow
    assert "not run" not in outcome(now - timedelta(days=8))  # a day late: within the 2 days


def test_rules_test_counts_a_relative_wait_from_the_events_occurred_at(tmp_path: Path) -> None:
    """As the daemon does: an event that happened 3 hours ago with `wait: 2h` was due an hour ago."""
    from datetime import UTC, datetime, timedelta

    from leadhub.triggers.dryrun import dry_run, read_event
    from leadhub.triggers.engine import RuleIndex

    directory = tmp_path / "rules"
    directory.mkdir()
    (directory / "r.yaml").write_text(
        "rules:\n  - id: call\n    on: lead.created\n    wait: 2h\n    late: skip\n"
        "    do:\n      - create_task: {title: call}\n"
    )
    happened = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    event = {"type": "lead.created", "occurred_at": happened.isoformat(), "lead": {"id": "l1"}}
    (tmp_path / "event.json").write_text(json.dumps(event))
    rules = RuleIndex(load_rules(directory, Templates()).rules)
    (outcome,) = dry_run(rules, *read_event(tmp_path / "event.json"), None)
    assert outcome.due_at == happened + timedelta(hours=2)
    assert outcome.late is not None and outcome.late.startswith("late by 1:00:")


def test_rules_test_prints_a_webhook_url_without_its_credentials(tmp_path: Path) -> None:
    """`rules test` printed the rendered webhook URL in full: the password in its user info and the token in its
    query went into whatever the output was pasted into. They are `***` now; other values are shown."""
    from leadhub.triggers.dryrun import dry_run, format_outcomes, read_event
    from leadhub.triggers.engine import RuleIndex

    url = "https://crm:hunter2@crm.example/hook?api_key=K3Y&name={{ contact.name }}&access_token=T0K"
    directory = _write(tmp_path, f'  - id: crm\n    on: lead.created\n    do:\n      - webhook: {{url: "{url}"}}\n')
    event = {"type": "lead.created", "contact": {"id": "c1", "name": "Ivan"}, "lead": {"id": "l1"}}
    (tmp_path / "event.json").write_text(json.dumps(event))
    rules = RuleIndex(load_rules(directory, Templates()).rules)
    out = format_outcomes(dry_run(rules, *read_event(tmp_path / "event.json"), None))
    assert "    url: https://crm:***@crm.example/hook?api_key=***&name=Ivan&access_token=***" in out, out
    assert "hunter2" not in out and "K3Y" not in out and "T0K" not in out, out


def test_rules_test_with_an_event_file_nested_too_deep_is_exit_2_not_a_traceback(tmp_path: Path) -> None:
    """json.loads raises RecursionError (not a ValueError) past Python's recursion limit."""
    deep = '{"type": "order.completed", "data": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    (tmp_path / "deep.json").write_text(deep)
    run = run_leadhub("rules", "test", "deep.json", "--rules", str(EXAMPLES), cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "RecursionError" not in run.stderr
    assert "deep.json: cannot read the event: nested too deeply" in run.stderr


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("occurred_at", "20.11.2026 10:00", "occurred_at must be an ISO 8601 date and time"),
        ("occurred_at", 1764000000, "occurred_at must be an ISO 8601 date and time"),
        ("data", ["order_id", "o1"], "data must be a JSON object"),
    ],
)
def test_rules_test_refuses_event_file_values_the_daemon_would_not_read(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    """An `occurred_at` the daemon cannot read was silently ignored (a relative wait counted from now instead,
    while `event.occurred_at` printed the text), and a `data` that is no object reached the rules as it was,
    where the daemon reads `{}`: the dry run answered for an event the daemon never sees."""
    from leadhub.triggers.dryrun import EventFileError, read_event

    (tmp_path / "e.json").write_text(json.dumps({"type": "order.completed", field: value}))
    with pytest.raises(EventFileError, match=message):
        read_event(tmp_path / "e.json")


def test_rules_test_says_when_the_event_has_no_object_to_throttle_by(tmp_path: Path) -> None:
    """An order first heard of through a refund has no lead: `throttle: {per: lead}` cannot apply, and says so."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "rules:\n  - id: t\n    on: order.refunded\n    throttle: {per: lead, for: 1d}\n"
        "    do: [{create_task: {title: x}}]\n"
    )
    event = {"type": "order.refunded", "data": {"order_id": "o1"}, "order": {"id": "o1", "status": "refunded"}}
    (tmp_path / "e.json").write_text(json.dumps(event))
    run = run_leadhub("rules", "test", "e.json", "--rules", str(rules), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "\n  not throttled: this event has no lead (throttle per lead)\n" in run.stdout, run.stdout


def test_rules_test_reads_the_event_files_dates_in_utc_as_the_daemon_does(tmp_path: Path) -> None:
    """The daemon's dates are UTC; one written with an offset in the event file kept it, so a template printing the
    day (`order.completed_at.day`, `now.hour`-style checks on it) showed the local day the daemon would not."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "rules:\n  - id: d\n    on: order.completed\n"
        '    do: [{create_task: {title: "{{ order.completed_at.day }} {{ order.completed_at.hour }}"}}]\n'
    )
    event = {"type": "order.completed", "data": {"order_id": "o1"}}
    event["order"] = {"id": "o1", "status": "completed", "completed_at": "2026-11-20T01:00:00+03:00"}
    (tmp_path / "e.json").write_text(json.dumps(event))
    run = run_leadhub("rules", "test", "e.json", "--rules", str(rules), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "    title: 19 22\n" in run.stdout, run.stdout
