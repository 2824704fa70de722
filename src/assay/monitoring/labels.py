"""Ground truth for served scores: labels that arrive after the score, from products or files.

A label says what an item the model scored really was. It is accepted only for an item the
prediction log holds for that model, once per (model, item), and only as one of the classes of
the version that scored it; every other item is refused on its own, with a code and a reason,
and the rest are stored (``add_labels``). Review campaigns are the other source of labels: their
resolved labels are read by the caller (the review domain owns them) and passed to the analysis
beside these (``read_labels`` merges nothing itself).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import InvalidInput
from assay.serving.features import MAX_ID_LENGTH
from assay.store import db, tables
from assay.store.log_store import LogStore

_CHUNK = 900  # bound parameters per IN (...) list, far below SQLite's limit
MAX_LABEL_LENGTH = 200


@dataclass(frozen=True)
class Outcome:
    index: int
    id: str | None
    accepted: bool
    code: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.accepted:
            return {"index": self.index, "id": self.id, "status": "accepted"}
        return {
            "index": self.index,
            "id": self.id,
            "status": "refused",
            "error": {"code": self.code, "message": self.message},
        }


def _text(value: Any, limit: int) -> str | None:
    """An id or label as text: strings and whole numbers; anything else is no id."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= limit:
        return value
    return None


def _as_class(value: Any, classes: Sequence[str]) -> str | None:
    """``value`` as one of ``classes``: the class itself, or JSON true/false for "True"/"False"."""
    if isinstance(value, bool):
        wanted = "true" if value else "false"
        matches = [c for c in classes if c.lower() == wanted]
        return matches[0] if len(matches) == 1 else None
    text = _text(value, MAX_LABEL_LENGTH)
    return text if text in classes else None


def add_labels(
    engine: Engine,
    log: LogStore,
    model: str,
    items: Sequence[Any],
    *,
    source: str,
    classes_of: Callable[[int], Sequence[str]],
) -> list[Outcome]:
    """Store labels ``[{"id": ..., "label": ...}]`` of ``model``'s items; one outcome per item.

    ``classes_of(version)`` names the classes of a version of the model (the classes a label of
    an item that version scored must be one of).
    """
    outcomes, wanted = _parse(items)
    versions = log.last_versions(model, list(wanted))
    existing = _labelled(engine, model, list(wanted))
    rows: list[dict[str, Any]] = []
    now = db.now()
    class_cache: dict[int, Sequence[str]] = {}
    for item_id, (i, raw) in wanted.items():
        version = versions.get(item_id)
        if version is None:
            outcomes[i] = Outcome(
                i, item_id, False, "unknown_item", f"model {model!r} has logged no score of item {item_id!r}"
            )
        elif item_id in existing:
            outcomes[i] = Outcome(
                i, item_id, False, "duplicate_label", f"item {item_id!r} already has a label"
            )
        else:
            if version not in class_cache:
                class_cache[version] = list(classes_of(version))
            classes = class_cache[version]
            label = _as_class(raw, classes)
            if label is None:
                outcomes[i] = Outcome(
                    i,
                    item_id,
                    False,
                    "unknown_class",
                    f"label {str(raw)[:100]!r} is not a class of {model}@{version}: {', '.join(classes)}",
                )
                continue
            rows.append(
                {"model": model, "item_id": item_id, "label": label, "source": source, "created_at": now}
            )
            outcomes[i] = Outcome(i, item_id, True)
    if rows:
        _insert_new(engine, rows, outcomes, wanted)
    return [outcomes[i] for i in range(len(items))]


def _parse(items: Sequence[Any]) -> tuple[dict[int, Outcome], dict[str, tuple[int, Any]]]:
    """Refusals of malformed items by index, and item id -> (index, raw label) of the others."""
    outcomes: dict[int, Outcome] = {}
    wanted: dict[str, tuple[int, Any]] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or set(item) - {"id", "label"}:
            outcomes[i] = Outcome(
                i, None, False, "invalid_item", "each label is an object with 'id' and 'label'"
            )
            continue
        item_id = _text(item.get("id"), MAX_ID_LENGTH)
        if item_id is None:
            message = f"id must be a string or whole number of 1-{MAX_ID_LENGTH} characters"
            outcomes[i] = Outcome(i, None, False, "invalid_id", message)
        elif "label" not in item or item["label"] is None:
            outcomes[i] = Outcome(i, item_id, False, "missing_label", "the item has no label")
        elif item_id in wanted:
            message = f"item {item_id!r} is labelled twice in this batch"
            outcomes[i] = Outcome(i, item_id, False, "duplicate_label", message)
        else:
            wanted[item_id] = (i, item["label"])
    return outcomes, wanted


def _labelled(engine: Engine, model: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` already have a label."""
    labels = tables.monitor_labels
    existing: set[str] = set()
    with engine.connect() as conn:
        for lo in range(0, len(ids), _CHUNK):
            existing.update(
                conn.execute(
                    sa.select(labels.c.item_id).where(
                        labels.c.model == model, labels.c.item_id.in_(ids[lo : lo + _CHUNK])
                    )
                ).scalars()
            )
    return existing


def _insert_new(
    engine: Engine,
    rows: list[dict[str, Any]],
    outcomes: dict[int, Outcome],
    wanted: dict[str, tuple[int, Any]],
) -> None:
    """Insert, skipping items someone labelled since the check; those are refused as duplicates."""
    table = tables.monitor_labels
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            statement: Any = pg_insert(table).on_conflict_do_nothing(index_elements=["model", "item_id"])
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=["model", "item_id"])
        for lo in range(0, len(rows), 5000):
            conn.execute(statement, rows[lo : lo + 5000])
        # A row that is not ours lost a race with another writer.
        model = rows[0]["model"]
        ours = {(r["item_id"], r["source"], r["label"]) for r in rows}
        ids = [r["item_id"] for r in rows]
        created = rows[0]["created_at"]
        for lo in range(0, len(ids), _CHUNK):
            stored = conn.execute(
                sa.select(table.c.item_id, table.c.source, table.c.label, table.c.created_at).where(
                    table.c.model == model, table.c.item_id.in_(ids[lo : lo + _CHUNK])
                )
            ).all()
            for item_id, source, label, at in stored:
                if (item_id, source, label) not in ours or _naive(at) != _naive(created):
                    i = wanted[item_id][0]
                    outcomes[i] = Outcome(
                        i, item_id, False, "duplicate_label", f"item {item_id!r} already has a label"
                    )


def _naive(at: Any) -> Any:
    """A stored time as naive UTC: SQLite hands DateTime(timezone=True) back without its zone,
    PostgreSQL in the session's zone."""
    if at is None or at.tzinfo is None:
        return at
    return at.astimezone(UTC).replace(tzinfo=None)


def read_labels(engine: Engine, model: str) -> dict[str, str]:
    """Item id -> label of every stored label of ``model``."""
    table = tables.monitor_labels
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.select(table.c.item_id, table.c.label).where(table.c.model == model)).all()
        )


def label_mark(engine: Engine, model: str, *, campaigns: bool) -> int:
    """A number that changes whenever ``model``'s labels may have (0 without any): labels added
    or taken back over the API or from files and, with ``campaigns``, its review campaigns'
    labels given, changed or taken back, judgments and endorsements recorded, campaigns created.
    Cheap (a few aggregates), so that a check can tell whether labels arrived before reading them."""
    table = tables.monitor_labels
    facts: list[Any] = []
    with engine.connect() as conn:
        facts.append(
            conn.execute(
                sa.select(sa.func.count(), sa.func.max(table.c.id)).where(table.c.model == model)
            ).one()
        )
        if campaigns:
            facts += _campaign_facts(conn, model)
    if not any(row[0] for row in facts):
        return 0
    return zlib.crc32(repr([tuple(row) for row in facts]).encode()) & 0x3FFFFFFF or 1


def _campaign_facts(conn: Connection, model: str) -> list[Any]:
    campaigns, votes, judgments, endorsements = (
        tables.campaigns,
        tables.labels,
        tables.judgments,
        tables.endorsements,
    )
    ours = sa.select(campaigns.c.id).where(campaigns.c.model == model).scalar_subquery()
    judged = sa.select(judgments.c.id).where(judgments.c.model == model).scalar_subquery()
    queries = [
        sa.select(sa.func.count(), sa.func.max(campaigns.c.id)).where(campaigns.c.model == model),
        sa.select(sa.func.count(), sa.func.max(votes.c.id), sa.func.max(votes.c.updated_at)).where(
            votes.c.campaign_id.in_(ours)
        ),
        sa.select(sa.func.count(), sa.func.max(judgments.c.id)).where(judgments.c.model == model),
        sa.select(sa.func.count(), sa.func.max(endorsements.c.id)).where(
            endorsements.c.judgment_id.in_(judged)
        ),
    ]
    return [conn.execute(q).one() for q in queries]


def forget_labels(conn: Connection, model: str, item_ids: Sequence[str]) -> int:
    """Delete ``model``'s stored labels of ``item_ids`` in the caller's transaction; how many."""
    table = tables.monitor_labels
    ids = list(dict.fromkeys(item_ids))
    deleted = 0
    for lo in range(0, len(ids), 500):
        part = ids[lo : lo + 500]
        deleted += (
            conn.execute(sa.delete(table).where(table.c.model == model, table.c.item_id.in_(part))).rowcount
            or 0
        )
    return deleted


def check_source(source: str) -> str:
    if not source or len(source) > 300:
        raise InvalidInput("a label source must be 1-300 characters", field="source")
    return source


def campaign_labels(engine: Engine, model: str) -> dict[str, str]:
    """Item id -> resolved label from the model's review campaigns (a later campaign wins an item).

    Reviews produce ground truth; monitoring reads it here, as training does through its caller.
    """
    from assay.review import campaigns, resolution

    out: dict[str, str] = {}
    for campaign in sorted(campaigns.list_campaigns(engine), key=lambda c: c.id):
        if campaign.model == model:
            frame = resolution.resolved_labels(engine, campaign)
            out.update(zip(frame["id"].astype(str), frame["label"].astype(str), strict=True))
    return out
