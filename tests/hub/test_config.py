"""Configuration errors name the variable or file line and the problem, never a traceback or a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from leadhub.connectors.registry import CONNECTOR_TYPES
from leadhub.hub.config import ConfigError, Settings, config_from_dict, load_config, unknown_environment
from leadhub.hub.logging import _redact as redact
from leadhub.hub.logging import redact_text
from tests.helpers import run_leadhub

BAD_ENV = {
    "LEADHUB_DATABASE_URL": ("nonsense", "database_url: not a database URL; write e.g. postgresql+asyncpg://"),
    "LEADHUB_NATS_URL": ("nats://n1:4222,bogus://u:hunter2@n2", "nats_url: server 2 of 2 is not a NATS URL"),
    # a token or password holding '/' (openssl rand -base64): nats-py took the host to be its start and retried forever,
    # and the log showed the token, its user info cut at the '/'
    "LEADHUB_NATS_URL=slash": (
        "nats://n1:4222,tls://tok/hunter2@n2:4222",
        "nats_url: server 2 of 2 has a token or password holding '/', '?' or '#', which nats-py cannot read",
    ),
    "LEADHUB_NATS_URL=question": ("nats://u:pw?hunter2@n1", "nats_url: the URL has a token or password holding '/',"),
    "LEADHUB_SMTP_URL": ("smtp://u:hunter2@host:notaport", "smtp_url: not an SMTP URL; write smtp://user:pass@"),
    "LEADHUB_PUBLIC_URL": ("leads.example.com", "public_url: not an http(s) URL"),
    # aiosmtplib refuses both at every send: each e-mail failed for good, as "the SMTP envelope could not be written"
    "LEADHUB_SMTP_URL=smtps+starttls": (
        "smtps://u:hunter2@host:465?starttls=1",
        "smtp_url: smtps:// is TLS from the start and starttls=1 upgrades a plain smtp:// connection; give one",
    ),
    # a Message-ID domain that is not a domain: the recorded ids would match no reply
    "LEADHUB_SMTP_URL=ses_domain": (
        "smtp://u:hunter2@host:587?ses_domain=<amazonses>",
        "smtp_url: ses_domain='<amazonses>' is not a domain; give the one Amazon SES writes in its Message-IDs",
    ),
    "LEADHUB_API_TOKEN": ("", "api_token: is empty; set a token, or unset LEADHUB_API_TOKEN"),
    "LEADHUB_WORKERS": ("many", "workers: 'many' is not a number of processes"),
    "LEADHUB_LEAD_WINDOW": ("100000000000d", "lead_window: duration '100000000000d' is too long: at most 36500d"),
}


@pytest.mark.parametrize("name", BAD_ENV)
def test_bad_environment_values_are_named_without_the_secret(name: str) -> None:
    value, expected = BAD_ENV[name]
    name = name.partition("=")[0]  # a second case of one variable is written NAME=case
    with pytest.raises(ConfigError) as caught:
        config_from_dict({}, env={name: value})
    [problem] = caught.value.problems
    assert problem.startswith(f"environment {name}: {expected}"), problem
    assert "hunter2" not in problem and "Value error" not in problem


def test_the_placeholder_api_token_is_refused_and_a_short_one_is_taken() -> None:
    """`change-me` was docker-compose.yml's default: every reader of the file knew it. Short tokens stay usable
    (warned of at start) so existing setups keep working."""
    with pytest.raises(ConfigError) as caught:
        config_from_dict({}, env={"LEADHUB_API_TOKEN": "change-me"})
    [problem] = caught.value.problems
    assert problem.startswith(
        "environment LEADHUB_API_TOKEN: api_token: is the placeholder 'change-me'; set a long random value"
    ), problem
    assert config_from_dict({}, env={"LEADHUB_API_TOKEN": "t0ken"}).settings.api_token is not None


def test_database_urls_need_an_async_driver_of_a_supported_database() -> None:
    for url, expected in [
        ("mysql://u:hunter2@h/db", "database 'mysql' is not supported"),
        ("postgresql://u:hunter2@h/db", "driver 'postgresql' is not an asyncio driver"),
    ]:
        with pytest.raises(ConfigError, match=expected) as caught:
            config_from_dict({}, env={"LEADHUB_DATABASE_URL": url})
        assert "hunter2" not in str(caught.value)
    good = {
        "LEADHUB_DATABASE_URL": "postgresql+asyncpg://u:p@h/db",
        "LEADHUB_NATS_URL": "nats://n1:4222, n2:4222",
        "LEADHUB_SMTP_URL": "smtps://u:p@mail.example.com",
        "LEADHUB_PUBLIC_URL": "https://leads.example.com",
    }
    assert config_from_dict({}, env=good).settings.nats_url == "nats://n1:4222, n2:4222"


def test_a_postgresql_url_with_a_query_key_asyncpg_does_not_take_is_refused() -> None:
    """SQLAlchemy hands each query key to asyncpg.connect(): libpq's (`sslmode`, common in hosted PostgreSQL URLs)
    passed the check, then every connect failed with a TypeError and the daemon retried its migration forever."""
    base = "postgresql+asyncpg://u:hunter2@h/db"
    for query, expected in [
        ("?sslmode=require", "sslmode is libpq's; asyncpg takes ssl= with the same modes (e.g. ?ssl=require)"),
        ("?ssl=require&sslrootcert=/ca.pem", "sslrootcert is libpq's; asyncpg reads it from the environment: set "),
        ("?connect_timeout=10", "connect_timeout is libpq's; asyncpg's connect timeout cannot be set in the URL"),
        ("?statement_cache_size=0", "statement_cache_size is asyncpg's but must be a number, and a URL gives text"),
        ("?application_name=leadhub", "'application_name' is not a parameter asyncpg takes in the URL; it takes "),
    ]:
        with pytest.raises(ConfigError) as caught:
            config_from_dict({}, env={"LEADHUB_DATABASE_URL": base + query})
        [problem] = caught.value.problems
        assert problem.startswith(f"environment LEADHUB_DATABASE_URL: database_url: {expected}"), problem
        assert "hunter2" not in problem
    for query in ["?ssl=require", "?host=/run/postgresql", "?prepared_statement_cache_size=0&command_timeout=30", ""]:
        assert config_from_dict({}, env={"LEADHUB_DATABASE_URL": base + query}).settings.database_url == base + query


def test_commands_refuse_a_postgresql_url_asyncpg_cannot_use_in_one_line(tmp_path: Path) -> None:
    """`config check` said OK, `db status`, `db upgrade` and `dead list` printed a traceback of ~300 lines."""
    env = {"LEADHUB_DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:1/db?sslmode=require"}
    for command in [("config", "check"), ("db", "status"), ("db", "upgrade"), ("dead", "list")]:
        run = run_leadhub(*command, cwd=tmp_path, env=env)
        assert run.returncode == 2, (command, run.stdout, run.stderr)
        assert run.stderr.splitlines() == [
            "leadhub: invalid configuration:",
            "  environment LEADHUB_DATABASE_URL: database_url: sslmode is libpq's; asyncpg takes ssl= with the same "
            "modes (e.g. ?ssl=require)",
        ], (command, run.stderr)


def test_a_connector_without_name_or_type_says_so(tmp_path: Path) -> None:
    path = tmp_path / "leadhub.yaml"
    path.write_text("connectors:\n  - name: site-form\n  - token: x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [
        f"{path}:2: connectors[0]: type required (each connector has a name and a type)",
        f"{path}:3: connectors[1]: name and type required (each connector has a name and a type)",
    ]


def test_an_unknown_key_in_a_nested_section_lists_that_sections_keys(tmp_path: Path) -> None:
    """An imap connector's `oauth2.token_fle` listed the connector's own keys (host, port, ...) as the allowed ones."""
    path = tmp_path / "leadhub.yaml"
    path.write_text(
        "connectors:\n  - name: mail\n    type: imap\n    host: imap.example.com\n    username: u\n"
        "    oauth2:\n      token_fle: /run/token\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [
        f"{path}:7: connectors[0].oauth2.token_fle: unknown key 'token_fle'; "
        "allowed keys: command_timeout, mechanism, refresh_interval, token_command, token_file"
    ]


def test_a_config_file_that_is_not_utf8_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "leadhub.yaml"
    path.write_bytes(b"http_port: 8080\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [f"{path}:2:6: not UTF-8 text; save the file as UTF-8"]


def test_log_lines_hide_passwords_in_urls() -> None:
    event = {"event": "queue connected", "url": "nats://leadhub:hunter2@10.0.0.5:4222", "hint": "smtp://u:p%40ss@h"}
    redacted = redact(None, "info", event)
    assert redacted["url"] == "nats://leadhub:***@10.0.0.5:4222"
    assert redacted["hint"] == "smtp://u:***@h"
    assert (
        redact_text("POST https://crm.example/hook?api_key=K3Y&lead=42&access_token=T0K&sig=S1G failed")
        == "POST https://crm.example/hook?api_key=***&lead=42&access_token=***&sig=*** failed"
    )
    assert (
        redact_text("nats://10.0.0.5:4222 and http://example.com/a:b@c")
        == "nats://10.0.0.5:4222 and http://example.com/a:b@c"
    )


def test_a_setting_written_twice_in_the_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "leadhub.yaml"
    path.write_text("http_port: 8081\nconnectors:\n  - name: a\n    type: form\n    token: x\n    token: y\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [f"{path}:6:5: duplicate key 'token' (first at line 5); keep one"]


def test_a_yaml_alias_in_the_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "leadhub.yaml"
    path.write_text("x: &a [*a]\nhttp_port: 8081\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [f"{path}:1:8: aliases (*name) are not allowed here; write the value out"]


def test_a_value_yaml_reads_but_cannot_build_is_a_located_problem_not_a_traceback(tmp_path: Path) -> None:
    """Found by an audit: `!!int xyz` (or February 30th) raised ValueError out of the YAML reader, and
    `leadhub config check` printed a traceback; the value itself, perhaps a secret, is not echoed."""
    path = tmp_path / "leadhub.yaml"
    path.write_text("http_port: 8081\nconnectors:\n  - {name: a, type: form, token: !!int s3cret}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    expected = f"{path}:3:34: not a valid whole number; write a valid one, or quote the value to keep it as text"
    assert caught.value.problems == [expected]
    run = run_leadhub("config", "check", cwd=tmp_path)
    located = expected.replace(str(path), "leadhub.yaml")
    assert run.returncode == 2 and located in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert "s3cret" not in run.stdout + run.stderr


def test_a_yes_no_value_where_a_number_is_meant_is_refused(tmp_path: Path) -> None:
    """YAML reads `true` (also yes, on) as a boolean, which Python takes as the number 1: `workers: true` ran one."""
    path = tmp_path / "leadhub.yaml"
    path.write_text(
        "workers: true\nshutdown_timeout: on\nemail_folding: yes\n"
        "connectors:\n  - name: site-form\n    type: form\n    max_body: yes\n    trust_forwarded_for: true\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    because = "is a yes/no value, not a number (YAML reads an unquoted true, yes or on as one); write a number"
    assert caught.value.problems == [
        f"{path}:2: shutdown_timeout: true {because}",
        f"{path}:1: workers: true {because}",
    ]
    path.write_text("connectors:\n  - name: site-form\n    type: form\n    max_body: yes\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [f"{path}:4: connectors[0].max_body: true {because}"]


def test_every_webhook_refuses_a_body_limit_that_would_answer_413_to_nearly_every_request() -> None:
    with_a_limit = {name: kind for name, kind in CONNECTOR_TYPES.items() if "max_body" in kind.Config.model_fields}
    assert {"form", "tilda", "shopify", "telephony", "order"} <= set(with_a_limit)
    for name, kind in with_a_limit.items():
        with pytest.raises(ValidationError) as caught:
            kind.Config.model_validate({"name": "x", "type": name, "max_body": 0})
        [problem] = [e["msg"] for e in caught.value.errors() if e["loc"] == ("max_body",)]
        assert "0 bytes would answer nearly every request 413" in problem, name
        assert kind.Config.model_fields["max_body"].default >= 1024, name


def test_text_written_as_a_number_is_refused_saying_to_quote_it_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "leadhub.yaml"
    path.write_text(
        "api_token: 738216\nconnectors:\n  - name: tilda\n    type: tilda\n    secrets: [new-token, 0123]\n"
        "  - name: site-form\n    type: form\n    token: off\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [
        f"{path}:1: api_token: Input should be a valid string; YAML reads unquoted digits as a number: put the text "
        'in quotes ("...")'
    ]
    path.write_text(path.read_text().removeprefix("api_token: 738216\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [
        f"{path}:4: connectors[0].secrets[1]: Input should be a valid string; YAML reads unquoted digits as a number: "
        'put the text in quotes ("...")',
        f"{path}:7: connectors[1].token: Input should be a valid string; YAML reads unquoted true, false, yes, no, "
        'on or off as a yes/no value: put the text in quotes ("...")',
    ]
    said = str(caught.value).replace(str(path), "FILE")  # the path may hold digits: pytest numbers its directories
    assert "123" not in said and "83" not in said  # YAML 1.1 reads 0123 as octal 83


def test_a_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as caught:
        config_from_dict({}, env={"LEADHUB_DATA_DIR": str(tmp_path / "file")})
    assert caught.value.problems == [
        f"environment LEADHUB_DATA_DIR: data_dir: {tmp_path / 'file'} is a file; give a directory (created if missing)"
    ]
    with pytest.raises(ConfigError) as caught:  # was `cannot start: [Errno 17] File exists` once the daemon ran
        config_from_dict({}, env={"LEADHUB_DATA_DIR": str(tmp_path / "file" / "data")})
    assert caught.value.problems == [
        f"environment LEADHUB_DATA_DIR: data_dir: {tmp_path / 'file'} is a file; give a directory (created if missing)"
    ]


def test_a_setting_checked_against_another_is_named_where_it_was_given(tmp_path: Path) -> None:
    """Such checks named no setting: `/dev/null: : stream_replicas=3 needs a NATS cluster` for LEADHUB_STREAM_REPLICAS,
    the config file and an empty key, and the file without its line when the file set it."""
    with pytest.raises(ConfigError) as caught:
        load_config(Path("/dev/null"), env={"LEADHUB_STREAM_REPLICAS": "3"})
    assert caught.value.problems == [
        "environment LEADHUB_STREAM_REPLICAS: stream_replicas: 3 needs a NATS cluster: set LEADHUB_NATS_URL "
        "(the embedded NATS is one server and keeps one copy)"
    ]
    assert load_config(Path("/dev/null"), env={"LEADHUB_STREAM_REPLICAS": "3", "LEADHUB_NATS_URL": "nats://n1:4222"})
    path = tmp_path / "leadhub.yaml"
    path.write_text("workers: 2\nroles: pipeline,relay\nworker_roles: http\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [
        f"{path}:3: worker_roles: has http but roles does not: the processes share one port, so the primary would "
        "answer a share of the webhooks without taking them; add http to roles or remove it from worker_roles"
    ]
    with pytest.raises(ConfigError) as caught:
        load_config(Path("/dev/null"), env={"LEADHUB_STREAM_REPLICAS": "3", "LEADHUB_NATS_URL": "bogus://n1"})
    assert [p.split(":")[0] for p in caught.value.problems] == ["environment LEADHUB_NATS_URL"], "only the URL"


def test_misspelt_environment_variables_are_found_with_the_likely_name() -> None:
    env = {
        "LEADHUB_HTTP_PROT": "9000",
        "leadhub_databse_url": "x",
        "LEADHUB_SOMETHING_ELSE": "1",
        "LEADHUB_HTTP_PORT": "9000",
        "LEADHUB_TEST_DATABASE_URL": "postgresql+asyncpg://x/y",
        "PATH": "/bin",
    }
    assert unknown_environment(env) == [
        ("LEADHUB_HTTP_PROT", "LEADHUB_HTTP_PORT"),
        ("LEADHUB_SOMETHING_ELSE", None),
        ("leadhub_databse_url", "LEADHUB_DATABASE_URL"),
    ]


@pytest.mark.parametrize("command", [["db", "upgrade"], ["dead", "list"], ["rules", "trace", "r"]])
def test_cli_commands_name_a_database_they_cannot_reach_without_a_traceback(tmp_path: Path, command: list[str]) -> None:
    env = {"LEADHUB_DATABASE_URL": "postgresql+asyncpg://leadhub:hunter2@127.0.0.1:1/db", "LEADHUB_HTTP_PROT": "1"}
    run = run_leadhub(*command, cwd=tmp_path, env=env)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and "hunter2" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "leadhub: cannot use the database postgresql+asyncpg://leadhub:***@127.0.0.1:1/db: "
        "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    )
    if command[0] != "rules":  # `rules` commands read settings without the daemon's logging
        assert "unknown LEADHUB_ variable ignored" in run.stderr and "did_you_mean=LEADHUB_HTTP_PORT" in run.stderr


def test_config_check_says_what_the_configuration_adds_up_to_without_secrets_or_side_effects(tmp_path: Path) -> None:
    (tmp_path / "leadhub.yaml").write_text(
        "connectors:\n"
        "  - {name: site-form, type: form, token: form-Secret-1}\n"
        "  - {name: support, type: imap, host: imap.example.com, username: u, password: imap-Secret-2}\n"
    )
    env = {
        "LEADHUB_DATABASE_URL": "postgresql+asyncpg://leadhub:db-Secret-3@db.internal:5432/leadhub",
        "LEADHUB_SMTP_URL": "smtp://mailer:smtp-Secret-4@mail.example.com:587",
        "LEADHUB_API_TOKEN": "api-Secret-5",
        "LEADHUB_HTTP_PORT": "9090",
    }
    run = run_leadhub("config", "check", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == (
        "configuration OK: leadhub.yaml "
        "(overridden by LEADHUB_API_TOKEN, LEADHUB_DATABASE_URL, LEADHUB_HTTP_PORT, LEADHUB_SMTP_URL)"
    )
    assert "  database    postgresql+asyncpg://leadhub:***@db.internal:5432/leadhub" in lines
    assert "  queue       embedded NATS under data/nats" in lines
    assert "  smtp        smtp://mailer:***@mail.example.com:587" in lines and "  api         bearer token set" in lines
    assert lines[3].startswith("  http        127.0.0.1:9090, roles http, pipeline, relay, triggers")
    assert "  links       http://127.0.0.1:9090 (no LEADHUB_PUBLIC_URL: customers cannot open it)" in lines
    assert lines[-3:] == [
        "  connectors  2",
        "    site-form  form  POST /hooks/site-form",
        "    support    imap  pulls on its own schedule",
    ]
    assert "Secret" not in run.stdout + run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leadhub.yaml"]  # nothing started, nothing created
    assert "  rules       rules: not there yet (its rules load once it is created)" in lines

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ok.yaml").write_text("rules:\n  - {id: a, on: order.completed, do: [{create_task: {title: t}}]}\n")
    fine = run_leadhub("config", "check", cwd=tmp_path, env=env)
    assert fine.returncode == 0 and "  rules       rules: 1 rules in 1 files" in fine.stdout.splitlines()
    (rules / "bad.yaml").write_text("rules:\n  - {id: b, on: order.completed, do: [{send_mail: {}}]}\n")
    broken = run_leadhub("config", "check", cwd=tmp_path, env=env)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "rules: 1 rules in 2 files; 1 problem, skipped at load (`leadhub rules check` lists them)" in broken.stdout

    (tmp_path / "leadhub.yaml").write_text("connectors:\n  - {name: site-form, type: from}\n")
    invalid = run_leadhub("config", "check", cwd=tmp_path)
    assert invalid.returncode == 2 and "leadhub.yaml:2: connectors[0].type" in invalid.stderr, invalid.stderr


def test_a_password_in_the_database_urls_query_is_not_shown(tmp_path: Path) -> None:
    """asyncpg reads `?password=` too; only the user info's password was hidden, the query's printed as given."""
    env = {"LEADHUB_DATABASE_URL": "postgresql+asyncpg://leadhub:hunter2@127.0.0.1:1/db?password=hunter3&ssl=prefer"}
    status = run_leadhub("db", "status", cwd=tmp_path, env=env)
    assert status.returncode == 1 and "Traceback" not in status.stderr, status.stderr
    backup = run_leadhub("db", "backup", str(tmp_path / "b.db"), cwd=tmp_path, env=env)
    assert backup.returncode == 2 and "is not SQLite" in backup.stderr, backup.stderr
    for said in (status.stderr, backup.stderr):
        assert "hunter" not in said, said
        assert "postgresql+asyncpg://leadhub:***@127.0.0.1:1/db?password=***&ssl=prefer" in said, said


def test_config_check_hides_a_database_password_holding_a_slash(tmp_path: Path) -> None:
    """SQLAlchemy reads the password up to the '@' (`openssl rand -base64` passwords hold '/'); the check showed such a
    password as given, since the display cut the user info at the first '/'. It shows the URL as the log does."""
    env = {"LEADHUB_DATABASE_URL": "postgresql+asyncpg://leadhub:a1/b2+c3@db.internal:5432/leadhub"}
    run = run_leadhub("config", "check", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "  database    postgresql+asyncpg://leadhub:***@db.internal:5432/leadhub" in run.stdout.splitlines()
    assert "b2+c3" not in run.stdout + run.stderr


@pytest.mark.parametrize("port", ["0", "99999", "65536"])
def test_a_database_port_out_of_range_is_refused_without_the_password(port: str) -> None:
    """SQLAlchemy reads any digits as the port: `:99999` passed the check, then the daemon retried its migration
    forever, logging "Connection refused" (a port number no server can have)."""
    with pytest.raises(ConfigError) as caught:
        config_from_dict({}, env={"LEADHUB_DATABASE_URL": f"postgresql+asyncpg://u:hunter2@h:{port}/db"})
    assert caught.value.problems == [
        f"environment LEADHUB_DATABASE_URL: database_url: port {port} is out of range; give 1-65535 (or none: 5432)"
    ]
    assert config_from_dict({}, env={"LEADHUB_DATABASE_URL": "postgresql+asyncpg://u:p@h:65535/db"})


@pytest.mark.parametrize("setting", ["rules_dir", "templates_dir"])
def test_a_rules_or_templates_dir_that_is_a_file_is_named(tmp_path: Path, setting: str) -> None:
    """A rules dir that is a file was taken: the daemon logged "no rules directory yet; its rules load once it is
    created" and ran no rule ever; a templates dir that is a file left every admin template unused."""
    (tmp_path / "file").write_text("")
    name = f"LEADHUB_{setting.upper()}"
    with pytest.raises(ConfigError) as caught:
        config_from_dict({}, env={name: str(tmp_path / "file")})
    assert caught.value.problems == [
        f"environment {name}: {setting}: {tmp_path / 'file'} is a file; give a directory"
        + (" (its rules load once it is created)" if setting == "rules_dir" else "")
    ]
    with pytest.raises(ConfigError, match=f"{setting}: {tmp_path / 'file'} is a file"):
        config_from_dict({}, env={name: str(tmp_path / "file" / "rules")})  # it could never be created
    assert config_from_dict({}, env={name: str(tmp_path / "not-yet")})  # missing is fine: created later


def test_a_database_url_with_an_unencoded_at_sign_in_the_password_is_refused_without_it() -> None:
    """SQLAlchemy splits `u:hunter@2secret@db-host` at the first '@': the host became `2secret@db-host`, the daemon
    retried its migration forever, and the log showed that host, half of the password."""
    for url in ("postgresql+asyncpg://u:hunter@2secret@db-host/db", "postgresql+asyncpg://u:a/b@2secret@db-host/db"):
        with pytest.raises(ConfigError) as caught:
            config_from_dict({}, env={"LEADHUB_DATABASE_URL": url})
        assert caught.value.problems == [
            "environment LEADHUB_DATABASE_URL: database_url: the host holds '@' or '/': write them in the user "
            "and password percent-encoded (@ as %40, / as %2F)"
        ]
    assert config_from_dict({}, env={"LEADHUB_DATABASE_URL": "postgresql+asyncpg://u:hunter%402secret@db-host/db"})


@pytest.mark.parametrize("setting", ["data_dir", "rules_dir", "templates_dir"])
def test_a_directory_name_too_long_is_a_problem_not_a_traceback(setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({setting: "a" * 5000}, env={})
    assert caught.value.problems == [f"(defaults): {setting}: cannot be used as a directory: File name too long"]


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"LEADHUB_HTTP_HOST": ""}, "http_host: is empty; give the address to listen on"),
        ({"LEADHUB_SHUTDOWN_TIMEOUT": "inf"}, "shutdown_timeout: Input should be a finite number"),
        ({"LEADHUB_SHUTDOWN_TIMEOUT": "7200"}, "shutdown_timeout: Input should be less than or equal to 3600"),
    ],
)
def test_a_host_to_listen_on_and_a_stop_that_ends_are_required(env: dict[str, str], problem: str) -> None:
    """An empty LEADHUB_HTTP_HOST made aiohttp listen on every interface (the API open to the network, unasked);
    LEADHUB_SHUTDOWN_TIMEOUT=inf let a client trickling a body hold a stop forever."""
    with pytest.raises(ConfigError) as caught:
        config_from_dict({}, env=env)
    [said] = caught.value.problems
    assert problem in said, said


def test_a_worker_reads_the_text_the_primary_validated_not_the_file_as_it_is_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `leadhub run --worker` loads (hub/workers.py): the primary's copy, never the file edited since, and no
    ./leadhub.yaml created since a start without a file; the copy holds secrets, so no repr shows it."""
    monkeypatch.chdir(tmp_path)
    config_file = tmp_path / "leadhub.yaml"
    config_file.write_text("http_port: 8081\n")
    at_start = load_config(config_file, env={})
    assert at_start.text == b"http_port: 8081\n"
    config_file.write_text("http_port: 9090\n")
    again = load_config(config_file, env={}, text=at_start.text)
    assert again.settings.http_port == 8081 and again.source == config_file
    assert load_config(None, env={}, text=b"").settings.http_port == 8080, "no file at start: none now either"
    with pytest.raises(ConfigError, match=r"leadhub.yaml:2:1: not valid YAML"):
        load_config(config_file, env={}, text=b"http_port: [\n")
    secret = load_config(config_file, env={}, text=b"smtp_url: smtp://u:hunter2@host:25\n")
    assert "hunter2" not in repr(secret)


@pytest.mark.parametrize(
    ("host", "port", "links"),
    [
        ("127.0.0.1", 18081, "http://127.0.0.1:18081"),
        ("0.0.0.0", 8080, "http://127.0.0.1:8080"),
        ("::", 9000, "http://[::1]:9000"),
        ("::1", 9000, "http://[::1]:9000"),
        ("crm.lan", 80, "http://crm.lan:80"),
    ],
)
def test_links_without_a_public_url_follow_where_http_listens(host: str, port: int, links: str) -> None:
    """They said http://127.0.0.1:8080 whatever the port; a wildcard host is opened on loopback."""
    assert Settings(http_host=host, http_port=port).links_url == links
    assert Settings(http_host=host, http_port=port, public_url="https://crm.example").links_url == "https://crm.example"
