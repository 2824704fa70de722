"""forgotten_ids.scheme: how each listed id hash was made, so entries listed before a faster
hash keep matching by theirs

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forgotten_ids") as batch:
        batch.add_column(sa.Column("scheme", sa.String(length=20), nullable=False, server_default="blake2b"))


def downgrade() -> None:
    with op.batch_alter_table("forgotten_ids") as batch:
        batch.drop_column("scheme")
