"""JADE-style judgments: people (or products, with a token) saying what an item really is.

A judgment is about one item of one model ("the model is wrong here: not
damaging", with a rationale). Others endorse or dispute it; one judgment per
item can be *preferred*: marked by an admin, or, for judgments made in a
campaign whose rule is ``most_endorsed``, the one with the most net
endorsements (ties go to the earliest). An admin's mark is never overridden by
the rule. A partial unique index keeps at most one preferred judgment per item,
and every change of the mark runs with the item's judgments locked, so
concurrent endorsements and marks take turns instead of tripping that index.

A judgment made in a blind campaign records what the model predicted, but only
admins see it: ``Judgment.seen_by`` hides it from everyone else, so a reviewer
of that campaign cannot learn the model's answer from the judgments either.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import Conflict, Forbidden, InvalidInput, NotFound
from assay.review.accounts import User
from assay.store import db, tables

STANCES = ("endorse", "dispute")
RULES = ("admin", "most_endorsed")
RULE_MARK = "rule:most_endorsed"
MAX_RATIONALE = 4000
# Judgment ids are the store's Integer (int4 on PostgreSQL): a larger number names no judgment,
# and the database driver would fail on it rather than find nothing.
MAX_ID = 2**31 - 1

j_t = tables.judgments
e_t = tables.endorsements


@dataclass(frozen=True)
class Judgment:
    id: int
    model: str
    item_id: str
    model_version: int | None
    campaign: str | None
    label: str
    rationale: str
    model_prediction: str | None
    author: str  # a username, or "token:<name>" for a product's report
    preferred: bool
    preferred_by: str | None
    created_at: datetime
    endorsements: list[dict[str, Any]]
    blind: bool = False  # made in a blind campaign: the model's prediction is for admins only

    def seen_by(self, *, admin: bool) -> Judgment:
        """The judgment as a viewer may see it: without the model's prediction of a blind campaign."""
        if self.blind and not admin and self.model_prediction is not None:
            return dataclasses.replace(self, model_prediction=None)
        return self

    @property
    def endorse_count(self) -> int:
        return sum(1 for e in self.endorsements if e["stance"] == "endorse")

    @property
    def dispute_count(self) -> int:
        return sum(1 for e in self.endorsements if e["stance"] == "dispute")

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "blind"}
        out["created_at"] = self.created_at.isoformat()
        out["endorsements"] = [{**e, "created_at": e["created_at"].isoformat()} for e in self.endorsements]
        return out


def _unknown(judgment_id: int) -> NotFound:
    return NotFound(f"no judgment {judgment_id}", field="judgment", code="unknown_judgment")


def _checked_id(judgment_id: int) -> int:
    """``judgment_id`` when a judgment could have it, before it reaches the store; else ``NotFound``."""
    if not 1 <= judgment_id <= MAX_ID:
        raise _unknown(judgment_id)
    return judgment_id


def record_judgment(
    engine: Engine,
    *,
    model: str,
    item_id: str,
    label: str,
    classes: list[str],
    rationale: str = "",
    author: User | None = None,
    token_name: str | None = None,
    model_version: int | None = None,
    model_prediction: str | None = None,
    campaign_id: int | None = None,
) -> Judgment:
    """Store a judgment by a person (``author``) or a product (``token_name``); returns it."""
    if (author is None) == (token_name is None):
        raise ValueError("a judgment has exactly one author: a user or a token")
    if label not in classes:
        raise InvalidInput(f"label must be one of {', '.join(classes)}; got {label!r}", field="label")
    item_id = str(item_id).strip()
    if not item_id or len(item_id) > 200:
        raise InvalidInput("item_id must be 1-200 characters", field="item_id")
    rationale = (rationale or "").strip()
    if len(rationale) > MAX_RATIONALE:
        raise InvalidInput(f"a rationale may have at most {MAX_RATIONALE} characters", field="rationale")
    with engine.begin() as conn:
        jid = conn.execute(
            sa.insert(j_t)
            .values(
                model=model,
                item_id=item_id,
                model_version=model_version,
                campaign_id=campaign_id,
                label=label,
                rationale=rationale,
                model_prediction=model_prediction,
                author_user_id=author.id if author else None,
                author_token=token_name,
                preferred=False,
                created_at=db.now(),
            )
            .returning(j_t.c.id)
        ).scalar_one()
    return get_judgment(engine, jid)


def endorse(engine: Engine, judgment_id: int, user: User, stance: str, comment: str = "") -> Judgment:
    """Endorse or dispute a judgment (once per person; a second call changes the stance)."""
    if stance not in STANCES:
        raise InvalidInput(f"stance must be one of {', '.join(STANCES)}; got {stance!r}", field="stance")
    comment = (comment or "").strip()[:MAX_RATIONALE]
    _checked_id(judgment_id)
    with engine.begin() as conn:
        row = conn.execute(sa.select(j_t).where(j_t.c.id == judgment_id)).first()
        if row is None:
            raise _unknown(judgment_id)
        if row.author_user_id == user.id:
            raise Conflict("you cannot endorse or dispute your own judgment", field="judgment")
        _lock_item(conn, row.model, row.item_id)
        changed = conn.execute(
            sa.update(e_t)
            .where(e_t.c.judgment_id == judgment_id, e_t.c.user_id == user.id)
            .values(stance=stance, comment=comment, created_at=db.now())
        ).rowcount
        if not changed:
            conn.execute(
                sa.insert(e_t).values(
                    judgment_id=judgment_id,
                    user_id=user.id,
                    stance=stance,
                    comment=comment,
                    created_at=db.now(),
                )
            )
        _apply_rule(conn, row.model, row.item_id)
    return get_judgment(engine, judgment_id)


def mark_preferred(engine: Engine, judgment_id: int, admin: User) -> Judgment:
    """An admin marks the judgment that stands for its item (the others lose the mark)."""
    if not admin.is_admin:
        raise Forbidden("only an admin marks the preferred judgment")
    _checked_id(judgment_id)
    with engine.begin() as conn:
        row = conn.execute(sa.select(j_t.c.model, j_t.c.item_id).where(j_t.c.id == judgment_id)).first()
        if row is None:
            raise _unknown(judgment_id)
        _lock_item(conn, row.model, row.item_id)
        _set_preferred(conn, row.model, row.item_id, judgment_id, admin.username)
    return get_judgment(engine, judgment_id)


def _lock_item(conn: Connection, model: str, item_id: str) -> None:
    """Hold the item's judgments until the transaction ends, before anything of it is written.

    Otherwise two endorsements (PostgreSQL, read committed) each count without
    the other's vote and mark different judgments, and the second mark breaks
    the partial unique index. Taken first, so the transaction's later reads see
    every endorsement committed before it; a judgment made meanwhile is never
    preferred until an endorsement or a mark, which waits here too. ``FOR NO
    KEY UPDATE`` does not wait on the key-share locks that new endorsement rows
    put on their judgment. On SQLite, where SQLAlchemy sends no ``FOR UPDATE``,
    the first write that follows (the endorsement or the mark) takes the
    store's write lock before the rule reads anything, so the store takes turns.
    """
    conn.execute(
        sa.select(j_t.c.id)
        .where(j_t.c.model == model, j_t.c.item_id == item_id)
        .order_by(j_t.c.id)  # one lock order for everyone: no deadlock between two takers
        .with_for_update(key_share=True)
    ).all()


def _set_preferred(conn: Connection, model: str, item_id: str, judgment_id: int, by: str) -> None:
    # Clear first, then set: the partial unique index never sees two preferred rows.
    conn.execute(
        sa.update(j_t)
        .where(j_t.c.model == model, j_t.c.item_id == item_id, j_t.c.preferred.is_(True))
        .values(preferred=False, preferred_by=None, preferred_at=None)
    )
    conn.execute(
        sa.update(j_t)
        .where(j_t.c.id == judgment_id)
        .values(preferred=True, preferred_by=by, preferred_at=db.now())
    )


def _apply_rule(conn: Connection, model: str, item_id: str) -> None:
    """Re-mark by the campaign rule after an endorsement, unless an admin has marked one."""
    marked = conn.execute(
        sa.select(j_t.c.preferred_by).where(
            j_t.c.model == model, j_t.c.item_id == item_id, j_t.c.preferred.is_(True)
        )
    ).scalar()
    if marked is not None and marked != RULE_MARK:
        return
    net = sa.func.coalesce(
        sa.func.sum(sa.case((e_t.c.stance == "endorse", 1), (e_t.c.stance == "dispute", -1), else_=0)), 0
    )
    best = conn.execute(
        sa.select(j_t.c.id, net.label("net"))
        .select_from(j_t.outerjoin(e_t, e_t.c.judgment_id == j_t.c.id))
        .join(tables.campaigns, tables.campaigns.c.id == j_t.c.campaign_id)
        .where(
            j_t.c.model == model,
            j_t.c.item_id == item_id,
            tables.campaigns.c.judgment_rule == "most_endorsed",
        )
        .group_by(j_t.c.id)
        .order_by(net.desc(), j_t.c.id)
        .limit(1)
    ).first()
    if best is not None and best.net > 0:
        _set_preferred(conn, model, item_id, best.id, RULE_MARK)
    elif marked is not None:
        conn.execute(
            sa.update(j_t)
            .where(j_t.c.model == model, j_t.c.item_id == item_id)
            .values(preferred=False, preferred_by=None, preferred_at=None)
        )


def _query() -> sa.Select:
    return (
        sa.select(
            j_t,
            tables.users.c.username.label("author_name"),
            tables.campaigns.c.name.label("campaign_name"),
            tables.campaigns.c.blind.label("campaign_blind"),
        )
        .outerjoin(tables.users, tables.users.c.id == j_t.c.author_user_id)
        .outerjoin(tables.campaigns, tables.campaigns.c.id == j_t.c.campaign_id)
    )


def _load(engine: Engine, query: sa.Select) -> list[Judgment]:
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        ends = conn.execute(
            sa.select(
                e_t.c.judgment_id, e_t.c.stance, e_t.c.comment, e_t.c.created_at, tables.users.c.username
            )
            .join(tables.users, tables.users.c.id == e_t.c.user_id)
            .where(e_t.c.judgment_id.in_([r.id for r in rows]))
            .order_by(e_t.c.id)
        ).all()
    by_judgment: dict[int, list[dict[str, Any]]] = {}
    for e in ends:
        by_judgment.setdefault(e.judgment_id, []).append(
            {"user": e.username, "stance": e.stance, "comment": e.comment, "created_at": e.created_at}
        )
    return [
        Judgment(
            id=r.id,
            model=r.model,
            item_id=r.item_id,
            model_version=r.model_version,
            campaign=r.campaign_name,
            label=r.label,
            rationale=r.rationale,
            model_prediction=r.model_prediction,
            author=r.author_name if r.author_name is not None else f"token:{r.author_token}",
            preferred=r.preferred,
            preferred_by=r.preferred_by,
            created_at=r.created_at,
            endorsements=by_judgment.get(r.id, []),
            blind=bool(r.campaign_blind),
        )
        for r in rows
    ]


def get_judgment(engine: Engine, judgment_id: int) -> Judgment:
    found = _load(engine, _query().where(j_t.c.id == _checked_id(judgment_id)))
    if not found:
        raise _unknown(judgment_id)
    return found[0]


def judgments_for(engine: Engine, model: str, item_id: str) -> list[Judgment]:
    """An item's judgments, the preferred first, then oldest first."""
    return _load(
        engine,
        _query()
        .where(j_t.c.model == model, j_t.c.item_id == str(item_id))
        .order_by(j_t.c.preferred.desc(), j_t.c.id),
    )


def recent_judgments(
    engine: Engine, *, model: str | None = None, limit: int = 50, offset: int = 0
) -> list[Judgment]:
    query = _query().order_by(j_t.c.id.desc()).limit(limit).offset(offset)
    if model is not None:
        query = query.where(j_t.c.model == model)
    return _load(engine, query)
