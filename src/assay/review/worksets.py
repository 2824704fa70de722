"""Worksets and claims: which items a reviewer holds, and how slots are taken and given back.

A reviewer takes a *workset*: a batch of items claimed for them in one
transaction. Claims are rows in ``assignments``; the store's unique
constraints are the guarantees, so they hold with any number of reviewer
processes on SQLite or PostgreSQL:

* ``(item, reviewer)`` is unique: a reviewer is never handed an item twice;
* ``(item, slot)`` is unique with ``slot`` in 1..wanted, and a claim first
  moves the item's ``claimed`` counter with a conditional UPDATE
  (``claimed < wanted``), so an item never gets more labels than it wants.

Claims of worksets that expired are released when the next workset is taken:
the slot goes back to the pool for others, the row stays as ``expired`` so the
item never comes back to that reviewer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import Conflict, InvalidInput, NotFound
from assay.review.accounts import User
from assay.review.campaigns import Campaign, check_may_label, get_campaign
from assay.store import db, tables

items_t = tables.campaign_items
asg_t = tables.assignments
# What a reviewer's page shows of an item (a WorkItem but its state).
_ITEM_COLUMNS = (
    items_t.c.item_id,
    items_t.c.position,
    items_t.c.features,
    items_t.c.probabilities,
    items_t.c.prediction,
    items_t.c.explanation,
)
labels_t = tables.labels

_CLAIM_ROUNDS = 10  # candidate queries per workset before giving up on a contended pool


@dataclass(frozen=True)
class WorkItem:
    """An item as a reviewer sees it in their workset."""

    item_id: str
    position: int
    features: dict[str, Any]
    probabilities: dict[str, float] | None
    prediction: str | None
    explanation: Any
    state: str  # open | done | skipped
    label: str | None = None


@dataclass(frozen=True)
class Workset:
    """A reviewer's live batch: its items in order and how far they are."""

    id: int
    expires_at: datetime
    items: list[WorkItem] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def finished(self) -> int:
        return sum(1 for i in self.items if i.state != "open")

    def seconds_left(self, now: datetime) -> int:
        """Seconds until the workset expires (SQLite gives back naive times: they are UTC)."""
        expires = self.expires_at if self.expires_at.tzinfo else self.expires_at.replace(tzinfo=UTC)
        return max(0, int((expires - now).total_seconds()))

    @property
    def next_item(self) -> WorkItem | None:
        return next((i for i in self.items if i.state == "open"), None)


def _is_pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _release_expired(conn: Connection, campaign_id: int, now: datetime) -> int:
    """Give the slots of expired worksets' open claims back to the pool; returns how many.

    As a skip does: the claim keeps its row (state ``expired``, no slot), so the
    ``(item, reviewer)`` constraint still stops the item coming back to the
    reviewer who abandoned it, while its slot is free for everyone else. Two
    takers releasing at once cannot both count a claim: the ``state = 'open'``
    condition is checked again under the row lock (PostgreSQL). On SQLite this
    UPDATE is also the statement that takes the write lock, so the rest of the
    claim runs with the store to itself.
    """
    expired = sa.select(tables.worksets.c.id).where(
        tables.worksets.c.campaign_id == campaign_id, tables.worksets.c.expires_at <= now
    )
    freed = conn.execute(
        sa.update(asg_t)
        .where(asg_t.c.campaign_id == campaign_id, asg_t.c.state == "open", asg_t.c.workset_id.in_(expired))
        .values(state="expired", slot=None, finished_at=now)
        .returning(asg_t.c.campaign_item_id)
    ).all()
    for item_pk, n in Counter(r.campaign_item_id for r in freed).items():
        give_back_slots(conn, item_pk, n)
    return len(freed)


def take_slot(conn: Connection, item_pk: int, *conditions: sa.ColumnElement[bool]) -> int | None:
    """Take one of the item's free slots (and any ``conditions`` on it): its number, or None if none.

    The conditional UPDATE of the item's counter is the guarantee: it holds the
    item's row (PostgreSQL) or the store (SQLite), so the slot picked after it
    is ours, and an item never has more slots taken than it wants.
    """
    moved = conn.execute(
        sa.update(items_t)
        .where(items_t.c.id == item_pk, items_t.c.claimed < items_t.c.wanted, *conditions)
        .values(claimed=items_t.c.claimed + 1, available=items_t.c.claimed + 1 < items_t.c.wanted)
        .returning(items_t.c.wanted)
    ).first()
    if moved is None:
        return None
    used = set(conn.execute(sa.select(asg_t.c.slot).where(asg_t.c.campaign_item_id == item_pk)).scalars())
    return min(s for s in range(1, moved.wanted + 1) if s not in used)


def give_back_slots(conn: Connection, item_pk: int, n: int = 1) -> None:
    """Return ``n`` of the item's slots to the pool (a skip, an expiry, an "unsure", an undo)."""
    conn.execute(
        sa.update(items_t)
        .where(items_t.c.id == item_pk)
        .values(claimed=items_t.c.claimed - n, available=True)
    )


def _claim(
    conn: Connection, campaign: Campaign, item_pk: int, user_id: int, workset_id: int, now: datetime
) -> bool:
    """Claim one slot of an item for a reviewer, or say it is not to be had (full, or theirs already)."""
    mine = sa.exists().where(asg_t.c.campaign_item_id == item_pk, asg_t.c.user_id == user_id)
    slot = take_slot(conn, item_pk, items_t.c.available.is_(True), ~mine)
    if slot is None:
        return False
    conn.execute(
        sa.insert(asg_t).values(
            workset_id=workset_id,
            campaign_id=campaign.id,
            campaign_item_id=item_pk,
            user_id=user_id,
            slot=slot,
            state="open",
            claimed_at=now,
        )
    )
    return True


def take_workset(engine: Engine, campaign: Campaign, user: User, *, size: int, ttl_s: int) -> Workset | None:
    """The reviewer's live workset, or a new one of up to ``size`` items; None when nothing is left.

    Asking again while a workset still has open items returns it (and extends
    its life) rather than claiming more.
    """
    check_may_label(campaign, user)
    if size < 1:
        raise InvalidInput("a workset needs at least one item", field="size")
    for _attempt in range(3):
        try:
            with engine.begin() as conn:
                workset_id = _take(conn, campaign, user, size, ttl_s)
        except sa.exc.IntegrityError:
            # Another transaction took a slot or an item first (PostgreSQL): start over.
            continue
        return None if workset_id is None else get_workset(engine, campaign, user)
    raise Conflict("the item pool is too busy right now; try again", code="busy")


def _take(conn: Connection, campaign: Campaign, user: User, size: int, ttl_s: int) -> int | None:
    now = db.now()
    if _is_pg(conn):
        # One claim at a time per reviewer (two browser tabs), none blocking other reviewers.
        conn.execute(sa.select(tables.users.c.id).where(tables.users.c.id == user.id).with_for_update())
    _release_expired(conn, campaign.id, now)
    expires = now + timedelta(seconds=ttl_s)
    live = conn.execute(
        sa.select(asg_t.c.workset_id)
        .where(asg_t.c.campaign_id == campaign.id, asg_t.c.user_id == user.id, asg_t.c.state == "open")
        .limit(1)
    ).scalar()
    if live is not None:
        conn.execute(
            sa.update(tables.worksets).where(tables.worksets.c.id == live).values(expires_at=expires)
        )
        return int(live)
    workset_id = conn.execute(
        sa.insert(tables.worksets)
        .values(campaign_id=campaign.id, user_id=user.id, created_at=now, expires_at=expires)
        .returning(tables.worksets.c.id)
    ).scalar_one()
    taken = 0
    for _round in range(_CLAIM_ROUNDS):
        mine = sa.exists().where(asg_t.c.campaign_item_id == items_t.c.id, asg_t.c.user_id == user.id)
        query = (
            sa.select(items_t.c.id)
            .where(items_t.c.campaign_id == campaign.id, items_t.c.available.is_(True), ~mine)
            .order_by(items_t.c.position)
            .limit(size - taken)
        )
        if _is_pg(conn):
            # Reviewers claiming at once each get different rows instead of queueing on the same ones.
            query = query.with_for_update(of=items_t, skip_locked=True)
        candidates = conn.execute(query).scalars().all()
        if not candidates:
            break
        taken += sum(_claim(conn, campaign, pk, user.id, workset_id, now) for pk in candidates)
        if taken >= size:
            break
    if taken == 0:
        conn.execute(sa.delete(tables.worksets).where(tables.worksets.c.id == workset_id))
        return None
    return int(workset_id)


def get_workset(engine: Engine, campaign: Campaign, user: User) -> Workset | None:
    """The reviewer's most recent workset in this campaign with its items, or None."""
    with engine.connect() as conn:
        ws = conn.execute(
            sa.select(tables.worksets)
            .where(tables.worksets.c.campaign_id == campaign.id, tables.worksets.c.user_id == user.id)
            .order_by(tables.worksets.c.id.desc())
            .limit(1)
        ).first()
        if ws is None:
            return None
        rows = conn.execute(
            sa.select(*_ITEM_COLUMNS, asg_t.c.state, labels_t.c.label)
            .join(items_t, items_t.c.id == asg_t.c.campaign_item_id)
            .outerjoin(
                labels_t,
                (labels_t.c.campaign_item_id == asg_t.c.campaign_item_id) & (labels_t.c.user_id == user.id),
            )
            # Claims taken back at expiry are no longer the reviewer's to work on.
            .where(asg_t.c.workset_id == ws.id, asg_t.c.state != "expired")
            .order_by(items_t.c.position)
        ).all()
    return Workset(id=ws.id, expires_at=ws.expires_at, items=[WorkItem(**r._mapping) for r in rows])


def get_item(engine: Engine, campaign: Campaign, item_id: str) -> WorkItem:
    """One item of the campaign (for pages that show a single item, e.g. to admins)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(*_ITEM_COLUMNS).where(
                items_t.c.campaign_id == campaign.id, items_t.c.item_id == str(item_id)
            )
        ).first()
    if row is None:
        raise NotFound(
            f"campaign {campaign.name!r} has no item {item_id!r}", field="item_id", code="unknown_item"
        )
    return WorkItem(**row._mapping, state="done")


def latest_campaign_of(engine: Engine, model: str, item_id: str) -> Campaign | None:
    """The most recent campaign of ``model`` that holds the item, or None (the judgments page's context)."""
    with engine.connect() as conn:
        name = conn.execute(
            sa.select(tables.campaigns.c.name)
            .join(items_t, items_t.c.campaign_id == tables.campaigns.c.id)
            .where(tables.campaigns.c.model == model, items_t.c.item_id == str(item_id))
            .order_by(tables.campaigns.c.id.desc())
            .limit(1)
        ).scalar()
    return None if name is None else get_campaign(engine, name)
