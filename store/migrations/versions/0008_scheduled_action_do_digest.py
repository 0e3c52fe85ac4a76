"""scheduled action do digest: the rule's actions when a run was scheduled, a digest each, so a waiting run finds its
action in the rule as edited since (an action added in front of it no longer makes it run its neighbour)

Revision ID: 0008
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scheduled_action") as batch:
        batch.add_column(sa.Column("do_digest", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scheduled_action") as batch:
        batch.drop_column("do_digest")
