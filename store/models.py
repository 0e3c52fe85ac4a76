"""SQLAlchemy 2 typed models: the tables, their keys and the constraints that keep data unique."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(26)
UTC_TIME = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTC_TIME}


def _merged_index(table: str) -> Index:
    merged = text("merged_into IS NOT NULL")
    return Index(f"ix_{table}_merged_into", "merged_into", sqlite_where=merged, postgresql_where=merged)


class Contact(Base):
    __tablename__ = "contact"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    company: Mapped[str | None] = mapped_column(String(200))
    # "granted" or "withdrawn" when the person said so (a form's consent field); None: never asked.
    consent: Mapped[str | None] = mapped_column(String(10))
    # Set when this contact was merged into another; the row stays so the merge can be taken back.
    merged_into: Mapped[str | None] = mapped_column(String(26))
    # Why a person must look at this contact (e.g. a merge refused for conflicting consent), or None.
    review: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    # Only merged contacts are indexed: a full index would lead planners to scan it for `IS NULL`.
    __table_args__ = (_merged_index("contact"),)


class ContactIdentifier(Base):
    """One way to recognise a contact; unique so two contacts never share one.

    Kinds: `email` (folded when the setting asks), `phone` (E.164), `phone_digits` (the digits of a number that is
    no valid one, as written), `messenger` (`telegram:<id>`), `customer` (`<connector>:<shop customer id>`).
    """

    __tablename__ = "contact_identifier"

    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contact.id"), index=True)
    created_at: Mapped[datetime]


class Lead(Base):
    __tablename__ = "lead"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contact.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="new")
    owner: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    channel: Mapped[str] = mapped_column(String(20))
    connector: Mapped[str] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(300))
    message: Mapped[str | None] = mapped_column(Text)
    attribution: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # When the person first and last reached in about this lead (the inquiries' received_at).
    first_touch_at: Mapped[datetime | None]
    last_touch_at: Mapped[datetime | None]
    # Set when this lead was folded into another one by a contact merge.
    merged_into: Mapped[str | None] = mapped_column(String(26))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (_merged_index("lead"),)


class ContactMerge(Base):
    """The journal of one merge: what moved from `merged_id` to `survivor_id`, so it can be taken back exactly."""

    __tablename__ = "contact_merge"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    survivor_id: Mapped[str] = mapped_column(String(26), index=True)
    merged_id: Mapped[str] = mapped_column(String(26), index=True)
    inquiry_id: Mapped[str | None] = mapped_column(String(26))  # the inquiry that showed they are one person
    # table -> primary keys of the rows that moved; `lead_folds`: the folds; `columns_set`: the values the merge
    # left in the columns it changed, so an unmerge leaves alone a column changed since (store/merge_journal.py)
    moved: Mapped[dict[str, Any]]
    before: Mapped[dict[str, Any]]  # table -> {primary key: {column: value before}} for rows the merge changed
    created_at: Mapped[datetime]
    undone_at: Mapped[datetime | None]


class ContactApart(Base):
    """A pair of contacts a person decided to keep apart (both directions stored): they are not merged, nor a
    consent conflict between them flagged for review again; read through merges (store/kept_apart.py)."""

    __tablename__ = "contact_apart"

    contact_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    other_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    decided_at: Mapped[datetime]


class Inquiry(Base):
    """One inbound item exactly as received, with what was read from it; unique on its key."""

    __tablename__ = "inquiry"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    key: Mapped[str] = mapped_column(String(400), unique=True)
    channel: Mapped[str] = mapped_column(String(20))
    connector: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    contact_id: Mapped[str | None] = mapped_column(ForeignKey("contact.id"), index=True)
    lead_id: Mapped[str | None] = mapped_column(ForeignKey("lead.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(300))  # an e-mail's subject; None before revision 0010
    message: Mapped[str | None] = mapped_column(Text)
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dropped: Mapped[str | None] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(200))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_inquiry_received", "received_at", "id"),)


class OutboxEvent(Base):
    """A domain event written in the same transaction as the change; the relay publishes it."""

    __tablename__ = "outbox_event"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str | None] = mapped_column(String(26))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    published_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "ix_outbox_unpublished",
            "id",
            sqlite_where=text("published_at IS NULL"),
            postgresql_where=text("published_at IS NULL"),
        ),
    )


class DeadLetter(Base):
    """An item that could not be processed, with the reason and everything needed to replay it."""

    __tablename__ = "dead_letter"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    source: Mapped[str] = mapped_column(String(40))
    key: Mapped[str | None] = mapped_column(String(400), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(String(200))
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    headers: Mapped[dict[str, Any]]
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    replays: Mapped[int] = mapped_column(Integer, default=0)
    replayed_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    # "<stream>:<stream sequence>" of the queue message it was recorded from: a redelivery of that message (its ack
    # lost) finds it instead of recording the item again.
    queue_message: Mapped[str | None] = mapped_column(String(80), index=True)


class ConnectorState(Base):
    """A connector's checkpoint (IMAP UIDVALIDITY and last UID, a poller's cursor, ...)."""

    __tablename__ = "connector_state"

    connector: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class EmailMessage(Base):
    """A Message-ID seen (inbound) or sent (outbound), so a reply finds the lead it belongs to."""

    __tablename__ = "email_message"

    message_id: Mapped[str] = mapped_column(String(500), primary_key=True)
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    inquiry_id: Mapped[str | None] = mapped_column(String(26), index=True)
    lead_id: Mapped[str | None] = mapped_column(String(26), index=True)
    created_at: Mapped[datetime]


class EmailSuppression(Base):
    """An address leadhub must not mail: it bounced, complained, or unsubscribed."""

    __tablename__ = "email_suppression"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))  # bounce | complaint | unsubscribe
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class Order(Base):
    """A shop order, one row per (connector, external id); its status is leadhub's, the provider's is kept beside it.

    `contact_id` and `lead_id` carry no foreign keys so the order can be written in the same
    batch as the contact and lead it points to, before the batch's bulk inserts.
    """

    __tablename__ = "shop_order"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    connector: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(200))
    number: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))  # new | paid | fulfilled | completed | cancelled | refunded
    provider_status: Mapped[str | None] = mapped_column(String(64))
    total: Mapped[str | None] = mapped_column(String(40))  # a decimal as text: exact, and JSON-friendly
    currency: Mapped[str | None] = mapped_column(String(8))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    customer: Mapped[dict[str, Any]] = mapped_column(default=dict)  # name, email, phone, address
    contact_id: Mapped[str | None] = mapped_column(String(26), index=True)
    lead_id: Mapped[str | None] = mapped_column(String(26), index=True)
    placed_at: Mapped[datetime | None]
    provider_updated_at: Mapped[datetime | None]
    status_changed_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    fulfilled_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    refunded_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("connector", "external_id", name="uq_shop_order_connector_external_id"),)


class ScheduledAction(Base):
    """One action a rule decided to run for one event, unique per (rule, event, action index), with its outcome."""

    __tablename__ = "scheduled_action"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    rule_id: Mapped[str] = mapped_column(String(100), index=True)
    action_index: Mapped[int] = mapped_column(Integer)
    action_type: Mapped[str] = mapped_column(String(40))
    # The rule's actions when this run was scheduled, a digest each (triggers/edits.py): the run finds its action
    # in the rule as edited since. None for runs scheduled before 0008: found by index and type.
    do_digest: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(64))
    event: Mapped[dict[str, Any]]
    group_key: Mapped[str] = mapped_column(String(300), index=True)  # rule + subject: what `mode` looks at
    throttle_key: Mapped[str | None] = mapped_column(String(300), index=True)
    # When the event occurred, as the throttle counts it (triggers/throttle.py `throttled_at`): its `occurred_at`, but
    # never after `created_at`. None for runs scheduled before 0009: they count from `created_at`.
    occurred_at: Mapped[datetime | None]
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(12))  # pending | running | done | failed | cancelled | throttled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_scheduled_action_status_due", "status", "due_at"),)


class RuleTrace(Base):
    """One evaluation of a rule against an event: matched or not, and each condition's result."""

    __tablename__ = "rule_trace"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(100), index=True)
    event_id: Mapped[str] = mapped_column(String(100), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    matched: Mapped[bool]
    reason: Mapped[str | None] = mapped_column(Text)
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("rule_id", "event_id", name="uq_rule_trace_rule_id_event_id"),)


class Task(Base):
    """A task for a manager, created by a rule's `create_task`; its id derives from the action key (once only)."""

    __tablename__ = "task"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    note: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[datetime | None]
    assignee: Mapped[str | None] = mapped_column(String(200))
    lead_id: Mapped[str | None] = mapped_column(String(26), index=True)
    contact_id: Mapped[str | None] = mapped_column(String(26), index=True)
    rule_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(12))  # open | done
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Feedback(Base):
    """A survey answer: one per order (the first answer counts), score 0-10 and a comment."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    order_id: Mapped[str | None] = mapped_column(String(26), unique=True)
    contact_id: Mapped[str | None] = mapped_column(String(26), index=True)
    lead_id: Mapped[str | None] = mapped_column(String(26))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
