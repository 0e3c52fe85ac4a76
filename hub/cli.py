"""The `leadhub` command line: run the daemon, check its configuration and connectors, the database (migrate,
status, backup, restore), dead letters, rules, retry of trigger runs, contact unmerge."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from leadhub import __version__
from leadhub.hub.cli_args import MAX_LIMIT, stored_id, stored_text
from leadhub.hub.cli_errors import store_errors, upgrade_errors, upgrade_interrupted
from leadhub.hub.rules_cli import rules_app

app = typer.Typer(
    help="leadhub: every way a customer reaches you, one durable queue, one customer record.",
    no_args_is_help=True,
    add_completion=False,
    # A crash's traceback must not print local variables (settings, URLs with passwords): older typer releases,
    # which pyproject allows (>=0.12), printed them by default.
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
dead_app = typer.Typer(help="Dead letters: items that could not be processed.", no_args_is_help=True)
contacts_app = typer.Typer(help="Contacts: merge by hand, keep apart, take back a merge.", no_args_is_help=True)
actions_app = typer.Typer(help="Trigger runs (rule actions): run failed ones again.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration: check it before a (re)start.", no_args_is_help=True)
connectors_app = typer.Typer(help="Connectors: check that they reach their sources.", no_args_is_help=True)
app.add_typer(actions_app, name="actions")
app.add_typer(config_app, name="config")
app.add_typer(connectors_app, name="connectors")
app.add_typer(db_app, name="db")
app.add_typer(contacts_app, name="contacts")
app.add_typer(dead_app, name="dead")
app.add_typer(rules_app, name="rules")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="config file (default: ./leadhub.yaml if present)")
]


def _load(config: Path | None, text: bytes | None = None):  # type: ignore[no-untyped-def]
    """The configuration, from the file or from `text` (a worker: the file's content as the primary read it)."""
    from leadhub.hub.config import ConfigError, load_config
    from leadhub.hub.exit_codes import CONFIG_ERROR
    from leadhub.hub.logging import configure

    try:
        loaded = load_config(config, text=text)
    except ConfigError as exc:
        typer.echo(f"leadhub: {exc}", err=True)
        raise typer.Exit(CONFIG_ERROR) from None
    configure(loaded.settings.log_level, loaded.settings.log_format)
    _warn_unknown_environment()
    return loaded


def _warn_unknown_environment() -> None:
    """A misspelt `LEADHUB_` variable would otherwise be ignored without a word (an unknown file key stops)."""
    import structlog

    from leadhub.hub.config import unknown_environment

    for name, suggestion in unknown_environment():
        hint = {"did_you_mean": suggestion} if suggestion else {}
        structlog.get_logger("leadhub.config").warning("unknown LEADHUB_ variable ignored", variable=name, **hint)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"leadhub {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """leadhub command line."""


@app.command()
def run(
    config: ConfigOption = None,
    worker: Annotated[int, typer.Option(hidden=True, min=0, help="set by the primary for its worker processes")] = 0,
    ready_fd: Annotated[int | None, typer.Option(hidden=True, help="a worker's pipe to say it serves")] = None,
    relay_share: Annotated[
        str | None, typer.Option(hidden=True, help="a worker's share of the outbox: INDEX/COUNT, set by the primary")
    ] = None,
    config_fd: Annotated[
        int | None, typer.Option(hidden=True, help="a worker's copy of the primary's configuration file")
    ] = None,
) -> None:
    """Run the daemon: HTTP, connectors, pipeline and relay (embedded NATS unless LEADHUB_NATS_URL is set)."""
    # The configuration first: a mistake in it is answered before the daemon's modules are imported (seconds).
    copy = None
    if config_fd is not None:  # a worker: the primary's configuration
        from leadhub.hub.workers import read_config_copy

        copy = read_config_copy(config_fd)
    loaded = _load(config, copy)
    from leadhub.hub.daemon import BackgroundTaskFailed, run_until_signalled
    from leadhub.hub.embedded_nats import EmbeddedNatsError
    from leadhub.hub.exit_codes import SCHEMA_NEWER
    from leadhub.hub.queue import StreamConflict
    from leadhub.store.db import SchemaNewerThanCode, redacted_url

    try:
        _run_loop(run_until_signalled(loaded, worker, ready_fd, _share(relay_share)))
    except SchemaNewerThanCode as exc:
        database = redacted_url(loaded.settings.effective_database_url)
        typer.echo(f"leadhub: cannot use the database {database}: {exc}", err=True)  # as every other command
        raise typer.Exit(SCHEMA_NEWER) from None
    except (EmbeddedNatsError, StreamConflict) as exc:
        typer.echo(f"leadhub: {exc}", err=True)
        raise typer.Exit(1) from None
    except BackgroundTaskFailed as exc:  # its traceback is in the log already
        typer.echo(f"leadhub: stopped: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"leadhub: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the configuration and say what it adds up to (database, queue, connectors, rules), starting nothing;
    exit 2 when it is invalid, 1 when rule files have problems. Secrets are not shown."""
    from leadhub.hub.config_check import describe

    loaded = _load(config)
    report = describe(loaded)
    typer.echo("\n".join(report.lines))
    raise typer.Exit(1 if report.rule_problems else 0)


@connectors_app.command("check")
def connectors_check(
    names: Annotated[list[str] | None, typer.Argument(help="connector names (default: all)")] = None,
    config: ConfigOption = None,
) -> None:
    """Log in to each pull connector's source as the daemon will (an IMAP folder selected read-only, one read of a
    shop's API), changing nothing; webhook connectors are listed with their route. Exit 1 when one fails."""
    from leadhub.hub.connectors_check import check_connectors

    loaded = _load(config)
    known = [c.name for c in loaded.connectors]
    if unknown := [n for n in names or [] if n not in known]:
        configured = ", ".join(known) or "none"
        typer.echo(f"leadhub: no connector named {', '.join(map(repr, unknown))}; configured: {configured}", err=True)
        raise typer.Exit(2)
    chosen = [c for c in loaded.connectors if not names or c.name in names]
    lines, failed = asyncio.run(check_connectors(chosen))
    typer.echo("\n".join(lines) if lines else "no connectors configured")
    raise typer.Exit(1 if failed else 0)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply database migrations (`run` also does this on start) and say from which revisions to which."""
    from leadhub.hub.db_upgrade import upgrade_database
    from leadhub.hub.stop_as_interrupt import stop_as_interrupt

    loaded = _load(config)
    url = loaded.settings.effective_database_url
    with upgrade_interrupted(url), store_errors(url), upgrade_errors(url), stop_as_interrupt():
        done = upgrade_database(url)
    typer.echo(done.message)


@db_app.command("status")
def db_status(config: ConfigOption = None) -> None:
    """Say whether the database is at this release's schema, changing nothing: exit 0 yes, 4 `db upgrade` is due,
    3 a newer release migrated it, 1 it cannot be reached."""
    from leadhub.hub.db_status import schema_status

    loaded = _load(config)
    with store_errors(loaded.settings.effective_database_url):
        status = asyncio.run(schema_status(loaded.settings.effective_database_url))
    typer.echo(status.message, err=status.exit_code != 0)
    raise typer.Exit(status.exit_code)


@contextlib.contextmanager
def _refusals(*kinds: type[Exception]) -> Iterator[None]:
    """A command that could not do what it was asked: its one-line reason, exit status 1 (or the error's own
    `exit_code`), no traceback."""
    try:
        yield
    except kinds as exc:
        typer.echo(f"leadhub: {exc}", err=True)
        raise typer.Exit(getattr(exc, "exit_code", 1)) from None


@db_app.command("backup")
def db_backup(
    target: Annotated[Path, typer.Argument(help="the backup file to write (never overwritten)")],
    config: ConfigOption = None,
) -> None:
    """Copy the SQLite database to FILE, consistent while the daemon runs (PostgreSQL: use pg_dump)."""
    from leadhub.hub.db_backup import BackupError, backup_sqlite
    from leadhub.hub.stop_as_interrupt import stop_as_interrupt

    loaded = _load(config)
    with _refusals(BackupError), stop_as_interrupt():
        done = backup_sqlite(loaded.settings.effective_database_url, target)
    schema = ", ".join(done.revisions) or "no leadhub tables"
    typer.echo(f"backed up {done.source} to {done.target}: {done.size:,} bytes, schema {schema}, integrity checked")


@db_app.command("restore")
def db_restore(
    backup: Annotated[Path, typer.Argument(help="a file written by `leadhub db backup`")],
    config: ConfigOption = None,
) -> None:
    """Put a backup in place of the SQLite database (the daemon stopped); the replaced one is kept beside it."""
    from leadhub.hub.db_backup import BackupError
    from leadhub.hub.db_restore import restore_sqlite
    from leadhub.hub.stop_as_interrupt import stop_as_interrupt

    loaded = _load(config)
    with _refusals(BackupError), stop_as_interrupt():
        done = restore_sqlite(loaded.settings.effective_database_url, backup)
    kept = f"; the database it replaced is kept as {done.kept}" if done.kept else ""
    if done.kept_wal:
        kept += f"; a WAL left beside no database is kept as {done.kept_wal} (not read into the restored one)"
    typer.echo(f"restored {backup} to {done.database} (schema {', '.join(done.revisions)}){kept}")


@dead_app.command("list")
def dead_list(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIMIT, help="how many to show")] = 100,
    all_: Annotated[bool, typer.Option("--all", help="include resolved ones")] = False,
) -> None:
    """List dead letters: id, when, source, key and reason."""
    from leadhub.hub.dead_letters_cli import list_dead
    from leadhub.hub.terminal_text import safe

    loaded = _load(config)
    with store_errors(loaded.settings.effective_database_url):
        rows = asyncio.run(list_dead(loaded, limit, all_))
    if not rows:
        typer.echo("no dead letters")
        return
    for row in rows:
        state = "resolved" if row.resolved_at else f"replays={row.replays}"
        typer.echo(
            f"{row.id}  {row.created_at:%Y-%m-%d %H:%M:%S}  {row.source}  {safe(row.subject)}  "
            f"key={safe(row.key or '-')}  {state}\n    {safe(row.reason)}"
        )


@dead_app.command("show")
def dead_show(
    dead_id: Annotated[str, typer.Argument(help="the dead letter's id (leadhub dead list)", callback=stored_id)],
    raw: Annotated[bool, typer.Option("--raw", help="write only the payload's exact bytes, e.g. > item.eml")] = False,
    config: ConfigOption = None,
) -> None:
    """Show one dead letter whole: reason, headers and payload (control characters escaped; --raw for the bytes)."""
    from leadhub.hub.dead_letter_view import describe
    from leadhub.hub.dead_letters_cli import get_dead

    loaded = _load(config)
    with store_errors(loaded.settings.effective_database_url):
        row = asyncio.run(get_dead(loaded, dead_id))
    if row is None:
        typer.echo(f"leadhub: no dead letter with id {dead_id!r} (leadhub dead list --all lists them)", err=True)
        raise typer.Exit(1)
    if raw:
        sys.stdout.buffer.write(row.payload)
        sys.stdout.buffer.flush()
        return
    typer.echo(describe(row))


@dead_app.command("replay")
def dead_replay(
    dead_id: Annotated[str | None, typer.Argument(help="the dead letter's id", callback=stored_id)] = None,
    all_: Annotated[bool, typer.Option("--all", help="replay every unresolved dead letter")] = False,
    config: ConfigOption = None,
) -> None:
    """Run dead letters through the pipeline again; those that now succeed are marked resolved."""
    from leadhub.hub.dead_letters_cli import replay_each

    if (dead_id is None) == (not all_):
        typer.echo("leadhub: give a dead letter ID or --all (not both)", err=True)
        raise typer.Exit(2)
    loaded = _load(config)

    async def replay_printing() -> tuple[int, int]:
        """Each outcome printed as it comes (a backlog shows its progress): how many, how many failed."""
        replayed = failed = 0
        async for outcome in replay_each(loaded, None if all_ else dead_id):
            typer.echo(f"{outcome.id}: {outcome.result}")
            replayed, failed = replayed + 1, failed + (not outcome.resolved)
        return replayed, failed

    with store_errors(loaded.settings.effective_database_url):
        replayed, failed = asyncio.run(replay_printing())
    if not replayed:
        typer.echo("nothing to replay")
    raise typer.Exit(1 if failed else 0)


@actions_app.command("retry")
def actions_retry(
    action_ids: Annotated[
        list[str] | None, typer.Argument(help="ids of failed runs (GET /api/actions)", callback=stored_id)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="every failed run (narrowed by --rule, --action)")] = False,
    rule: Annotated[
        str | None, typer.Option("--rule", help="with --all: only this rule's runs", callback=stored_text)
    ] = None,
    action: Annotated[str | None, typer.Option("--action", help="with --all: only this action type")] = None,
    config: ConfigOption = None,
) -> None:
    """Put failed trigger runs back to pending, due now with their attempts from zero; the daemon runs them."""
    from leadhub.hub.actions_cli import retry_actions
    from leadhub.triggers.actions import ACTIONS

    if bool(action_ids) == all_:
        typer.echo("leadhub: give run IDs or --all (not both)", err=True)
        raise typer.Exit(2)
    if (rule or action) and not all_:
        typer.echo("leadhub: --rule and --action narrow --all; they do not apply to IDs", err=True)
        raise typer.Exit(2)
    if action is not None and action not in ACTIONS:  # a misspelt type re-queued nothing and said it was fine
        typer.echo(
            f"leadhub: --action {action!r} is no action type; the types are {', '.join(sorted(ACTIONS))}", err=True
        )
        raise typer.Exit(2)
    loaded = _load(config)
    with store_errors(loaded.settings.effective_database_url):
        report = asyncio.run(retry_actions(loaded, action_ids or [], rule_id=rule, action_type=action))
    for warning in report.warnings:
        typer.echo(f"leadhub: warning: {warning}", err=True)
    for problem in report.problems:
        typer.echo(f"leadhub: {problem}", err=True)
    typer.echo(f"re-queued {report.requeued} failed run{'' if report.requeued == 1 else 's'}")
    raise typer.Exit(1 if report.problems else 0)


@contacts_app.command("unmerge")
def contacts_unmerge(
    ident: Annotated[
        str, typer.Argument(help="the id of the contact that was merged away, or of the merge", callback=stored_id)
    ],
    config: ConfigOption = None,
) -> None:
    """Restore a merged contact and every row the merge moved; what changed after the merge is kept (README)."""
    from leadhub.hub.contacts_cli import unmerge_contact
    from leadhub.store.identity import UnmergeError

    loaded = _load(config)
    with _refusals(UnmergeError), store_errors(loaded.settings.effective_database_url):
        merge = asyncio.run(unmerge_contact(loaded, ident))
    typer.echo(f"restored contact {merge['merged_id']} (split from {merge['survivor_id']}; merge {merge['id']})")


@contacts_app.command("merge")
def contacts_merge(
    merged_id: Annotated[str, typer.Argument(help="the contact that goes away", callback=stored_id)],
    into: Annotated[str, typer.Option("--into", help="the contact that stays", callback=stored_id)],
    config: ConfigOption = None,
) -> None:
    """Merge two contacts by hand (a review the rules left to a person); `contacts unmerge` takes it back."""
    from leadhub.hub.contacts_cli import merge_contacts
    from leadhub.store.contact_review import ReviewError

    loaded = _load(config)
    with _refusals(ReviewError), store_errors(loaded.settings.effective_database_url):
        merge = asyncio.run(merge_contacts(loaded, merged_id, into))
    typer.echo(f"merged contact {merged_id} into {into} (merge {merge['merge_id']})")


@contacts_app.command("keep-apart")
def contacts_keep_apart(
    contact_id: Annotated[str, typer.Argument(help="a contact flagged for review", callback=stored_id)],
    config: ConfigOption = None,
) -> None:
    """They are different people: clear the review flag of the contact and of the contacts its review names."""
    from leadhub.hub.contacts_cli import keep_contacts_apart
    from leadhub.store.contact_review import ReviewError

    loaded = _load(config)
    with _refusals(ReviewError), store_errors(loaded.settings.effective_database_url):
        cleared = asyncio.run(keep_contacts_apart(loaded, contact_id))
    typer.echo(f"review cleared: {', '.join(cleared)}")


def _share(text: str | None) -> tuple[int, int] | None:
    """`--relay-share 1/3` as (1, 3); the primary writes it, so a malformed one is a bug, not a user error."""
    if text is None:
        return None
    index, count = (int(part) for part in text.split("/"))
    if not 0 <= index < count:
        raise typer.BadParameter(f"share {index} of {count} does not exist", param_hint="--relay-share")
    return index, count


def _run_loop(coro) -> None:  # type: ignore[no-untyped-def]
    """uvloop where it exists: HTTP parsing and NATS round trips cost about half as much CPU."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main() -> None:
    sys.exit(app())
