"""inquiry title: each inquiry's own title (an e-mail's subject, a chat's or call's heading), which was read and then
only given to a new lead, so a reply's subject was kept nowhere; None for inquiries stored before it

Revision ID: 0010
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inquiry") as batch:
        batch.add_column(sa.Column("title", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inquiry") as batch:
        batch.drop_column("title")
