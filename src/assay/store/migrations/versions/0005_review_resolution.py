"""review resolution: extra labels for ties, guidelines and class descriptions, labels an item wants

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("extra_labels", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("guidelines", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("class_descriptions", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("campaign_items") as batch:
        batch.add_column(sa.Column("wanted", sa.Integer(), nullable=False, server_default="1"))
    # Existing items want what their campaign asked for.
    op.execute(
        "UPDATE campaign_items SET wanted = "
        "(SELECT labels_per_item FROM campaigns WHERE campaigns.id = campaign_items.campaign_id)"
    )
    # An "unsure" no longer holds a slot: give those slots back, so that stalled items go to others.
    op.execute(
        "UPDATE assignments SET state = 'unsure', slot = NULL WHERE state = 'done' AND EXISTS "
        "(SELECT 1 FROM labels WHERE labels.campaign_item_id = assignments.campaign_item_id "
        "AND labels.user_id = assignments.user_id AND labels.label = 'unsure')"
    )
    op.execute(
        "UPDATE campaign_items SET claimed = (SELECT COUNT(*) FROM assignments "
        "WHERE assignments.campaign_item_id = campaign_items.id AND assignments.state IN ('open', 'done'))"
    )
    op.execute(sa.text("UPDATE campaign_items SET available = (claimed < wanted AND auto_label IS NULL)"))


def downgrade() -> None:
    with op.batch_alter_table("campaign_items") as batch:
        batch.drop_column("wanted")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("class_descriptions")
        batch.drop_column("guidelines")
        batch.drop_column("extra_labels")
