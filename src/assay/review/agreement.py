"""How far reviewers agree with each other, and how the model compares with their resolved labels.

Agreement is Krippendorff's alpha for nominal labels (from per-item value
counts, so it never builds a reviewers x items matrix) and Cohen's kappa for
every pair of reviewers who labelled the same items. "unsure" is not a value
here: it is treated as a missing rating, since it says nothing about which
class the item is in. Everything is computed from grouped queries or streamed
rows; no request holds a whole campaign's items.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import krippendorff
import numpy as np
import sqlalchemy as sa
from sklearn.metrics import cohen_kappa_score
from sqlalchemy.engine import Engine

from assay.review.campaigns import UNSURE, Campaign
from assay.review.resolution import resolve
from assay.store import tables

labels_t = tables.labels
items_t = tables.campaign_items


def krippendorff_alpha(engine: Engine, campaign: Campaign) -> float | None:
    """Nominal alpha over items with at least two (non-unsure) labels; None when undefined.

    Undefined means no item has two labels yet, or every label is the same class
    (alpha is 0/0 there: no disagreement to expect or observe).
    """
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(labels_t.c.campaign_item_id, labels_t.c.label, sa.func.count())
            .where(labels_t.c.campaign_id == campaign.id, labels_t.c.label != UNSURE)
            .group_by(labels_t.c.campaign_item_id, labels_t.c.label)
        ).all()
    values = {c: j for j, c in enumerate(campaign.classes)}
    items: dict[int, int] = {}
    for item_pk, _label, _n in rows:
        items.setdefault(item_pk, len(items))
    counts = np.zeros((len(items), len(values)), dtype=float)
    for item_pk, label, n in rows:
        counts[items[item_pk], values[label]] = n
    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) == 0 or np.count_nonzero(pairable.sum(axis=0)) < 2:
        return None
    return float(krippendorff.alpha(value_counts=pairable, level_of_measurement="nominal"))


def pairwise_kappa(engine: Engine, campaign: Campaign, *, min_overlap: int = 2) -> list[dict[str, Any]]:
    """Cohen's kappa for each pair of reviewers with ``min_overlap`` items both labelled (not unsure).

    ``kappa`` is None where it is undefined: both reviewers gave the same single
    class to every shared item.
    """
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(labels_t.c.campaign_item_id, tables.users.c.username, labels_t.c.label)
            .join(tables.users, tables.users.c.id == labels_t.c.user_id)
            .where(labels_t.c.campaign_id == campaign.id, labels_t.c.label != UNSURE)
        ).all()
    by_user: dict[str, dict[int, str]] = defaultdict(dict)
    for item_pk, username, label in rows:
        by_user[username][item_pk] = label
    out = []
    for a, b in itertools.combinations(sorted(by_user), 2):
        shared = sorted(by_user[a].keys() & by_user[b].keys())
        if len(shared) < min_overlap:
            continue
        la = [by_user[a][i] for i in shared]
        lb = [by_user[b][i] for i in shared]
        agreed = sum(x == y for x, y in zip(la, lb, strict=True))
        kappa = None if len(set(la) | set(lb)) < 2 else float(cohen_kappa_score(la, lb))
        out.append({"a": a, "b": b, "items": len(shared), "agreement": agreed / len(shared), "kappa": kappa})
    return out


def _rates(tp: int, fp: int, fn: int, tn: int) -> dict[str, Any]:
    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "accuracy": ratio(tp + tn, tp + fp + fn + tn),
    }


def model_vs_labels(
    engine: Engine, campaign: Campaign, operating_points: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The model's decisions against the resolved human labels of the reviewed items.

    Rows: for each class, the model's own prediction (``decision``), and for each
    operating point ``{"class", "threshold", "query"}`` whether the class
    probability reaches its threshold. Auto-labelled items are left out (a rule
    is not a human judgment). Recall is only unbiased for a random-sample
    campaign: other selections review only part of the population.
    """
    ops = {
        name: op
        for name, op in (operating_points or {}).items()
        if op.get("threshold") is not None and op.get("class")
    }
    decision: dict[str, list[int]] = {c: [0, 0, 0, 0] for c in campaign.classes}
    at_op: dict[str, list[int]] = {name: [0, 0, 0, 0] for name in ops}
    n = 0
    for item, truth in _resolved_items(engine, campaign):
        n += 1
        for cls, cell in decision.items():
            cell[_cell(item.prediction == cls, truth == cls)] += 1
        for name, op in ops.items():
            p = item.probabilities.get(op["class"])
            flagged = p is not None and not math.isnan(p) and p >= op["threshold"]
            at_op[name][_cell(flagged, truth == op["class"])] += 1
    rows_out = [
        {"name": "decision", "class": c, "threshold": None, "query": None, **_rates(*v)}
        for c, v in decision.items()
    ]
    rows_out += [
        {
            "name": name,
            "class": op["class"],
            "threshold": op["threshold"],
            "query": op.get("query"),
            **_rates(*at_op[name]),
        }
        for name, op in ops.items()
    ]
    method = campaign.selection.get("method")
    note = (
        None
        if method == "random"
        else f"items were chosen by '{method}', not at random: recall counts only the reviewed items"
    )
    return {"resolved_items": n, "rows": rows_out, "note": note}


def _resolved_items(engine: Engine, campaign: Campaign) -> Iterator[tuple[Any, str]]:
    """(the item's row, its resolved label) for every fully labelled, resolved item the model
    scored with probabilities; auto-labelled items are left out. Streamed, in item order."""
    query = (
        sa.select(items_t.c.id, items_t.c.prediction, items_t.c.probabilities, labels_t.c.label)
        .join(labels_t, labels_t.c.campaign_item_id == items_t.c.id)
        .where(items_t.c.campaign_id == campaign.id, items_t.c.auto_label.is_(None))
        .order_by(items_t.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execution_options(yield_per=5000).execute(query)
        for _pk, grouped in itertools.groupby(rows, key=lambda r: r.id):
            group = list(grouped)
            if len(group) < campaign.labels_per_item:
                continue
            truth, _status = resolve(Counter(r.label for r in group))
            if truth is not None and group[0].probabilities is not None:
                yield group[0], truth


def _cell(predicted: bool, actual: bool) -> int:
    """Index into [tp, fp, fn, tn]."""
    if predicted:
        return 0 if actual else 1
    return 2 if actual else 3


def summary(engine: Engine, campaign: Campaign) -> dict[str, Any]:
    """Alpha and the pairwise kappas, with their mean, for the admin page and the API."""
    kappas = pairwise_kappa(engine, campaign)
    defined = [k["kappa"] for k in kappas if k["kappa"] is not None]
    return {
        "krippendorff_alpha": krippendorff_alpha(engine, campaign),
        "pairwise_kappa": kappas,
        "mean_kappa": sum(defined) / len(defined) if defined else None,
        "unsure": "treated as a missing rating",
    }
