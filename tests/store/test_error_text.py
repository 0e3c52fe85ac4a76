"""A failed statement's text is safe to show: no stored values in it, and one short line where operators read it."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.error_text import brief

SECRET_ISH = "alice.private@example.com"


async def _failing_statement(engine: AsyncEngine) -> DBAPIError:
    with pytest.raises(DBAPIError) as caught:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT no_such_column FROM contact WHERE email = :email"), {"email": SECRET_ISH})
    return caught.value


async def test_a_failed_statement_does_not_carry_its_parameters(engine: AsyncEngine) -> None:
    """Exceptions reach logs (tracebacks) and dead-letter reasons: a contact's address must not ride along."""
    exc = await _failing_statement(engine)
    assert SECRET_ISH not in str(exc)
    assert "no_such_column" in str(exc)  # the statement itself still helps a developer


async def test_brief_is_the_drivers_first_line_without_the_statement(engine: AsyncEngine) -> None:
    """What /readyz and the warnings show: `DriverError: message`, no SQL text, no SQLAlchemy background link."""
    summary = brief(await _failing_statement(engine))
    assert "\n" not in summary
    assert "SELECT" not in summary and "sqlalche.me" not in summary
    assert "no_such_column" in summary
    assert summary.split(":")[0] in ("OperationalError", "UndefinedColumnError", "ProgrammingError")


def test_brief_of_other_errors_is_type_and_first_line_cut() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    assert brief(refused) == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert brief(RuntimeError("first\nsecond")) == "RuntimeError: first"
    assert brief(TimeoutError()) == "TimeoutError"
    assert len(brief(ValueError("x" * 1000))) == 200
