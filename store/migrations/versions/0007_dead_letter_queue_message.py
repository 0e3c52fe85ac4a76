"""dead letter queue message: the queue message a dead letter was recorded from, so its redelivery after a crash
between the commit and the ack finds it instead of recording it again

Revision ID: 0007
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letter") as batch:
        batch.add_column(sa.Column("queue_message", sa.String(length=80), nullable=True))
        batch.create_index(batch.f("ix_dead_letter_queue_message"), ["queue_message"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dead_letter") as batch:
        batch.drop_index(batch.f("ix_dead_letter_queue_message"))
        batch.drop_column("queue_message")
