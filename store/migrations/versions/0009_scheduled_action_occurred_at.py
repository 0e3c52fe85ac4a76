"""scheduled action occurred at: when a run's event occurred, so a throttle counts its window from then and not from
when the event was handled (after a backlog, events a period apart were handled seconds apart and throttled each
other); None for runs scheduled before it, which count from created_at

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scheduled_action") as batch:
        batch.add_column(sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scheduled_action") as batch:
        batch.drop_column("occurred_at")
