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

from assay.errors import Forbidden, InvalidInput, NotFound
from assay.review import exports, judgments
from assay.review.accounts import User
from assay.review.campaigns import UNSURE, Campaign, get_campaign
from assay.review.judgments import RULE_MARK, Judgment
from assay.review.worksets import get_item
from assay.store import tables

if TYPE_CHECKING:
    import pandas as pd

items_t = tables.campaign_items
labels_t = tables.labels


def resolve(votes: Counter[str]) -> tuple[str | None, str]:
    """The label a set of votes resolves to, and why: majority rule, ties explicit, "unsure" abstains.

    "unsure" is no vote (it holds no slot either: the item went to someone
    else): an item resolves when one class has more votes than every other.
    Otherwise it is a ``tie`` (classes level) or ``unlabelled`` (no class vote).
    """
    ranked = [(c, n) for c, n in votes.most_common() if c != UNSURE]
    if not ranked:
        return None, "unlabelled"
    top, top_n = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == top_n:
        return None, "tie"
    return top, ("unanimous" if len(ranked) == 1 else "majority")


RULES_TEXT = (
    "An item's label is, in order: (1) the label of its preferred judgment — marked by an admin "
    "(an adjudication is one), or by the campaign's most_endorsed rule; (2) the label of the auto-label "
    'rule it matched; (3) the class most reviewers gave, once it has the labels it wants. "unsure" is no '
    "vote and holds no slot: the item goes to another reviewer. Votes that tie give the item one more "
    "label, up to the campaign's extra labels for ties; a tie past that waits for an admin."
)
COLUMNS = [
    "id", "label", "status", "complete", "reason", "n_labels", "n_unsure", "votes", "reviewers", "source",
    "judgment", "campaign", "model", "model_version", "model_prediction", "model_probability", "score_shown",
    "first_labelled_at", "last_labelled_at",
]  # fmt: skip
RESOLVED = ("judgment", "unanimous", "majority", "auto")
j_t = tables.judgments


def _label_rows(conn: Connection, campaign: Campaign, item_pks: list[int] | None = None) -> Iterator[sa.Row]:
    query = (
        sa.select(
            items_t.c.id.label("pk"),
            items_t.c.item_id,
            items_t.c.prediction,
            items_t.c.probabilities,
            items_t.c.auto_label,
            items_t.c.auto_rule,
            items_t.c.wanted,
            labels_t.c.label,
            labels_t.c.comment,
            labels_t.c.created_at,
            labels_t.c.updated_at,
            labels_t.c.model_version,
            labels_t.c.shown_prediction,
            labels_t.c.shown_probability,
            tables.users.c.pseudonym,
            tables.users.c.username,
            j_t.c.id.label("judgment_id"),
            j_t.c.label.label("judgment_label"),
            j_t.c.preferred_by,
        )
        .outerjoin(labels_t, labels_t.c.campaign_item_id == items_t.c.id)
        .outerjoin(tables.users, tables.users.c.id == labels_t.c.user_id)
        .outerjoin(
            j_t,
            (j_t.c.model == campaign.model)
            & (j_t.c.item_id == items_t.c.item_id)
            & j_t.c.preferred.is_(True),
        )
        .where(items_t.c.campaign_id == campaign.id)
        .order_by(items_t.c.position, labels_t.c.id)
    )
    if item_pks is not None:
        query = query.where(items_t.c.id.in_(item_pks))
    # Streamed: a 100,000-item campaign is exported without holding every row at once.
    yield from conn.execution_options(yield_per=5000).execute(query)


def _decision(campaign: Campaign, first: sa.Row, votes: Counter[str]) -> tuple[str | None, str, str, str]:
    """(label, status, source, reason) of one item, by the rules in ``RULES_TEXT``."""
    if first.judgment_id is not None:
        by = "the most_endorsed rule" if first.preferred_by == RULE_MARK else f"admin {first.preferred_by}"
        source = f"judgment #{first.judgment_id}"
        return first.judgment_label, "judgment", source, f"{source}, preferred by {by}, decides"
    if first.auto_label is not None:
        return first.auto_label, "auto", f"auto: {first.auto_rule}", f"auto-label rule {first.auto_rule!r}"
    label, status = resolve(votes)
    n = sum(v for c, v in votes.items() if c != UNSURE)
    tally = ", ".join(f"{c} {v}" for c, v in sorted(votes.items()) if c != UNSURE) or "no class votes"
    unsure = f"; {votes[UNSURE]} unsure" if votes.get(UNSURE) else ""
    if status == "tie":
        waits = (
            "waits for an admin to settle it"
            if n >= first.wanted >= campaign.max_labels
            else f"requeued for label {n + 1} of up to {campaign.max_labels}"
        )
        return None, status, "review", f"tie ({tally}{unsure}): {waits}"
    if n < first.wanted:
        return label, status, "review", f"{n} of {first.wanted} labels so far ({tally}{unsure})"
    return label, status, "review", f"{status}: {tally}{unsure}"


def _resolved_row(campaign: Campaign, rows: list[sa.Row]) -> dict[str, Any]:
    """The export row of one item from its joined label rows (one row with no label when unlabelled)."""
    first = rows[0]
    labelled = [r for r in rows if r.label is not None]
    voters = [r for r in labelled if r.label != UNSURE]
    votes = Counter(r.label for r in labelled)
    label, status, source, reason = _decision(campaign, first, votes)
    return {
        "id": first.item_id,
        "label": label,
        "status": status,
        "complete": status in ("judgment", "auto") or (label is not None and len(voters) >= first.wanted),
        "reason": reason,
        "n_labels": len(voters),
        "n_unsure": len(labelled) - len(voters),
        "votes": ";".join(f"{c}:{n}" for c, n in sorted(votes.items())),
        "reviewers": ";".join(r.pseudonym for r in labelled),
        "source": source,
        "judgment": first.judgment_id,
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
    import pandas as pd  # label frames only: reviewing never needs it

    frame = pd.DataFrame(out, columns=COLUMNS)
    frame["judgment"] = frame["judgment"].astype("Int64")
    for col in ("first_labelled_at", "last_labelled_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def resolved_labels(engine: Engine, campaign: str | Campaign, *, complete_only: bool = True) -> pd.DataFrame:
    """The campaign's resolved labels as training data: ``id``, ``label`` and provenance columns.

    The one reader of a campaign's labels for training: a model spec's
    ``data.campaign`` and ``assay labels export`` both take these rows. Kept:
    items settled by a preferred judgment or an auto-label rule, and items
    whose votes resolve (``RULES_TEXT``); with ``complete_only`` (the default)
    a voted item also needs all the labels it wants. Columns: ``COLUMNS``
    (``reason`` says in words why the item has its label; ``votes``,
    ``reviewers`` (pseudonyms), ``source`` and ``judgment`` are its provenance).
    """
    if isinstance(campaign, str):
        campaign = get_campaign(engine, campaign)
    frame = resolved_frame(engine, campaign)
    keep = frame["status"].isin(RESOLVED)
    if complete_only:
        keep &= frame["complete"].astype(bool)
    return frame[keep].reset_index(drop=True)


def resolved_item(engine: Engine, campaign: Campaign, item_id: str) -> dict[str, Any]:
    """One item's resolution row (as in ``resolved_frame``), for the pages that show an item."""
    with engine.connect() as conn:
        pk = conn.execute(
            sa.select(items_t.c.id).where(
                items_t.c.campaign_id == campaign.id, items_t.c.item_id == str(item_id)
            )
        ).scalar()
        rows = [] if pk is None else list(_label_rows(conn, campaign, [pk]))
    if not rows:
        raise NotFound(
            f"campaign {campaign.name!r} has no item {item_id!r}", field="item_id", code="unknown_item"
        )
    return _resolved_row(campaign, rows)


def disputes(engine: Engine, campaign: Campaign, *, limit: int = 25, offset: int = 0) -> dict[str, Any]:
    """Items whose reviewers gave different labels (unsure included), a page at a time, for adjudication.

    Each comes with every label and comment, and its resolution as it stands
    (``label``, ``status``, ``reason``); the ties still waiting come first.
    """
    split = (
        sa.select(labels_t.c.campaign_item_id)
        .where(labels_t.c.campaign_id == campaign.id)
        .group_by(labels_t.c.campaign_item_id)
        .having(sa.func.count(sa.distinct(labels_t.c.label)) > 1)
    )
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(split.subquery())).scalar_one()
        page = (
            conn.execute(split.order_by(labels_t.c.campaign_item_id).limit(limit).offset(offset))
            .scalars()
            .all()
        )
        found = []
        for _pk, grouped in itertools.groupby(_label_rows(conn, campaign, list(page)), key=lambda r: r.pk):
            group = list(grouped)
            found.append(
                {
                    **_resolved_row(campaign, group),
                    "labels": [
                        {"reviewer": r.username, "label": r.label, "comment": r.comment}
                        for r in group
                        if r.label is not None
                    ],
                }
            )
    found.sort(key=lambda d: d["label"] is not None)  # stable: unsettled first, then in item order
    return {"total": total, "offset": offset, "items": found}


def adjudicate(
    engine: Engine, campaign: Campaign, admin: User, item_id: str, label: str, rationale: str = ""
) -> Judgment:
    """An admin settles an item: a judgment in the campaign, marked preferred, which decides its label."""
    if not admin.is_admin:
        raise Forbidden("only an admin settles an item")
    item = get_item(engine, campaign, item_id)
    made = judgments.record_judgment(
        engine,
        model=campaign.model,
        item_id=item.item_id,
        label=label,
        classes=campaign.classes,
        rationale=rationale,
        author=admin,
        model_version=campaign.model_version,
        model_prediction=item.prediction,
        campaign_id=campaign.id,
    )
    return judgments.mark_preferred(engine, made.id, admin)


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


def _frame(engine: Engine, campaign: Campaign, *, everything: bool, raw: bool) -> pd.DataFrame:
    if raw:
        return raw_labels(engine, campaign)
    return resolved_frame(engine, campaign) if everything else resolved_labels(engine, campaign)


def labels_csv(engine: Engine, campaign: Campaign, *, everything: bool = False, raw: bool = False) -> str:
    """The rows ``export_labels`` writes, as CSV text (the admin page's download)."""
    return str(_frame(engine, campaign, everything=everything, raw=raw).to_csv(index=False))


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
    frame = _frame(engine, campaign, everything=everything, raw=raw)
    exports.write_frame(frame, output)
    # Forgetting an item rewrites the file without it while the file is as written here.
    exports.record_export(engine, campaign=campaign.name, model=campaign.model, path=output, rows=len(frame))
    return len(frame)
