"""review tables: users, sessions, campaigns, items, worksets, assignments, labels, judgments

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("labels_per_item", sa.Integer(), nullable=False),
        sa.Column("reviewers", sa.JSON(), nullable=False),
        sa.Column("blind", sa.Boolean(), nullable=False),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("auto_rules", sa.JSON(), nullable=False),
        sa.Column("link_template", sa.String(length=500), nullable=True),
        sa.Column("judgment_rule", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("pseudonym", sa.String(length=40), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pseudonym"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "campaign_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=True),
        sa.Column("prediction", sa.String(length=200), nullable=True),
        sa.Column("explanation", sa.JSON(), nullable=True),
        sa.Column("auto_label", sa.String(length=200), nullable=True),
        sa.Column("auto_rule", sa.String(length=500), nullable=True),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "item_id", name="uq_campaign_items_item"),
    )
    op.create_index(
        "ix_campaign_items_pool", "campaign_items", ["campaign_id", "available", "position"], unique=False
    )
    op.create_table(
        "judgments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("model_prediction", sa.String(length=200), nullable=True),
        sa.Column("author_user_id", sa.Integer(), nullable=True),
        sa.Column("author_token", sa.String(length=200), nullable=True),
        sa.Column("preferred", sa.Boolean(), nullable=False),
        sa.Column("preferred_by", sa.String(length=200), nullable=True),
        sa.Column("preferred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_user_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_judgments_item", "judgments", ["model", "item_id"], unique=False)
    op.create_index(
        "uq_judgments_preferred",
        "judgments",
        ["model", "item_id"],
        unique=True,
        sqlite_where=sa.text("preferred"),
        postgresql_where=sa.text("preferred"),
    )
    op.create_table(
        "user_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index(op.f("ix_user_sessions_user_id"), "user_sessions", ["user_id"], unique=False)
    op.create_table(
        "worksets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_worksets_expiry", "worksets", ["campaign_id", "expires_at"], unique=False)
    op.create_index("ix_worksets_user", "worksets", ["campaign_id", "user_id", "expires_at"], unique=False)
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("workset_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("campaign_item_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["campaign_item_id"], ["campaign_items.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(["workset_id"], ["worksets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_item_id", "slot", name="uq_assignments_item_slot"),
        sa.UniqueConstraint("campaign_item_id", "user_id", name="uq_assignments_item_user"),
    )
    op.create_index("ix_assignments_user", "assignments", ["campaign_id", "user_id", "state"], unique=False)
    op.create_index("ix_assignments_workset", "assignments", ["workset_id", "state"], unique=False)
    op.create_table(
        "endorsements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("judgment_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("stance", sa.String(length=10), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["judgment_id"], ["judgments.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("judgment_id", "user_id", name="uq_endorsements_judgment_user"),
    )
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("campaign_item_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("shown_prediction", sa.String(length=200), nullable=True),
        sa.Column("shown_probability", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["campaign_item_id"], ["campaign_items.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_item_id", "user_id", name="uq_labels_item_user"),
    )
    op.create_index(
        "ix_labels_campaign_item", "labels", ["campaign_id", "campaign_item_id", "label"], unique=False
    )
    op.create_index("ix_labels_campaign_user", "labels", ["campaign_id", "user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_labels_campaign_user", table_name="labels")
    op.drop_index("ix_labels_campaign_item", table_name="labels")
    op.drop_table("labels")
    op.drop_table("endorsements")
    op.drop_index("ix_assignments_workset", table_name="assignments")
    op.drop_index("ix_assignments_user", table_name="assignments")
    op.drop_table("assignments")
    op.drop_index("ix_worksets_user", table_name="worksets")
    op.drop_index("ix_worksets_expiry", table_name="worksets")
    op.drop_table("worksets")
    op.drop_index(op.f("ix_user_sessions_user_id"), table_name="user_sessions")
    op.drop_table("user_sessions")
    op.drop_index(
        "uq_judgments_preferred",
        table_name="judgments",
        sqlite_where=sa.text("preferred"),
        postgresql_where=sa.text("preferred"),
    )
    op.drop_index("ix_judgments_item", table_name="judgments")
    op.drop_table("judgments")
    op.drop_index("ix_campaign_items_pool", table_name="campaign_items")
    op.drop_table("campaign_items")
    op.drop_table("users")
    op.drop_table("campaigns")
