"""Labels and skips: what a reviewer says about an item they hold.

A label is committed before any caller is told it is saved; sending it again
changes nothing (or changes the reviewer's own label), never adds a second
one. A skip gives the slot back (the reviewer keeps the row, so the item never
comes back to them).
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import Conflict, InvalidInput, NotFound
from assay.review.accounts import User
from assay.review.campaigns import MAX_COMMENT, Campaign, check_may_label
from assay.store import db

items_t = db.campaign_items
asg_t = db.assignments
labels_t = db.labels


def _item_pk(conn: Connection, campaign: Campaign, item_id: str) -> sa.Row:
    row = conn.execute(
        sa.select(items_t.c.id, items_t.c.probabilities, items_t.c.prediction).where(
            items_t.c.campaign_id == campaign.id, items_t.c.item_id == str(item_id)
        )
    ).first()
    if row is None:
        raise NotFound(
            f"campaign {campaign.name!r} has no item {item_id!r}", field="item_id", code="unknown_item"
        )
    return row


def submit_label(
    engine: Engine, campaign: Campaign, user: User, item_id: str, label: str, comment: str = "", *, ttl_s: int
) -> str:
    """Record the reviewer's label for an item they hold; returns ``"saved"`` or ``"updated"``.

    ``"updated"`` means they had labelled it before and this replaces their own
    label (sending the same label twice is harmless). An item they do not hold
    any more (skipped, or their workset expired and someone else took the slot)
    is a ``Conflict``.
    """
    check_may_label(campaign, user)
    if label not in campaign.label_choices:
        raise InvalidInput(
            f"label must be one of {', '.join(campaign.label_choices)}; got {label!r}", field="label"
        )
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT:
        raise InvalidInput(f"a comment may have at most {MAX_COMMENT} characters", field="comment")
    now = db.now()
    with engine.begin() as conn:
        item = _item_pk(conn, campaign, item_id)
        done = conn.execute(
            sa.update(asg_t)
            .where(asg_t.c.campaign_item_id == item.id, asg_t.c.user_id == user.id, asg_t.c.state == "open")
            .values(state="done", finished_at=now)
            .returning(asg_t.c.workset_id)
        ).first()
        if done is not None:
            shown = not campaign.blind and item.probabilities is not None
            conn.execute(
                sa.insert(labels_t).values(
                    campaign_id=campaign.id,
                    campaign_item_id=item.id,
                    user_id=user.id,
                    label=label,
                    comment=comment,
                    model_version=campaign.model_version,
                    shown_prediction=item.prediction if shown else None,
                    shown_probability=(item.probabilities or {}).get(item.prediction) if shown else None,
                    created_at=now,
                    updated_at=now,
                )
            )
            # Working keeps a workset alive: only abandoned ones expire.
            conn.execute(
                sa.update(db.worksets)
                .where(db.worksets.c.id == done.workset_id)
                .values(expires_at=now + timedelta(seconds=ttl_s))
            )
            return "saved"
        changed = conn.execute(
            sa.update(labels_t)
            .where(labels_t.c.campaign_item_id == item.id, labels_t.c.user_id == user.id)
            .values(label=label, comment=comment, updated_at=now)
        ).rowcount
        if changed:
            return "updated"
    raise Conflict(
        f"item {item_id!r} is not in your workset (skipped, or the workset expired); take a new workset",
        field="item_id",
        code="not_assigned",
    )


def skip_item(engine: Engine, campaign: Campaign, user: User, item_id: str) -> None:
    """Hand an item back: its slot returns to the pool, and it never comes back to this reviewer."""
    check_may_label(campaign, user)
    now = db.now()
    with engine.begin() as conn:
        item = _item_pk(conn, campaign, item_id)
        skipped = conn.execute(
            sa.update(asg_t)
            .where(asg_t.c.campaign_item_id == item.id, asg_t.c.user_id == user.id, asg_t.c.state == "open")
            .values(state="skipped", slot=None, finished_at=now)
        ).rowcount
        if skipped:
            conn.execute(
                sa.update(items_t)
                .where(items_t.c.id == item.id)
                .values(claimed=items_t.c.claimed - 1, available=True)
            )
            return
        state = conn.execute(
            sa.select(asg_t.c.state).where(asg_t.c.campaign_item_id == item.id, asg_t.c.user_id == user.id)
        ).scalar()
    if state == "skipped":
        return  # a repeated skip
    raise Conflict(
        f"item {item_id!r} is {'already labelled' if state == 'done' else 'not in your workset'}",
        field="item_id",
        code="not_assigned",
    )
