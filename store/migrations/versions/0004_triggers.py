"""rule engine: scheduled actions, rule traces, tasks, survey feedback

Revision ID: 0004
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scheduled_action",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("action_index", sa.Integer(), nullable=False),
        sa.Column("action_type", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("group_key", sa.String(length=300), nullable=False),
        sa.Column("throttle_key", sa.String(length=300), nullable=True),
        sa.Column("due_at", TIME, nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", TIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_action")),
        sa.UniqueConstraint("key", name=op.f("uq_scheduled_action_key")),
    )
    op.create_index(op.f("ix_scheduled_action_rule_id"), "scheduled_action", ["rule_id"])
    op.create_index(op.f("ix_scheduled_action_group_key"), "scheduled_action", ["group_key"])
    op.create_index(op.f("ix_scheduled_action_throttle_key"), "scheduled_action", ["throttle_key"])
    op.create_index("ix_scheduled_action_status_due", "scheduled_action", ["status", "due_at"])
    op.create_table(
        "rule_trace",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_trace")),
        sa.UniqueConstraint("rule_id", "event_id", name="uq_rule_trace_rule_id_event_id"),
    )
    op.create_index(op.f("ix_rule_trace_rule_id"), "rule_trace", ["rule_id"])
    op.create_index(op.f("ix_rule_trace_event_id"), "rule_trace", ["event_id"])
    op.create_table(
        "task",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("due_at", TIME, nullable=True),
        sa.Column("assignee", sa.String(length=200), nullable=True),
        sa.Column("lead_id", sa.String(length=26), nullable=True),
        sa.Column("contact_id", sa.String(length=26), nullable=True),
        sa.Column("rule_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task")),
    )
    op.create_index(op.f("ix_task_lead_id"), "task", ["lead_id"])
    op.create_index(op.f("ix_task_contact_id"), "task", ["contact_id"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("order_id", sa.String(length=26), nullable=True),
        sa.Column("contact_id", sa.String(length=26), nullable=True),
        sa.Column("lead_id", sa.String(length=26), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
        sa.UniqueConstraint("order_id", name=op.f("uq_feedback_order_id")),
    )
    op.create_index(op.f("ix_feedback_contact_id"), "feedback", ["contact_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("task")
    op.drop_table("rule_trace")
    op.drop_table("scheduled_action")
