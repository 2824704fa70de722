"""Labelling campaigns at work: who may label, worksets, claims, labels, skips, progress, export.

A campaign (made by ``assay.review.campaigns``) holds items, each wanting
``labels_per_item`` labels. A reviewer takes a *workset*: a batch of items
claimed for them in one transaction. Claims are rows in ``assignments``; the
store's unique constraints are the guarantees, so they hold with any number of
reviewer processes on SQLite or PostgreSQL:

* ``(item, reviewer)`` is unique: a reviewer is never handed an item twice;
* ``(item, slot)`` is unique with ``slot`` in 1..labels_per_item, and a claim
  first moves the item's ``claimed`` counter with a conditional UPDATE
  (``claimed < labels_per_item``), so an item never gets more labels than asked.

A skip gives the slot back (the reviewer keeps the row, so the item never comes
back to them). Claims of worksets that expired are released the same way when
the next workset is taken: the slot goes back to the pool for others, the row
stays as ``expired`` so the item never comes back to that reviewer. A label is committed
before any caller is told it is saved; sending it again changes nothing (or
changes the reviewer's own label), never adds a second one.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import Conflict, Forbidden, InvalidInput, NotFound
from assay.review.accounts import User
from assay.store import db

UNSURE = "unsure"
MAX_COMMENT = 2000
_CLAIM_ROUNDS = 10  # candidate queries per workset before giving up on a contended pool

items_t = db.campaign_items
asg_t = db.assignments
labels_t = db.labels


@dataclass(frozen=True)
class Campaign:
    """A campaign's settings as stored."""

    id: int
    name: str
    description: str
    model: str
    model_version: int
    classes: list[str]
    labels_per_item: int
    reviewers: list[str]
    blind: bool
    selection: dict[str, Any]
    auto_rules: list[str]
    link_template: str | None
    judgment_rule: str
    status: str
    item_count: int
    created_by: str
    created_at: datetime

    @property
    def label_choices(self) -> list[str]:
        return [*self.classes, UNSURE]

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def may_label(self, user: User) -> bool:
        """An empty reviewer list lets every account label; otherwise only those named."""
        return not self.reviewers or user.username in self.reviewers

    def link(self, item_id: str) -> str | None:
        """The item's page in the product, from the campaign's link template."""
        if not self.link_template:
            return None
        return self.link_template.replace("{id}", quote(str(item_id), safe=""))

    def to_dict(self, *, admin: bool = True) -> dict[str, Any]:
        """The campaign as JSON; for a non-admin, a blind campaign keeps how its items were chosen
        to itself (``flagged`` at a threshold would tell every item's prediction)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "id"}
        out["created_at"] = self.created_at.isoformat()
        out["label_choices"] = self.label_choices
        if self.blind and not admin:
            out["selection"] = {}
        return out


def _campaign(row: sa.Row) -> Campaign:
    return Campaign(**{k: getattr(row, k) for k in Campaign.__dataclass_fields__})


def get_campaign(engine: Engine, name: str) -> Campaign:
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.campaigns).where(db.campaigns.c.name == name)).first()
    if row is None:
        raise NotFound(f"no campaign named {name!r}", field="campaign", code="unknown_campaign")
    return _campaign(row)


def list_campaigns(engine: Engine) -> list[Campaign]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.campaigns).order_by(db.campaigns.c.created_at.desc())).all()
    return [_campaign(r) for r in rows]


def set_status(engine: Engine, campaign: Campaign, status: str) -> None:
    """Open or close a campaign; a closed one hands out no worksets and takes no labels."""
    if status not in ("open", "closed"):
        raise InvalidInput(f"status must be 'open' or 'closed'; got {status!r}", field="status")
    with engine.begin() as conn:
        conn.execute(sa.update(db.campaigns).where(db.campaigns.c.id == campaign.id).values(status=status))


def check_may_label(campaign: Campaign, user: User) -> None:
    if not campaign.is_open:
        raise Conflict(f"campaign {campaign.name!r} is closed", field="campaign", code="campaign_closed")
    if not campaign.may_label(user):
        raise Forbidden(f"{user.username} is not one of the reviewers of campaign {campaign.name!r}")


# --- worksets and claims --------------------------------------------------------


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
    expired = sa.select(db.worksets.c.id).where(
        db.worksets.c.campaign_id == campaign_id, db.worksets.c.expires_at <= now
    )
    freed = conn.execute(
        sa.update(asg_t)
        .where(asg_t.c.campaign_id == campaign_id, asg_t.c.state == "open", asg_t.c.workset_id.in_(expired))
        .values(state="expired", slot=None, finished_at=now)
        .returning(asg_t.c.campaign_item_id)
    ).all()
    counts = Counter(r.campaign_item_id for r in freed)
    for item_pk, n in counts.items():
        conn.execute(
            sa.update(items_t)
            .where(items_t.c.id == item_pk)
            .values(claimed=items_t.c.claimed - n, available=True)
        )
    return len(freed)


def _claim(
    conn: Connection, campaign: Campaign, item_pk: int, user_id: int, workset_id: int, now: datetime
) -> bool:
    """Claim one slot of an item for a reviewer, or say it is not to be had (full, or theirs already)."""
    n = campaign.labels_per_item
    mine = sa.exists().where(asg_t.c.campaign_item_id == item_pk, asg_t.c.user_id == user_id)
    moved = conn.execute(
        sa.update(items_t)
        .where(items_t.c.id == item_pk, items_t.c.available.is_(True), items_t.c.claimed < n, ~mine)
        .values(claimed=items_t.c.claimed + 1, available=items_t.c.claimed + 1 < n)
    ).rowcount
    if not moved:
        return False
    # The UPDATE holds the item's row (PostgreSQL) or the store (SQLite): the free slot is ours.
    used = set(conn.execute(sa.select(asg_t.c.slot).where(asg_t.c.campaign_item_id == item_pk)).scalars())
    slot = min(s for s in range(1, n + 1) if s not in used)
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
        conn.execute(sa.select(db.users.c.id).where(db.users.c.id == user.id).with_for_update())
    _release_expired(conn, campaign.id, now)
    expires = now + timedelta(seconds=ttl_s)
    live = conn.execute(
        sa.select(asg_t.c.workset_id)
        .where(asg_t.c.campaign_id == campaign.id, asg_t.c.user_id == user.id, asg_t.c.state == "open")
        .limit(1)
    ).scalar()
    if live is not None:
        conn.execute(sa.update(db.worksets).where(db.worksets.c.id == live).values(expires_at=expires))
        return int(live)
    workset_id = conn.execute(
        sa.insert(db.worksets)
        .values(campaign_id=campaign.id, user_id=user.id, created_at=now, expires_at=expires)
        .returning(db.worksets.c.id)
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
        conn.execute(sa.delete(db.worksets).where(db.worksets.c.id == workset_id))
        return None
    return int(workset_id)


def get_workset(engine: Engine, campaign: Campaign, user: User) -> Workset | None:
    """The reviewer's most recent workset in this campaign with its items, or None."""
    with engine.connect() as conn:
        ws = conn.execute(
            sa.select(db.worksets)
            .where(db.worksets.c.campaign_id == campaign.id, db.worksets.c.user_id == user.id)
            .order_by(db.worksets.c.id.desc())
            .limit(1)
        ).first()
        if ws is None:
            return None
        rows = conn.execute(
            sa.select(
                items_t.c.item_id,
                items_t.c.position,
                items_t.c.features,
                items_t.c.probabilities,
                items_t.c.prediction,
                items_t.c.explanation,
                asg_t.c.state,
                labels_t.c.label,
            )
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
            sa.select(
                items_t.c.item_id,
                items_t.c.position,
                items_t.c.features,
                items_t.c.probabilities,
                items_t.c.prediction,
                items_t.c.explanation,
            ).where(items_t.c.campaign_id == campaign.id, items_t.c.item_id == str(item_id))
        ).first()
    if row is None:
        raise NotFound(
            f"campaign {campaign.name!r} has no item {item_id!r}", field="item_id", code="unknown_item"
        )
    return WorkItem(**row._mapping, state="done")


# --- labels and skips -------------------------------------------------------------


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


# --- progress ---------------------------------------------------------------------


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


def progress(engine: Engine, campaign: Campaign) -> Progress:
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


# --- resolution and export ----------------------------------------------------------


def resolve(votes: Counter[str]) -> tuple[str | None, str]:
    """The label a set of votes resolves to, and why: majority rule with ties and unsure explicit.

    "unsure" is an abstention that still counts against a weak majority: an item
    resolves only when its top class has more votes than every other class AND
    more than the unsure votes. Otherwise it is a ``tie`` (classes level) or
    ``unsure`` (as many reviewers unsure as for the top class), and has no label.
    """
    unsure = votes.get(UNSURE, 0)
    ranked = [(c, n) for c, n in votes.most_common() if c != UNSURE]
    if not ranked:
        return None, ("unsure" if unsure else "unlabelled")
    top, top_n = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == top_n:
        return None, "tie"
    if unsure >= top_n:
        return None, "unsure"
    return top, ("unanimous" if len(ranked) == 1 and not unsure else "majority")


RESOLVED = ("unanimous", "majority", "auto")


def _label_rows(conn: Connection, campaign: Campaign) -> Iterator[sa.Row]:
    query = (
        sa.select(
            items_t.c.id.label("pk"),
            items_t.c.item_id,
            items_t.c.prediction,
            items_t.c.probabilities,
            items_t.c.auto_label,
            items_t.c.auto_rule,
            labels_t.c.label,
            labels_t.c.comment,
            labels_t.c.created_at,
            labels_t.c.updated_at,
            labels_t.c.model_version,
            labels_t.c.shown_prediction,
            labels_t.c.shown_probability,
            db.users.c.pseudonym,
        )
        .outerjoin(labels_t, labels_t.c.campaign_item_id == items_t.c.id)
        .outerjoin(db.users, db.users.c.id == labels_t.c.user_id)
        .where(items_t.c.campaign_id == campaign.id)
        .order_by(items_t.c.position, labels_t.c.id)
    )
    # Streamed: a 100,000-item campaign is exported without holding every row at once.
    yield from conn.execution_options(yield_per=5000).execute(query)


def _resolved_row(campaign: Campaign, rows: list[sa.Row]) -> dict[str, Any]:
    """The export row of one item from its joined label rows (one row with no label when unlabelled)."""
    first = rows[0]
    labelled = [r for r in rows if r.label is not None]
    votes = Counter(r.label for r in labelled)
    if first.auto_label is not None:
        label, status, source = first.auto_label, "auto", f"auto: {first.auto_rule}"
    else:
        (label, status), source = resolve(votes), "review"
    return {
        "id": first.item_id,
        "label": label,
        "status": status,
        "complete": status == "auto" or len(labelled) >= campaign.labels_per_item,
        "n_labels": len(labelled),
        "votes": ";".join(f"{c}:{n}" for c, n in sorted(votes.items())),
        "reviewers": ";".join(r.pseudonym for r in labelled),
        "source": source,
        "campaign": campaign.name,
        "model": campaign.model,
        "model_version": campaign.model_version,
        "model_prediction": first.prediction,
        "model_probability": (first.probabilities or {}).get(first.prediction) if first.prediction else None,
        "score_shown": not campaign.blind,
        "first_labelled_at": min((r.created_at for r in labelled), default=None),
        "last_labelled_at": max((r.updated_at for r in labelled), default=None),
    }


def resolved_frame(engine: Engine, campaign: Campaign) -> pd.DataFrame:
    """One row per item: the resolved label (or None), why, the votes and the provenance."""
    with engine.connect() as conn:
        out = [
            _resolved_row(campaign, list(group))
            for _pk, group in itertools.groupby(_label_rows(conn, campaign), key=lambda r: r.pk)
        ]
    columns = [
        "id", "label", "status", "complete", "n_labels", "votes", "reviewers", "source", "campaign", "model",
        "model_version", "model_prediction", "model_probability", "score_shown", "first_labelled_at",
        "last_labelled_at",
    ]  # fmt: skip
    frame = pd.DataFrame(out, columns=columns)
    for col in ("first_labelled_at", "last_labelled_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def resolved_labels(engine: Engine, campaign: str | Campaign, *, complete_only: bool = True) -> pd.DataFrame:
    """The campaign's resolved labels as training data: ``id``, ``label`` and provenance columns.

    Only items whose votes resolve (unanimous, majority, or an auto-label rule)
    are kept; with ``complete_only`` an item also needs all the labels the
    campaign asks for. This is what a model spec's campaign label source reads.
    """
    if isinstance(campaign, str):
        campaign = get_campaign(engine, campaign)
    frame = resolved_frame(engine, campaign)
    keep = frame["status"].isin(RESOLVED)
    if complete_only:
        keep &= frame["complete"].astype(bool)
    return frame[keep].reset_index(drop=True)


def raw_labels(engine: Engine, campaign: Campaign) -> pd.DataFrame:
    """One row per label, with the reviewer's pseudonym and what they were shown."""
    columns = [
        "item_id", "pseudonym", "label", "comment", "model_version", "shown_prediction", "shown_probability",
        "created_at", "updated_at",
    ]  # fmt: skip
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in _label_rows(conn, campaign) if r.label is not None]
    frame = pd.DataFrame(rows, columns=columns).rename(columns={"item_id": "id", "pseudonym": "reviewer"})
    for col in ("created_at", "updated_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def export_labels(
    engine: Engine, campaign: Campaign, output: Path, *, everything: bool = False, raw: bool = False
) -> int:
    """Write the campaign's labels to CSV or Parquet (by the file's suffix); returns the row count.

    By default the resolved labels a spec can train on; ``everything`` adds the
    unresolved items (ties, unsure, incomplete) with their status; ``raw`` writes
    one row per label instead.
    """
    suffix = output.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise InvalidInput(f"{output}: write .csv or .parquet", field="output")
    if raw:
        frame = raw_labels(engine, campaign)
    elif everything:
        frame = resolved_frame(engine, campaign)
    else:
        frame = resolved_labels(engine, campaign)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    if suffix == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    tmp.replace(output)  # a reader never sees half a file
    return len(frame)
