"""identity: contact merges and their journal, consent and review flags, lead touches

Revision ID: 0005
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
# Only merged rows are indexed: a full index would lead planners to scan it for `merged_into IS NULL`.
MERGED = sa.text("merged_into IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("contact") as batch:
        batch.add_column(sa.Column("consent", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("merged_into", sa.String(length=26), nullable=True))
        batch.add_column(sa.Column("review", sa.JSON(), nullable=True))
        batch.create_index(
            batch.f("ix_contact_merged_into"), ["merged_into"], sqlite_where=MERGED, postgresql_where=MERGED
        )
    with op.batch_alter_table("lead") as batch:
        batch.add_column(sa.Column("first_touch_at", TIME, nullable=True))
        batch.add_column(sa.Column("last_touch_at", TIME, nullable=True))
        batch.add_column(sa.Column("merged_into", sa.String(length=26), nullable=True))
        batch.create_index(
            batch.f("ix_lead_merged_into"), ["merged_into"], sqlite_where=MERGED, postgresql_where=MERGED
        )
    # Leads from before this revision: their first touch is when they were opened.
    op.execute("UPDATE lead SET first_touch_at = created_at, last_touch_at = created_at")
    op.create_table(
        "contact_merge",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("survivor_id", sa.String(length=26), nullable=False),
        sa.Column("merged_id", sa.String(length=26), nullable=False),
        sa.Column("inquiry_id", sa.String(length=26), nullable=True),
        sa.Column("moved", sa.JSON(), nullable=False),
        sa.Column("before", sa.JSON(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("undone_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_merge")),
    )
    op.create_index(op.f("ix_contact_merge_survivor_id"), "contact_merge", ["survivor_id"])
    op.create_index(op.f("ix_contact_merge_merged_id"), "contact_merge", ["merged_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_contact_merge_merged_id"), table_name="contact_merge")
    op.drop_index(op.f("ix_contact_merge_survivor_id"), table_name="contact_merge")
    op.drop_table("contact_merge")
    with op.batch_alter_table("lead") as batch:
        batch.drop_index(batch.f("ix_lead_merged_into"))
        batch.drop_column("merged_into")
        batch.drop_column("last_touch_at")
        batch.drop_column("first_touch_at")
    with op.batch_alter_table("contact") as batch:
        batch.drop_index(batch.f("ix_contact_merged_into"))
        batch.drop_column("review")
        batch.drop_column("merged_into")
        batch.drop_column("consent")
