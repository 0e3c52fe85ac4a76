"""What a CLI command says when the database it needs cannot be used: one line naming it, not a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer


@contextmanager
def store_errors(url: str) -> Iterator[None]:
    """A refused connection, a wrong password, a missing database or the wrong schema: `leadhub: ...`, exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from leadhub.store.db import SchemaMismatch, redacted_url

    try:
        yield
    except SchemaMismatch as exc:
        typer.echo(f"leadhub: cannot use the database {redacted_url(url)}: {exc}", err=True)
        raise typer.Exit(1) from None
    except (SQLAlchemyError, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        typer.echo(f"leadhub: cannot use the database {redacted_url(url)}: {type(cause).__name__}: {detail}", err=True)
        raise typer.Exit(1) from None


@contextmanager
def upgrade_interrupted(url: str) -> Iterator[None]:
    """`db upgrade` stopped by Ctrl-C, SIGTERM or SIGHUP (hub/stop_as_interrupt.py), its clean-up done: one line
    saying where that leaves the database, exit 130 (typer's for a Ctrl-C, which said nothing)."""
    from leadhub.hub.exit_codes import INTERRUPTED
    from leadhub.store.db import redacted_url

    try:
        yield
    except KeyboardInterrupt:
        # Whether the commit came before the signal is not known here; `db status` reads it.
        typer.echo(
            f"leadhub: db upgrade interrupted; its migration is one transaction, so {redacted_url(url)} is either "
            "as it was or fully migrated: `leadhub db status` says which",
            err=True,
        )
        raise typer.Exit(INTERRUPTED) from None


@contextmanager
def upgrade_errors(url: str) -> Iterator[None]:
    """`db upgrade` that fails for any other reason (a migration's own check, alembic): one line, exit 1.

    Goes inside `store_errors`, which says what it says about a database that cannot be reached or used.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from leadhub.error_text import brief
    from leadhub.store.db import MigrationError, SchemaMismatch, redacted_url

    try:
        yield
    except (SchemaMismatch, SQLAlchemyError, OSError):
        raise
    except MigrationError as exc:
        typer.echo(f"leadhub: cannot upgrade the database {redacted_url(url)}: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        typer.echo(f"leadhub: cannot upgrade the database {redacted_url(url)}: {brief(exc, 300)}", err=True)
        raise typer.Exit(1) from None
