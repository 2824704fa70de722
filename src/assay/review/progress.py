"""How far a campaign is, counted in the store (never by loading the items)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.review.campaigns import UNSURE, Campaign
from assay.store import tables

items_t = tables.campaign_items
asg_t = tables.assignments
labels_t = tables.labels


@dataclass(frozen=True)
class Progress:
    """How far a campaign is, counted in the store (never by loading the items)."""

    items: int
    auto_labelled: int
    labels: int
    labels_needed: int
    complete_items: int
    reviewers: list[dict[str, Any]]

    @property
    def fraction(self) -> float:
        return self.labels / self.labels_needed if self.labels_needed else 1.0

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["fraction"] = self.fraction
        return out


def _reviewers(conn: Connection, campaign: Campaign) -> list[dict[str, Any]]:
    """Each reviewer's class labels, unsure and skips in the campaign, most labels first."""
    label_counts = conn.execute(
        sa.select(
            labels_t.c.user_id,
            sa.func.sum(sa.case((labels_t.c.label != UNSURE, 1), else_=0)).label("labels"),
            sa.func.sum(sa.case((labels_t.c.label == UNSURE, 1), else_=0)).label("unsure"),
        )
        .where(labels_t.c.campaign_id == campaign.id)
        .group_by(labels_t.c.user_id)
    ).all()
    skip_counts: dict[int, int] = dict(
        conn.execute(
            sa.select(asg_t.c.user_id, sa.func.count())
            .where(asg_t.c.campaign_id == campaign.id, asg_t.c.state == "skipped")
            .group_by(asg_t.c.user_id)
        ).all()
    )
    users = conn.execute(
        sa.select(tables.users.c.id, tables.users.c.username, tables.users.c.pseudonym)
        .where(tables.users.c.id.in_({r.user_id for r in label_counts} | set(skip_counts)))
        .order_by(tables.users.c.id)
    ).all()
    counts = {r.user_id: (int(r.labels or 0), int(r.unsure or 0)) for r in label_counts}
    return [
        {
            "username": u.username,
            "pseudonym": u.pseudonym,
            "labels": counts.get(u.id, (0, 0))[0],
            "unsure": counts.get(u.id, (0, 0))[1],
            "skipped": skip_counts.get(u.id, 0),
        }
        for u in sorted(users, key=lambda u: -counts.get(u.id, (0, 0))[0])
    ]


def measure(engine: Engine, campaign: Campaign) -> Progress:
    """The campaign's counts: class labels given against those its items want ("unsure" apart)."""
    with engine.connect() as conn:
        auto, needed = conn.execute(
            sa.select(
                sa.func.count(items_t.c.auto_label),
                sa.func.coalesce(
                    sa.func.sum(sa.case((items_t.c.auto_label.is_(None), items_t.c.wanted), else_=0)), 0
                ),
            ).where(items_t.c.campaign_id == campaign.id)
        ).one()
        votes = (
            sa.select(labels_t.c.campaign_item_id, sa.func.count().label("n"))
            .where(labels_t.c.campaign_id == campaign.id, labels_t.c.label != UNSURE)
            .group_by(labels_t.c.campaign_item_id)
            .subquery()
        )
        complete = conn.execute(
            sa.select(sa.func.count())
            .select_from(votes.join(items_t, items_t.c.id == votes.c.campaign_item_id))
            .where(votes.c.n >= items_t.c.wanted)
        ).scalar_one()
        reviewers = _reviewers(conn, campaign)
    return Progress(
        items=campaign.item_count,
        auto_labelled=auto,
        labels=sum(r["labels"] for r in reviewers),
        labels_needed=int(needed),
        complete_items=complete,
        reviewers=reviewers,
    )


@dataclass(frozen=True)
class ReviewerStats:
    """One reviewer's own numbers in a campaign: what they gave, and how often others agreed."""

    labels: int  # class labels
    unsure: int
    skipped: int
    compared: int  # (their label, another reviewer's label) pairs on the same item, unsure left out
    agreed: int

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


def reviewer_stats(engine: Engine, campaign: Campaign, user_id: int) -> ReviewerStats:
    """The reviewer's counts and their agreement with the others (share of paired labels that match)."""
    mine, other = labels_t.alias("mine"), labels_t.alias("other")
    with engine.connect() as conn:
        labels, unsure = conn.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(sa.case((labels_t.c.label != UNSURE, 1), else_=0)), 0),
                sa.func.coalesce(sa.func.sum(sa.case((labels_t.c.label == UNSURE, 1), else_=0)), 0),
            ).where(labels_t.c.campaign_id == campaign.id, labels_t.c.user_id == user_id)
        ).one()
        skipped = conn.execute(
            sa.select(sa.func.count()).where(
                asg_t.c.campaign_id == campaign.id, asg_t.c.user_id == user_id, asg_t.c.state == "skipped"
            )
        ).scalar_one()
        compared, agreed = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((mine.c.label == other.c.label, 1), else_=0)), 0),
            )
            .select_from(mine.join(other, other.c.campaign_item_id == mine.c.campaign_item_id))
            .where(
                mine.c.campaign_id == campaign.id,
                mine.c.user_id == user_id,
                other.c.user_id != user_id,
                mine.c.label != UNSURE,
                other.c.label != UNSURE,
            )
        ).one()
    return ReviewerStats(int(labels), int(unsure), int(skipped), int(compared), int(agreed))
