"""Forgetting items: every trace review keeps of an item, deleted by its id.

Review holds an item in campaign items (its features, the model's score and
explanation), in assignments, in labels and their comments, and in judgments
and their endorsements' comments. ``forget_items`` removes all of them in one
transaction and returns what it removed, so a request to forget data either
happens entirely or not at all. On SQLite the deleted rows are overwritten with zeros
(``secure_delete``), not just freed, on every build of it. The campaigns stay, with their item counts
lowered; the agreement and progress they show are then of the items left.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.store import db, tables

_CHUNK = 500  # ids per statement: well under every store's bound-parameter limit


def forget_items(
    engine: Engine | Connection, item_ids: Iterable[str], *, model: str | None = None
) -> dict[str, int]:
    """Delete the review data of ``item_ids`` (of ``model``'s campaigns and judgments, or of every model).

    Given a connection, it works in the caller's transaction (a deletion request that also
    clears other stores commits them all at once).

    Returns counts by kind: ``campaign_items``, ``labels``, ``assignments``,
    ``judgments``, ``endorsements``.
    """
    ids = sorted({str(i) for i in item_ids})
    counts = dict.fromkeys(("campaign_items", "labels", "assignments", "judgments", "endorsements"), 0)
    items_t, j_t = tables.campaign_items, tables.judgments
    with _transaction(engine) as conn:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            items = sa.select(items_t.c.id, items_t.c.campaign_id).where(items_t.c.item_id.in_(chunk))
            judged = sa.select(j_t.c.id).where(j_t.c.item_id.in_(chunk))
            if model is not None:
                items = items.join(tables.campaigns, tables.campaigns.c.id == items_t.c.campaign_id).where(
                    tables.campaigns.c.model == model
                )
                judged = judged.where(j_t.c.model == model)
            rows = conn.execute(items).all()
            pks = [r.id for r in rows]
            jids = list(conn.execute(judged).scalars())
            counts["labels"] += conn.execute(
                sa.delete(tables.labels).where(tables.labels.c.campaign_item_id.in_(pks))
            ).rowcount
            counts["assignments"] += conn.execute(
                sa.delete(tables.assignments).where(tables.assignments.c.campaign_item_id.in_(pks))
            ).rowcount
            counts["campaign_items"] += conn.execute(sa.delete(items_t).where(items_t.c.id.in_(pks))).rowcount
            counts["endorsements"] += conn.execute(
                sa.delete(tables.endorsements).where(tables.endorsements.c.judgment_id.in_(jids))
            ).rowcount
            counts["judgments"] += conn.execute(sa.delete(j_t).where(j_t.c.id.in_(jids))).rowcount
            for campaign_id in {r.campaign_id for r in rows}:
                removed = sum(1 for r in rows if r.campaign_id == campaign_id)
                conn.execute(
                    sa.update(tables.campaigns)
                    .where(tables.campaigns.c.id == campaign_id)
                    .values(item_count=tables.campaigns.c.item_count - removed)
                )
    return counts


@contextmanager
def _transaction(engine: Engine | Connection) -> Iterator[Connection]:
    """The caller's transaction, or one of its own; what it deletes is overwritten, not just freed."""
    if isinstance(engine, Connection):
        with db.secure_delete(engine, "on"):
            yield engine
    else:
        with engine.begin() as conn, db.secure_delete(conn, "on"):
            yield conn
