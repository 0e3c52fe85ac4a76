"""The intake pipeline: parse and normalize each envelope (pure), then store a batch in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from leadhub.envelope import Envelope
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.failures import Failure, classify
from leadhub.pipelines.model import InquiryDraft, SourceSpec
from leadhub.pipelines.normalize import consent_from_fields, fold_email, normalize_identity
from leadhub.pipelines.parsers import PARSERS
from leadhub.store.intake import BatchResult, InquiryRow, write_batch
from leadhub.store.policy import IdentityPolicy
from leadhub.surrogates import may_hold_lone_surrogates, mend

# Tries of one row, at once, while its transaction loses to concurrent ones (pipelines/failures.py, CONFLICT): each
# loss means another worker committed, and the next try sees what it wrote.
CONFLICT_TRIES = 4


def utcnow() -> datetime:
    return datetime.now(UTC)


class IntakePipeline:
    """parse -> normalize -> store; `prepare` is pure so it can be tested and run outside a transaction."""

    def __init__(
        self,
        engine: AsyncEngine,
        sources: Mapping[str, SourceSpec],
        *,
        default_region: str | None = None,
        policy: IdentityPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.sources = dict(sources)
        self.default_region = default_region
        self.policy = policy or IdentityPolicy()
        self.clock = clock

    def prepare(self, envelope: Envelope) -> InquiryRow:
        """Turn an envelope into a row to store; PermanentError when it can never be processed."""
        source = self.sources.get(envelope.connector)
        if source is None:
            known = ", ".join(sorted(self.sources)) or "none"
            raise PermanentError(
                f"connector {envelope.connector!r} is not configured (configured: {known}); "
                "add it back and replay this dead letter"
            )
        parser = PARSERS.get(source.type)
        if parser is None:
            raise PermanentError(f"no parser for connector type {source.type!r}")
        # Parsers that look for phone numbers in free text need the region for national formats.
        draft = parser(envelope, {"default_region": self.default_region, **source.options})
        if may_hold_lone_surrogates(envelope.payload):  # JSON's "\ud800": text UTF-8 (the store) cannot hold
            draft = mend(draft)
        return self._row(draft)

    def _row(self, draft: InquiryDraft) -> InquiryRow:
        envelope = draft.envelope
        identity = normalize_identity(draft.identity, self.default_region)
        meta = dict(envelope.meta)
        if identity.phone_raw and not identity.phone:
            meta["phone_invalid"] = "1"
        email_key = fold_email(identity.email) if identity.email and self.policy.fold_email else None
        return InquiryRow(
            id=envelope.id,
            key=envelope.key,
            channel=envelope.channel,
            connector=envelope.connector,
            received_at=envelope.received_at.astimezone(UTC),
            content_type=envelope.content_type,
            payload=envelope.payload,
            meta=meta,
            name=identity.name,
            email=identity.email,
            phone=identity.phone,
            phone_raw=identity.phone_raw,
            phone_digits=identity.phone_digits,
            company=identity.company,
            message=draft.message,
            title=draft.title,
            fields=draft.fields,
            attribution=draft.attribution,
            dropped=draft.dropped,
            tags=list(draft.tags),
            opens_lead=draft.opens_lead,
            message_id=draft.message_id,
            thread_refs=list(draft.thread_refs),
            order=draft.order,
            repeat_keys=draft.repeat_keys,
            repeat_window=draft.repeat_window,
            email_key=email_key,
            email_alias=identity.email if email_key and email_key != identity.email else None,
            messenger=identity.messenger,
            customer=f"{_shop(draft)}:{identity.customer_id}" if identity.customer_id else None,
            consent=consent_from_fields(draft.fields),
        )

    async def store(self, rows: Sequence[InquiryRow]) -> BatchResult:
        """Write `rows` in one transaction; raises on any failure and leaves nothing half-written."""
        async with self.engine.begin() as conn:
            return await write_batch(conn, rows, self.clock(), self.policy)

    async def store_one(
        self, row: InquiryRow, on_conflict: Callable[[BaseException], None] = lambda exc: None
    ) -> BatchResult:
        """Store one row, trying again at once while its transaction loses a race (the daemon's pipeline, a replay
        of the same dead letter, another replica storing the same person): `on_conflict` hears of each loss. A lost
        race is not a failure of the row: counted as one, a few workers racing could dead-letter a good envelope."""
        for _ in range(CONFLICT_TRIES - 1):
            try:
                return await self.store([row])
            except Exception as exc:
                if classify(exc) is not Failure.CONFLICT:
                    raise
                on_conflict(exc)
        return await self.store([row])


def _shop(draft: InquiryDraft) -> str:
    """Whose customer ids these are: the envelope's connector, or the one a poller reads the orders of."""
    return (draft.order.source if draft.order is not None else None) or draft.envelope.connector
