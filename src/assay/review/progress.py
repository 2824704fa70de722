"""How far a campaign is, counted in the store (never by loading the items)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.review.campaigns import UNSURE, Campaign
from assay.store import db

items_t = db.campaign_items
asg_t = db.assignments
labels_t = db.labels


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


def measure(engine: Engine, campaign: Campaign) -> Progress:
    n = campaign.labels_per_item
    with engine.connect() as conn:
        auto = conn.execute(
            sa.select(sa.func.count())
            .select_from(items_t)
            .where(items_t.c.campaign_id == campaign.id, items_t.c.auto_label.is_not(None))
        ).scalar_one()
        per_item = (
            sa.select(labels_t.c.campaign_item_id)
            .where(labels_t.c.campaign_id == campaign.id)
            .group_by(labels_t.c.campaign_item_id)
            .having(sa.func.count() >= n)
            .subquery()
        )
        complete = conn.execute(sa.select(sa.func.count()).select_from(per_item)).scalar_one()
        label_counts = conn.execute(
            sa.select(
                labels_t.c.user_id,
                sa.func.count().label("labels"),
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
        users = {
            r.id: r
            for r in conn.execute(
                sa.select(db.users.c.id, db.users.c.username, db.users.c.pseudonym).where(
                    db.users.c.id.in_({r.user_id for r in label_counts} | set(skip_counts))
                )
            )
        }
    counts = {r.user_id: (r.labels, int(r.unsure or 0)) for r in label_counts}
    reviewers = [
        {
            "username": users[uid].username,
            "pseudonym": users[uid].pseudonym,
            "labels": counts.get(uid, (0, 0))[0],
            "unsure": counts.get(uid, (0, 0))[1],
            "skipped": skip_counts.get(uid, 0),
        }
        for uid in sorted(users, key=lambda u: -counts.get(u, (0, 0))[0])
    ]
    reviewable = campaign.item_count - auto
    return Progress(
        items=campaign.item_count,
        auto_labelled=auto,
        labels=sum(c for c, _ in counts.values()),
        labels_needed=reviewable * n,
        complete_items=complete,
        reviewers=reviewers,
    )
