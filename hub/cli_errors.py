"""What a CLI command says when the database it needs cannot be used: one line naming it, not a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer


@contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Turn a refused connection, a wrong password or a missing database into `leadhub: ...` and exit 1."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        where = make_url(url).render_as_string(hide_password=True)
        typer.echo(f"leadhub: cannot use the database {where}: {type(cause).__name__}: {detail}", err=True)
        raise typer.Exit(1) from None
