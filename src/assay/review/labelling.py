"""Labels, skips and undo: what a reviewer says about an item they hold.

A label is committed before any caller is told it is saved; sending it again
changes nothing (or changes the reviewer's own label), never adds a second
one. A skip gives the slot back (the reviewer keeps the row, so the item never
comes back to them).

"unsure" is recorded (exports and agreement show who was unsure) but holds no
slot: the item goes back to the pool for someone else, as after a skip. A class
label that fills what an item wants and leaves its votes tied gives the item
one more slot, up to the campaign's ``extra_labels``; past that the tie waits
for an admin (``resolution.adjudicate``). Every change runs with the item's
row locked, so two reviewers labelling the same item at once are counted one
after the other and neither misses the tie.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import Conflict, InvalidInput, NotFound
from assay.review.accounts import User
from assay.review.campaigns import MAX_COMMENT, UNSURE, Campaign, check_may_label, requeue_ties
from assay.review.worksets import give_back_slots, take_slot
from assay.store import db, tables

items_t = tables.campaign_items
asg_t = tables.assignments
labels_t = tables.labels


def _item(conn: Connection, campaign: Campaign, item_id: str, *, lock: bool = True) -> sa.Row:
    """The item's row, locked until the transaction ends unless ``lock`` is false (PostgreSQL;
    SQLite's writes take turns)."""
    query = sa.select(items_t.c.id, items_t.c.probabilities, items_t.c.prediction).where(
        items_t.c.campaign_id == campaign.id, items_t.c.item_id == str(item_id)
    )
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFound(
            f"campaign {campaign.name!r} has no item {item_id!r}", field="item_id", code="unknown_item"
        )
    return row


def _checked(campaign: Campaign, label: str, comment: str) -> str:
    if label not in campaign.label_choices:
        raise InvalidInput(
            f"label must be one of {', '.join(campaign.label_choices)}; got {label!r}", field="label"
        )
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT:
        raise InvalidInput(f"a comment may have at most {MAX_COMMENT} characters", field="comment")
    return comment


def _mine(item_pk: int, user: User) -> sa.ColumnElement[bool]:
    return (asg_t.c.campaign_item_id == item_pk) & (asg_t.c.user_id == user.id)


def _finish(conn: Connection, item_pk: int, user: User, label: str) -> None:
    """Move the reviewer's claim to ``done``, or to ``unsure`` with its slot given back."""
    if label == UNSURE:
        conn.execute(sa.update(asg_t).where(_mine(item_pk, user)).values(state="unsure", slot=None))
        give_back_slots(conn, item_pk)
    else:
        conn.execute(sa.update(asg_t).where(_mine(item_pk, user)).values(state="done"))


def submit_label(
    engine: Engine, campaign: Campaign, user: User, item_id: str, label: str, comment: str = "", *, ttl_s: int
) -> str:
    """Record the reviewer's label for an item they hold; returns ``"saved"`` or ``"updated"``.

    ``"updated"`` means they had labelled it before and this replaces their own
    label (sending the same label twice is harmless). An item they do not hold
    any more (skipped, or their workset expired and someone else took the slot)
    is a ``Conflict``, as is turning an "unsure" into a class once others have
    filled the item.
    """
    check_may_label(campaign, user)
    comment = _checked(campaign, label, comment)
    now = db.now()
    with engine.begin() as conn:
        item = _item(conn, campaign, item_id, lock=False)
        held = conn.execute(
            sa.select(asg_t.c.id, asg_t.c.state, asg_t.c.workset_id).where(_mine(item.id, user))
        ).first()
        if held is None or held.state not in ("open", "done", "unsure"):
            raise _not_assigned(item_id)
        if held.state == "open":
            # The claim is finished only if it is still open now: a taker of an expired workset may
            # have taken it back since it was read, and its slot then belongs to someone else.
            # Claim before item, the order in which expiry takes claims back: no deadlock.
            finished = conn.execute(
                sa.update(asg_t).where(asg_t.c.id == held.id, asg_t.c.state == "open").values(finished_at=now)
            ).rowcount
            if not finished:
                raise _not_assigned(item_id)
        _item(conn, campaign, item_id)  # the item's lock: labels of one item take turns
        if held.state == "open":
            _insert_label(conn, campaign, item, user, label, comment, now)
            # Working keeps a workset alive: only abandoned ones expire.
            conn.execute(
                sa.update(tables.worksets)
                .where(tables.worksets.c.id == held.workset_id)
                .values(expires_at=now + timedelta(seconds=ttl_s))
            )
            _finish(conn, item.id, user, label)
            outcome = "saved"
        else:
            _change_label(conn, item.id, user, held.state, label, comment, now, item_id)
            outcome = "updated"
        requeue_ties(conn, campaign, [item.id])
    return outcome


def _not_assigned(item_id: str) -> Conflict:
    return Conflict(
        f"item {item_id!r} is not in your workset (skipped, or the workset expired); take a new workset",
        field="item_id",
        code="not_assigned",
    )


def _insert_label(
    conn: Connection, campaign: Campaign, item: sa.Row, user: User, label: str, comment: str, now: datetime
) -> None:
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


def _change_label(
    conn: Connection,
    item_pk: int,
    user: User,
    state: str,
    label: str,
    comment: str,
    now: datetime,
    item_id: str,
) -> None:
    """Replace the reviewer's own label; an "unsure" that becomes a class needs a free slot again."""
    if state == "done" and label == UNSURE:
        _finish(conn, item_pk, user, label)
    elif state == "unsure" and label != UNSURE:
        slot = take_slot(conn, item_pk)
        if slot is None:
            raise Conflict(
                f"item {item_id!r} has all the labels it wants now; your 'unsure' stays",
                field="item_id",
                code="item_full",
            )
        conn.execute(sa.update(asg_t).where(_mine(item_pk, user)).values(state="done", slot=slot))
    conn.execute(
        sa.update(labels_t)
        .where(labels_t.c.campaign_item_id == item_pk, labels_t.c.user_id == user.id)
        .values(label=label, comment=comment, updated_at=now)
    )


def skip_item(engine: Engine, campaign: Campaign, user: User, item_id: str) -> None:
    """Hand an item back: its slot returns to the pool, and it never comes back to this reviewer."""
    check_may_label(campaign, user)
    now = db.now()
    with engine.begin() as conn:
        item = _item(conn, campaign, item_id)
        skipped = conn.execute(
            sa.update(asg_t)
            .where(_mine(item.id, user), asg_t.c.state == "open")
            .values(state="skipped", slot=None, finished_at=now)
        ).rowcount
        if skipped:
            give_back_slots(conn, item.id)
            return
        state = conn.execute(sa.select(asg_t.c.state).where(_mine(item.id, user))).scalar()
    if state == "skipped":
        return  # a repeated skip
    raise Conflict(
        f"item {item_id!r} is {'already labelled' if state in ('done', 'unsure') else 'not in your workset'}",
        field="item_id",
        code="not_assigned",
    )


def undo_last(engine: Engine, campaign: Campaign, user: User, *, ttl_s: int) -> str:
    """Take back the reviewer's most recent label: the item is theirs to label again; returns its id.

    The claim goes back to ``open`` in the reviewer's latest workset (kept
    alive ``ttl_s`` more). An "unsure" gave its slot back, so undoing it needs
    a free slot; when others have filled the item meanwhile it is a
    ``Conflict`` and the "unsure" stays.
    """
    check_may_label(campaign, user)
    now = db.now()
    with engine.begin() as conn:
        last = conn.execute(
            sa.select(labels_t.c.id, labels_t.c.campaign_item_id, items_t.c.item_id)
            .join(items_t, items_t.c.id == labels_t.c.campaign_item_id)
            .where(labels_t.c.campaign_id == campaign.id, labels_t.c.user_id == user.id)
            .order_by(labels_t.c.updated_at.desc(), labels_t.c.id.desc())
            .limit(1)
        ).first()
        if last is None:
            raise Conflict(
                "you have no label to undo in this campaign", field="label", code="nothing_to_undo"
            )
        _item(conn, campaign, last.item_id)  # the item's lock, as for a label
        held = conn.execute(
            sa.select(asg_t.c.state, asg_t.c.slot).where(_mine(last.campaign_item_id, user))
        ).one()
        slot = held.slot
        if held.state == "unsure":
            slot = take_slot(conn, last.campaign_item_id)
            if slot is None:
                raise Conflict(
                    f"item {last.item_id!r} has all the labels it wants now; your 'unsure' stays",
                    field="item_id",
                    code="item_full",
                )
        workset = conn.execute(
            sa.select(tables.worksets.c.id)
            .where(tables.worksets.c.campaign_id == campaign.id, tables.worksets.c.user_id == user.id)
            .order_by(tables.worksets.c.id.desc())
            .limit(1)
        ).scalar_one()
        conn.execute(sa.delete(labels_t).where(labels_t.c.id == last.id))
        conn.execute(
            sa.update(asg_t)
            .where(_mine(last.campaign_item_id, user))
            .values(state="open", slot=slot, workset_id=workset, finished_at=None)
        )
        conn.execute(
            sa.update(tables.worksets)
            .where(tables.worksets.c.id == workset)
            .values(expires_at=now + timedelta(seconds=ttl_s))
        )
    return str(last.item_id)


@dataclass(frozen=True)
class MyLabel:
    """One of the reviewer's labels, as their "my labels" list shows it."""

    item_id: str
    label: str
    comment: str
    updated_at: datetime
    others: dict[str, int]  # what the other reviewers said: label -> count


def my_labels(
    engine: Engine, campaign: Campaign, user: User, *, limit: int = 50, offset: int = 0
) -> list[MyLabel]:
    """The reviewer's labels in the campaign, newest first, with what the others said."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                labels_t.c.campaign_item_id,
                items_t.c.item_id,
                labels_t.c.label,
                labels_t.c.comment,
                labels_t.c.updated_at,
            )
            .join(items_t, items_t.c.id == labels_t.c.campaign_item_id)
            .where(labels_t.c.campaign_id == campaign.id, labels_t.c.user_id == user.id)
            .order_by(labels_t.c.updated_at.desc(), labels_t.c.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        others: dict[int, dict[str, int]] = {}
        for pk, label, n in conn.execute(
            sa.select(labels_t.c.campaign_item_id, labels_t.c.label, sa.func.count())
            .where(
                labels_t.c.campaign_item_id.in_([r.campaign_item_id for r in rows]),
                labels_t.c.user_id != user.id,
            )
            .group_by(labels_t.c.campaign_item_id, labels_t.c.label)
        ):
            others.setdefault(pk, {})[label] = n
    return [
        MyLabel(r.item_id, r.label, r.comment, r.updated_at, others.get(r.campaign_item_id, {})) for r in rows
    ]
