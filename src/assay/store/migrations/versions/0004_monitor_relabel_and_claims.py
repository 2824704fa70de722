"""monitor cursors remember the labels judged with; webhook deliveries remember when they were claimed

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_cursors") as batch:
        batch.add_column(sa.Column("labels_seen", sa.Integer(), nullable=True))
    with op.batch_alter_table("monitor_events") as batch:
        batch.add_column(sa.Column("claimed_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_events") as batch:
        batch.drop_column("claimed_at")
    with op.batch_alter_table("monitor_cursors") as batch:
        batch.drop_column("labels_seen")
