"""email threading and suppression tables

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_message",
        sa.Column("message_id", sa.String(length=500), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("inquiry_id", sa.String(length=26), nullable=True),
        sa.Column("lead_id", sa.String(length=26), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_email_message")),
    )
    op.create_index(op.f("ix_email_message_inquiry_id"), "email_message", ["inquiry_id"])
    op.create_index(op.f("ix_email_message_lead_id"), "email_message", ["lead_id"])
    op.create_table(
        "email_suppression",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_email_suppression")),
    )


def downgrade() -> None:
    op.drop_table("email_suppression")
    op.drop_index(op.f("ix_email_message_lead_id"), table_name="email_message")
    op.drop_index(op.f("ix_email_message_inquiry_id"), table_name="email_message")
    op.drop_table("email_message")
