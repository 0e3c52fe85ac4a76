"""The project's promises to its users: the README's commands, the CLI contract, docker-compose.yml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from leadhub.connectors.registry import CONNECTOR_TYPES
from tests.helpers import REPO, run_leadhub


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", readme)[:2]


def test_readme_opens_with_the_two_commands() -> None:
    run, test = _readme_commands()
    assert run.startswith("python3.11 -m venv .venv") and "leadhub run" in run
    assert test.startswith("python3.11 -m venv .venv") and "pytest" in test and "[test]" in test


def test_ci_runs_the_readme_test_command_and_postgresql() -> None:
    """Each step of the README's test command (install, then pytest) is in .ci/run, as are the PostgreSQL tests."""
    ci = (REPO / ".ci" / "run").read_text().replace(" -q -p no:cacheprovider", "").replace(" -q", "")
    _, test = _readme_commands()
    install, run_tests = test.replace(" -q", "").rsplit(" && ", 1)
    assert install in ci
    assert f"\n{run_tests} ||" in ci or f"\n{run_tests}\n" in ci, "the SQLite suite runs in the foreground"
    assert "LEADHUB_TEST_DATABASE_URL" in ci


def test_cli_has_the_contract_commands() -> None:
    for args, expected in (
        (["--help"], ["run", "db", "dead", "rules"]),
        (["dead", "--help"], ["list", "replay"]),
        (["actions", "--help"], ["retry"]),
        (["db", "--help"], ["upgrade"]),
        (["rules", "--help"], ["check", "test"]),
    ):
        run = run_leadhub(*args)
        assert run.returncode == 0, run.stderr
        for word in expected:
            assert re.search(rf"\b{word}\b", run.stdout), (args, word, run.stdout)
    version = run_leadhub("--version")
    assert version.returncode == 0 and re.match(r"leadhub \d+\.\d+", version.stdout), version.stdout


def test_every_connector_type_has_a_config_schema() -> None:
    for name, connector in CONNECTOR_TYPES.items():
        assert connector.type == name
        schema = connector.Config.model_json_schema()
        assert {"name", "type"} <= set(schema["properties"]), name
        assert connector.Config.model_config.get("extra") == "forbid", f"{name}: unknown keys must be errors"


def test_docker_compose_file_is_valid() -> None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        command = ["docker", "compose", "config", "--quiet"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose", "config", "--quiet"]
    else:
        pytest.skip("neither `docker compose` nor docker-compose is installed (.ci/run installs docker-compose)")
    # the API token has no default: the published port would open /api to anyone who knows it
    environ = {name: value for name, value in os.environ.items() if name != "LEADHUB_API_TOKEN"}
    unset = subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=60, check=False)
    assert unset.returncode != 0 and "set LEADHUB_API_TOKEN to a long random value" in unset.stderr, unset.stderr
    environ["LEADHUB_API_TOKEN"] = "a-long-random-value-for-the-test"
    result = subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    services = subprocess.run(
        [*command[:-1], "--services"], cwd=REPO, env=environ, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert {"leadhub", "nats", "postgres", "mailpit"} <= set(services)
