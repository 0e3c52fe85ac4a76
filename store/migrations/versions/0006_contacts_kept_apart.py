"""contacts kept apart: the pairs a person decided are not one person, so a consent conflict between them is not
flagged for review again

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contact_apart",
        sa.Column("contact_id", sa.String(length=26), nullable=False),
        sa.Column("other_id", sa.String(length=26), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "other_id", name=op.f("pk_contact_apart")),
    )


def downgrade() -> None:
    op.drop_table("contact_apart")
