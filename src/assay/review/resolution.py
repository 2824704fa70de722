"""From labels to training data: how an item's label is resolved, and the export of the result.

``resolved_labels`` is what a model spec's ``data.campaign`` reads and what
``assay labels export`` writes: the same rows, with each label's provenance.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import InvalidInput
from assay.review.campaigns import UNSURE, Campaign, get_campaign
from assay.store import db

if TYPE_CHECKING:
    import pandas as pd

items_t = db.campaign_items
labels_t = db.labels


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
    import pandas as pd  # label frames only: reviewing never needs it

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
    import pandas as pd

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
