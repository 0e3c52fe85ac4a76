"""`leadhub rules ...`: check rule files, dry-run an event against them, show traces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leadhub.hub.cli_args import MAX_LIMIT, stored_text
from leadhub.hub.cli_errors import store_errors

rules_app = typer.Typer(help="Rules: check files, dry-run an event, show traces.", no_args_is_help=True)
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="config file (default: ./leadhub.yaml if present)")
]


def _settings(config: Path | None):  # type: ignore[no-untyped-def]
    from leadhub.hub.config import ConfigError, load_config

    try:
        return load_config(config).settings
    except ConfigError as exc:
        typer.echo(f"leadhub: {exc}", err=True)
        raise typer.Exit(2) from None


def _require_rules_dir(directory: Path, how: str) -> None:
    """Exit 2 (a usage error, as a wrong option) when there are no rule files to check or try."""
    from leadhub.triggers.loader import rules_dir_problem

    if problem := rules_dir_problem(directory):
        typer.echo(f"leadhub: {directory}: {problem} ({how} or set LEADHUB_RULES_DIR)", err=True)
        raise typer.Exit(2)


@rules_app.command("check")
def check(
    directory: Annotated[Path | None, typer.Argument(help="rules directory (default: LEADHUB_RULES_DIR)")] = None,
    config: ConfigOption = None,
) -> None:
    """Validate every rule file; print `file:line:col: rule 'id': path: message` per problem and exit 1 (2: no
    such directory)."""
    from leadhub.triggers.loader import load_rules, rule_files
    from leadhub.triggers.sandbox import Templates

    settings = _settings(config)
    where = directory or settings.rules_dir
    _require_rules_dir(where, "give a directory")
    result = load_rules(where, Templates(settings.templates_dir), include_disabled=True)
    for problem in result.problems:
        typer.echo(str(problem))
    if result.problems:
        raise typer.Exit(1)
    typer.echo(f"{len(result.rules)} rules in {len(rule_files(where))} files: OK")


@rules_app.command("test")
def test(
    event_file: Annotated[Path, typer.Argument(help="an event as JSON: type, data, and contact/lead/order/...")],
    rules: Annotated[Path | None, typer.Option("--rules", help="rules directory (default: LEADHUB_RULES_DIR)")] = None,
    config: ConfigOption = None,
) -> None:
    """Dry run: which rules match the event and what each would do (rendered emails, tasks, webhooks)."""
    from leadhub.triggers.dryrun import EventFileError, dry_run, format_outcomes, read_event
    from leadhub.triggers.engine import RuleIndex
    from leadhub.triggers.loader import load_rules
    from leadhub.triggers.sandbox import Templates

    settings = _settings(config)
    directory = rules or settings.rules_dir
    _require_rules_dir(directory, "give --rules")
    loaded = load_rules(directory, Templates(settings.templates_dir))
    for problem in loaded.problems:
        typer.echo(f"warning: {problem} (rule skipped)", err=True)
    try:
        event, objects = read_event(event_file)
    except EventFileError as exc:
        typer.echo(f"leadhub: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_outcomes(dry_run(RuleIndex(loaded.rules), event, objects, settings.links_url)))


@rules_app.command("trace")
def trace(
    rule_id: Annotated[str, typer.Argument(help="the rule's id", callback=stored_text)],
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIMIT, help="how many evaluations and actions to show")] = 20,
    config: ConfigOption = None,
) -> None:
    """Recent evaluations of a rule (matched or why not, each condition) and its actions with their outcome."""
    import asyncio

    from leadhub.hub.rules_views import show_trace

    settings = _settings(config)
    with store_errors(settings.effective_database_url):
        shown, warning = asyncio.run(show_trace(settings, rule_id, limit))
    if warning:
        typer.echo(f"leadhub: warning: {warning}", err=True)
    typer.echo(shown)


@rules_app.command("backtest")
def backtest(
    since: Annotated[str, typer.Option("--since", help="how far back, e.g. 30d")] = "30d",
    rules: Annotated[Path | None, typer.Option("--rules", help="rules directory (default: LEADHUB_RULES_DIR)")] = None,
    config: ConfigOption = None,
) -> None:
    """Replay stored events against the current rules: how often each rule would have fired (read-only)."""
    import asyncio

    from leadhub.durations import DurationError, parse_duration
    from leadhub.hub.rules_views import run_backtest

    settings = _settings(config)
    try:
        window = parse_duration(since)
    except DurationError as exc:
        typer.echo(f"leadhub: --since: {exc}", err=True)
        raise typer.Exit(2) from None
    directory = rules or settings.rules_dir
    _require_rules_dir(directory, "give --rules")
    with store_errors(settings.effective_database_url):
        url = settings.effective_database_url
        typer.echo(asyncio.run(run_backtest(url, directory, settings.templates_dir, window)))
