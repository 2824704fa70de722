"""The store's tables: every table of the schema as SQLAlchemy metadata, grouped by the domain that owns it.

The migrations in ``store/migrations`` create exactly these (``metadata`` is Alembic's target);
the domain packages read and write them through SQLAlchemy Core.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# --- registry -----------------------------------------------------------------

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("task", sa.String(20), nullable=False),  # binary | multiclass
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), sa.ForeignKey("models.name"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("candidate", sa.String(100), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),  # the spec as a mapping, gates included
    sa.Column("spec_hash", sa.String(64), nullable=False),
    sa.Column("data_fingerprint", sa.String(64), nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),  # headline metrics, for listings and gates
    sa.Column("lineage", sa.JSON, nullable=False),
    sa.Column("manifest", sa.JSON, nullable=False),  # artifact file name -> sha256
    sa.UniqueConstraint("model", "version", name="uq_versions_model_version"),
)

aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("model", sa.String(200), sa.ForeignKey("models.name"), primary_key=True),
    sa.Column("alias", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

alias_events = sa.Table(
    "alias_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("alias", sa.String(100), nullable=False),
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("forced", sa.Boolean, nullable=False),
    sa.Column("gates", sa.JSON, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

# --- serving ------------------------------------------------------------------

feature_rows = sa.Table(
    "feature_rows",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("item_id", sa.String(200), primary_key=True),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),  # may forget items
)


# --- unlearning ---------------------------------------------------------------
# Deletion requests (owned by assay.unlearning). The audit keeps who, when, salted hashes of the
# ids and what changed, never the deleted content or the ids themselves.

forget_requests = sa.Table(
    "forget_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("models", sa.JSON, nullable=False),  # the model names the request covers
    sa.Column("status", sa.String(20), nullable=False),  # running | done | failed
    sa.Column("id_hashes", sa.JSON, nullable=False),  # salted hash of each id asked for
    sa.Column("unknown", sa.JSON, nullable=False),  # hashes of the ids found nowhere
    sa.Column("stores", sa.JSON, nullable=False),  # store -> rows deleted
    sa.Column("versions", sa.JSON, nullable=False),  # versions replaced and retired, and how
    sa.Column("files", sa.JSON, nullable=False),  # data files the user owns that still hold ids
    sa.Column("verification", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("seconds", sa.Float, nullable=True),
)

# The exclusion list every training honours: (model, salted id hash), with the request that added it.
forgotten_ids = sa.Table(
    "forgotten_ids",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.Integer, nullable=False),
    # How id_hash was made (assay.unlearning.exclusions): entries keep the scheme they were listed by.
    sa.Column("scheme", sa.String(20), nullable=False, server_default="blake2b"),
)

# Versions that held forgotten data: no alias may point at them again.
retired_versions = sa.Table(
    "retired_versions",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("request_id", sa.Integer, nullable=False),
    sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("artifacts_deleted", sa.Boolean, nullable=False),
)

# The workspace's salt for id hashes (one row), made at the first request.
unlearning_salt = sa.Table(
    "unlearning_salt",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("salt", sa.String(64), nullable=False),
)


# --- notices ------------------------------------------------------------------
# What every process serving the store must hear about: an alias moved, an item's features
# changed (owned by store/notices.py). A row each; PostgreSQL also NOTIFYs listeners when one
# commits, other stores' watchers poll for ids above the last they saw.

label_exports = sa.Table(
    "label_exports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("path", sa.Text, nullable=False, unique=True),  # absolute path of the file written
    sa.Column("campaign", sa.String(100), nullable=False),
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False),  # of the file as assay last wrote it
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
)

notices = sa.Table(
    "notices",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("topic", sa.String(50), nullable=False),  # aliases | features
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


# accounts.py, campaigns.py, worksets.py, labelling.py, judgments.py). The unique constraints are the concurrency
# guarantees: a reviewer holds at most one assignment per item, and an item's
# occupied slots (1..wanted) are unique, so no item is over-labelled.

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(100), nullable=False, unique=True),
    sa.Column("pseudonym", sa.String(40), nullable=False, unique=True),  # what exports show
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),  # admin | reviewer
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
)

user_sessions = sa.Table(
    "user_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),  # the version whose scores reviewers see
    sa.Column("classes", sa.JSON, nullable=False),  # label choices besides "unsure"
    sa.Column("labels_per_item", sa.Integer, nullable=False),
    # Labels an item may get beyond labels_per_item while its votes tie (0: ties go to an admin).
    sa.Column("extra_labels", sa.Integer, nullable=False, server_default="0"),
    sa.Column("guidelines", sa.Text, nullable=False, server_default=""),  # shown to reviewers
    sa.Column("class_descriptions", sa.JSON, nullable=False, server_default="{}"),  # class -> meaning
    sa.Column("reviewers", sa.JSON, nullable=False),  # usernames allowed to label; empty: everyone
    sa.Column("blind", sa.Boolean, nullable=False),
    sa.Column("selection", sa.JSON, nullable=False),  # how the items were chosen, for the record
    sa.Column("auto_rules", sa.JSON, nullable=False),
    sa.Column("link_template", sa.String(500), nullable=True),
    sa.Column("judgment_rule", sa.String(20), nullable=False),  # admin | most_endorsed
    sa.Column("status", sa.String(10), nullable=False),  # open | closed
    sa.Column("item_count", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

campaign_items = sa.Table(
    "campaign_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # the order items are handed out in
    sa.Column("item_id", sa.String(200), nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("probabilities", sa.JSON, nullable=True),  # class -> probability from model_version
    sa.Column("prediction", sa.String(200), nullable=True),
    sa.Column("explanation", sa.JSON, nullable=True),
    sa.Column("auto_label", sa.String(200), nullable=True),
    sa.Column("auto_rule", sa.String(500), nullable=True),
    # Class labels the item wants: labels_per_item, one more for each tie (up to the campaign's extra).
    sa.Column("wanted", sa.Integer, nullable=False, server_default="1"),
    sa.Column("claimed", sa.Integer, nullable=False),  # slots taken by open or done assignments
    sa.Column("available", sa.Boolean, nullable=False),  # claimed < wanted and not auto-labelled
    sa.UniqueConstraint("campaign_id", "item_id", name="uq_campaign_items_item"),
    sa.Index("ix_campaign_items_pool", "campaign_id", "available", "position"),
)

worksets = sa.Table(
    "worksets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_worksets_user", "campaign_id", "user_id", "expires_at"),
    sa.Index("ix_worksets_expiry", "campaign_id", "expires_at"),
)

assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("workset_id", sa.Integer, sa.ForeignKey("worksets.id", ondelete="CASCADE"), nullable=False),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    sa.Column(
        "campaign_item_id", sa.Integer, sa.ForeignKey("campaign_items.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    # NULL once skipped, expired or answered unsure: the slot goes back to the pool, the row keeps the item from
    # coming back to this reviewer.
    sa.Column("slot", sa.Integer, nullable=True),
    sa.Column("state", sa.String(10), nullable=False),  # open | done | unsure | skipped | expired
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("campaign_item_id", "user_id", name="uq_assignments_item_user"),
    sa.UniqueConstraint("campaign_item_id", "slot", name="uq_assignments_item_slot"),
    sa.Index("ix_assignments_workset", "workset_id", "state"),
    sa.Index("ix_assignments_user", "campaign_id", "user_id", "state"),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    sa.Column(
        "campaign_item_id", sa.Integer, sa.ForeignKey("campaign_items.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("label", sa.String(200), nullable=False),  # a class or "unsure"
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("shown_prediction", sa.String(200), nullable=True),  # NULL in blind campaigns
    sa.Column("shown_probability", sa.Float, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("campaign_item_id", "user_id", name="uq_labels_item_user"),
    sa.Index("ix_labels_campaign_user", "campaign_id", "user_id"),
    sa.Index("ix_labels_campaign_item", "campaign_id", "campaign_item_id", "label"),  # agreement counts
)

judgments = sa.Table(
    "judgments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("item_id", sa.String(200), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id", ondelete="SET NULL"), nullable=True),
    sa.Column("label", sa.String(200), nullable=False),  # what the item really is, in the judge's view
    sa.Column("rationale", sa.Text, nullable=False),
    sa.Column("model_prediction", sa.String(200), nullable=True),
    sa.Column("author_user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("author_token", sa.String(200), nullable=True),  # name of the API token a product used
    sa.Column("preferred", sa.Boolean, nullable=False),
    sa.Column("preferred_by", sa.String(200), nullable=True),
    sa.Column("preferred_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_judgments_item", "model", "item_id"),
    # At most one preferred judgment per item, whatever races between admins and rules.
    sa.Index(
        "uq_judgments_preferred",
        "model",
        "item_id",
        unique=True,
        sqlite_where=sa.text("preferred"),
        postgresql_where=sa.text("preferred"),
    ),
)

endorsements = sa.Table(
    "endorsements",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("judgment_id", sa.Integer, sa.ForeignKey("judgments.id", ondelete="CASCADE"), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("stance", sa.String(10), nullable=False),  # endorse | dispute
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("judgment_id", "user_id", name="uq_endorsements_judgment_user"),
)


# --- monitoring ---------------------------------------------------------------
# The prediction log, ground-truth labels and monitor states (owned by assay.monitoring).
# Log times are UNIX seconds (a float), not DateTime: a drift check reads a million of them,
# and parsing a million timestamps would cost more than the statistics.

# The log keeps rows in chunks, as the writer wrote them (up to 65,536 rows): the rows' times,
# encoded features and class probabilities packed as little-endian float64 in one blob, their
# item ids as a JSON list. A window of a million rows is then a few dozen blobs to read, where a
# row each would have the driver build millions of objects.
prediction_log = sa.Table(
    "prediction_log",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("at_min", sa.Float, nullable=False),
    sa.Column("at_max", sa.Float, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("ids", sa.Text, nullable=True),  # JSON list of item ids (null entries for rows without)
    sa.Index("ix_prediction_log_model_at", "model", "version", "at_min"),
)

# Which logged chunks hold an item's scores: labels are checked against it and join through it.
# One B-tree (no rowid on SQLite): the writer adds a row here for every score it logs, and each
# index more would cost it a B-tree insert more. Rows of deleted chunks are purged now and then.
prediction_items = sa.Table(
    "prediction_items",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("item_id", sa.String(200), primary_key=True),
    sa.Column("chunk_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
    sqlite_with_rowid=False,
)

monitor_labels = sa.Table(
    "monitor_labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("item_id", sa.String(200), nullable=False),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("source", sa.String(300), nullable=False),  # api:<token> | file:<name> | campaign:<name>
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("model", "item_id", name="uq_monitor_labels_item"),
)

monitor_states = sa.Table(
    "monitor_states",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("monitor", sa.String(300), primary_key=True),  # data_drift | feature:<name> | performance ...
    sa.Column("state", sa.String(10), nullable=False),  # ok | warning | alert
    sa.Column("drifting", sa.Integer, nullable=False),  # consecutive drifting windows
    sa.Column("clean", sa.Integer, nullable=False),  # consecutive clean windows while in alert
    sa.Column("value", sa.Float, nullable=True),  # the last window's statistic
    sa.Column("window_end", sa.Float, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Where each model's evaluation of closed windows has got to: one window is judged once.
monitor_cursors = sa.Table(
    "monitor_cursors",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),  # time | count
    sa.Column("position", sa.Float, nullable=False),  # a window end (time) or the last log row id (count)
    sa.Column("labels_seen", sa.Integer, nullable=True),  # the labels' mark judged with (label_mark)
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

monitor_events = sa.Table(
    "monitor_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("monitor", sa.String(300), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # state | adwin | ddm
    sa.Column("from_state", sa.String(10), nullable=True),
    sa.Column("to_state", sa.String(10), nullable=False),
    sa.Column("window_start", sa.Float, nullable=True),
    sa.Column("window_end", sa.Float, nullable=True),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("delivery", sa.String(10), nullable=False),  # none | pending | sending | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("claimed_at", sa.Float, nullable=True),  # UNIX seconds a sender took it ("sending")
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_monitor_events_model", "model", "id"),
    sa.Index("ix_monitor_events_delivery", "delivery"),
)

# --- retraining -----------------------------------------------------------------
# One row per retraining run, whatever its outcome: the run is inserted as "running" before any
# data is read and finished in one update, so a run killed half-way stays visible (and is marked
# "interrupted" by the next run of the model once its process is gone).

retrain_runs = sa.Table(
    "retrain_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("trigger", sa.String(200), nullable=False),  # manual | schedule | labels:<n> | alert:<monitor>
    sa.Column(
        "status", sa.String(20), nullable=False
    ),  # running | promoted | kept | refused | failed | interrupted
    sa.Column("champion_version", sa.Integer, nullable=True),
    sa.Column("challenger_version", sa.Integer, nullable=True),
    sa.Column("message", sa.Text, nullable=False),  # the decision in one line
    sa.Column("labels", sa.JSON, nullable=True),  # the label snapshot the challenger learnt from
    sa.Column("comparison", sa.JSON, nullable=True),  # champion vs challenger, and the gates
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_retrain_runs_model", "model", "id"),
)
