"""The survey page's logic: check a survey link, store the first answer per order, emit feedback.received."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.ids import new_id
from leadhub.store import trigger_data
from leadhub.store.models import Feedback
from leadhub.triggers.tokens import BadToken, verify

MAX_COMMENT = 5000


class BadAnswer(ValueError):
    """A score or comment the page must ask for again."""


@dataclass(frozen=True)
class SurveyLink:
    order_id: str
    contact_id: str | None
    lead_id: str | None


async def open_link(engine: AsyncEngine, token: str, now: datetime) -> tuple[str, SurveyLink | None]:
    """(`form` | `answered` | `invalid` | `expired`, the link) for a survey token."""
    async with engine.begin() as conn:
        key = await trigger_data.signing_key(conn, now)
        try:
            claims = verify(key, "survey", token, now)
        except BadToken as exc:
            return exc.reason, None
        link = SurveyLink(str(claims.get("o")), claims.get("c"), claims.get("l"))
        answered = (await conn.execute(select(Feedback.id).where(Feedback.order_id == link.order_id))).first()
    return ("answered" if answered else "form"), link


def parse_answer(score: str | None, comment: str | None) -> tuple[int, str | None]:
    digits = (score or "").strip()
    # ASCII digits only, and few of them: str.isdigit() takes '²' (which int() refuses) and int() refuses
    # more than 4300 digits, either of which would be a 500 instead of the form again.
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 3) or not 0 <= int(digits) <= 10:
        raise BadAnswer("Please choose a score from 0 to 10.")
    text = (comment or "").replace("\x00", "").strip()
    if len(text) > MAX_COMMENT:
        raise BadAnswer(f"Please keep the comment under {MAX_COMMENT} characters.")
    return int(digits), text or None


async def submit(engine: AsyncEngine, link: SurveyLink, score: int, comment: str | None, now: datetime) -> bool:
    """Store the answer (and its feedback.received event); False when the order was already answered."""
    values = {
        "id": new_id(),
        "order_id": link.order_id,
        "contact_id": link.contact_id,
        "lead_id": link.lead_id,
        "score": score,
        "comment": comment,
        "created_at": now,
    }
    async with engine.begin() as conn:
        return await trigger_data.save_feedback(conn, values)


async def unsubscribe(engine: AsyncEngine, token: str, now: datetime, *, confirm: bool) -> tuple[str, str | None]:
    """(`confirm` | `done` | `invalid` | `expired`, the address) for an unsubscribe token; `confirm` stores it."""
    async with engine.begin() as conn:
        key = await trigger_data.signing_key(conn, now)
        try:
            address = str(verify(key, "unsubscribe", token, now).get("e") or "")
        except BadToken as exc:
            return exc.reason, None
        if not address:
            return "invalid", None
        if confirm:
            await trigger_data.suppress(conn, address, "unsubscribe", "one-click link", now)
            return "done", address
    return "confirm", address
