"""Sharded training (SISA: Bourtoule et al., "Machine Unlearning", IEEE S&P 2021).

The training rows are split by a seeded hash of their item id into ``shards`` shards, and each
shard's rows into ``slices`` slices by the same hash. Each shard gets its own LightGBM model,
trained slice by slice: slice r adds its share of the trees on the rows of slices 0..r,
continuing from the model after slice r-1 (LightGBM's ``init_model``), and the text model after
every slice is kept. The served probability is the mean of the shards'.

Removing an item changes only its shard, and that shard only from the item's slice on; the
other shards and the earlier slices are exactly what a training without the item would have
produced, because every step is seeded and deterministic and a row's shard and slice depend on
its id alone. So forgetting continues the shard from the checkpoint before the first affected
slice, and the result equals, bit for bit, a training from scratch without those items.
"""

from __future__ import annotations

import hashlib
from typing import Any

import lightgbm
import numpy as np
import pandas as pd

from assay.errors import DataError
from assay.modelling.assessment import Progress
from assay.modelling.candidates import CANDIDATES
from assay.modelling.preparation import Prepared
from assay.modelling.publication import Refitted, plain_refit
from assay.modelling.selection import CandidateResult, metric_score
from assay.modelling.spec import ModelSpec, UnlearningSpec
from assay.registry.artifacts import booster_text
from assay.registry.ensemble import ShardedModel, check_text

# Statistics the card compares sharded and unsharded models by (binary and multi-class alike).
CARD_METRICS = ("roc_auc", "average_precision", "log_loss")


def assign(ids: np.ndarray, shards: int, slices: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(shard, slice) of each item id: a seeded SipHash of the id, so the same on every machine."""
    key = hashlib.sha256(f"assay-sisa:{seed}".encode()).hexdigest()[:16]
    h = pd.util.hash_array(np.asarray(ids, dtype=object).astype(str).astype(object), hash_key=key)
    return (h % np.uint64(shards)).astype(np.int64), ((h // np.uint64(shards)) % np.uint64(slices)).astype(
        np.int64
    )


def trees_per_slice(n_estimators: int, slices: int) -> list[int]:
    """The trees each slice adds: the winner's count, spread as evenly as it goes."""
    base, extra = divmod(n_estimators, slices)
    trees = [base + (1 if r < extra else 0) for r in range(slices)]
    if min(trees) < 1:
        raise DataError(f"{slices} slices need at least as many trees; the model has {n_estimators}")
    return trees


def fit_shards(
    spec: ModelSpec,
    data: Prepared,
    params: dict[str, Any],
    plan: UnlearningSpec,
    *,
    previous: ShardedModel | None = None,
    start: dict[int, int] | None = None,
    say: Progress = lambda _m: None,
) -> ShardedModel:
    """Train every shard slice by slice; with ``previous``, shard s restarts at slice
    ``start[s]`` from its checkpoint and a shard not in ``start`` is kept as it was."""
    shard, slice_ = assign(data.ids, plan.shards, plan.slices, spec.seed)
    trees = trees_per_slice(int(params["n_estimators"]), plan.slices)
    k = len(data.classes)
    texts = []
    for s in range(plan.shards):
        first = 0 if previous is None or start is None else start.get(s, plan.slices)
        kept = [] if previous is None else previous.texts[s][:first]
        if first < plan.slices:
            say(f"  shard {s + 1}/{plan.shards}: slices {first + 1}..{plan.slices}")
        rows = shard == s
        texts.append(
            _fit_slices(
                spec, data, params, trees, kept, first, data.X[rows], data.y[rows], slice_[rows], k, s
            )
        )
    lineage_plan = {"shards": plan.shards, "slices": plan.slices, "seed": spec.seed, "trees": trees}
    return ShardedModel(texts, k, data.X.shape[1], lineage_plan)


def _fit_slices(
    spec: ModelSpec,
    data: Prepared,
    params: dict[str, Any],
    trees: list[int],
    kept: list[str],
    first: int,
    X: np.ndarray,
    y: np.ndarray,
    slices: np.ndarray,
    k: int,
    shard: int,
) -> list[str]:
    """Shard ``shard``'s text models after each slice, training slices ``first``.. on top of ``kept``."""
    texts = list(kept)
    for r in range(first, len(trees)):
        rows = slices <= r
        present = np.bincount(y[rows], minlength=k)
        if present.min() == 0:
            missing = data.classes[int(present.argmin())]
            raise DataError(
                f"shard {shard}, slices 0..{r}: no rows of class {missing!r}; "
                "use fewer training.unlearning shards or slices",
                field="training.unlearning",
            )
        estimator = CANDIDATES["lightgbm"].estimator(
            {**params, "n_estimators": trees[r]}, data.schema, spec.seed
        )
        # The checkpoint goes through its text, as a stored one does: the same bytes either way.
        if texts and r == first:  # a stored checkpoint: the strict reader sees it before LightGBM
            check_text(texts[-1], k, data.X.shape[1])
        init = lightgbm.Booster(model_str=texts[-1]) if texts else None
        estimator.fit(
            X[rows], y[rows], categorical_feature=data.schema.categorical_indices or "auto", init_model=init
        )
        texts.append(booster_text(estimator.booster_))
    return texts


def sharded_refit(spec: ModelSpec, data: Prepared, winner: CandidateResult, say: Progress) -> Refitted:
    """The Refit for specs with ``[training.unlearning]``: the sharded model, and for its card the
    held-out cost against one unsharded model and, when asked, a curve against shard count."""
    plan = spec.training.unlearning
    assert plan is not None
    model = fit_shards(spec, data, winner.params, plan, say=say)
    metrics = {"sharded": held_out_metrics(data, model.predict_proba(data.X_test))}
    curve = []
    if plan.curve:
        say("  measuring the unsharded model and the curve of accuracy against shard count")
        unsharded = plain_refit(spec, data, winner, say).estimator
        metrics["unsharded"] = held_out_metrics(data, unsharded.predict_proba(data.X_test))
        curve.append({"shards": 1, **metrics["unsharded"]})
        s = 2
        while s < plan.shards:
            point = fit_shards(spec, data, winner.params, UnlearningSpec(s, 1, False))
            curve.append({"shards": s, **held_out_metrics(data, point.predict_proba(data.X_test))})
            s *= 2
        if plan.shards > 1:
            curve.append({"shards": plan.shards, "slices": plan.slices, **metrics["sharded"]})
    card: dict[str, Any] = {
        "fast": plan.shards > 1 or plan.slices > 1,
        "note": (
            f"{plan.shards} shard(s) of {plan.slices} slice(s): forgetting an item retrains only its "
            "shard, from the slice it joined"
        ),
        "shards": plan.shards,
        "slices": plan.slices,
        "metrics": metrics,
        "curve": curve,
    }
    if "unsharded" in metrics:
        # How much worse sharding makes each statistic (log loss is better smaller).
        sign = {"log_loss": -1.0}
        card["cost"] = {
            m: round(sign.get(m, 1.0) * (metrics["unsharded"][m] - v), 6)
            for m, v in metrics["sharded"].items()
        }
    return Refitted(model, card, dict(model.plan))


def held_out_metrics(data: Prepared, proba: np.ndarray) -> dict[str, float]:
    """ROC-AUC, average precision and log loss (positive: smaller is better) on held-out data."""
    index = {c: i for i, c in enumerate(data.classes)}
    y = np.array([index[v] for v in data.y_test])
    out = {m: metric_score(m, y, proba) for m in CARD_METRICS}
    out["log_loss"] = -out["log_loss"]
    return {m: round(v, 6) for m, v in out.items()}


def training_options(engine: Any, spec: ModelSpec) -> dict[str, Any]:
    """What every training of ``spec`` passes to ``train``: the model's exclusion list (forgotten
    items stay out) and, for a spec with ``[training.unlearning]``, the sharded refit."""
    from assay.unlearning.exclusions import ExclusionList

    return {
        "exclusion": ExclusionList(engine, spec.name),
        "refit": sharded_refit if spec.training.unlearning is not None else None,
    }
