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

Each shard's model costs about a shard's share of one unsharded model: it gets the winner's
trees divided by the shard count (at least ``MIN_SHARD_TREES``) with the learning rate raised
so that trees x rate stays the same, so the S shards together train and predict at about the
cost of one unsharded model, and forgetting an item refits about 1/S^2 of it. The plan that
results (shards, slices, trees per slice, rate, threads) is recorded with the version; continuing
or verifying a version repeats its recorded plan.

Each shard is fitted on one thread (``SHARD_THREADS``), several shards at once: LightGBM's sums,
hence its trees, depend on its thread count, so one thread makes a shard the same on every
machine, and a shard's few thousand rows fit faster on one thread than shared out over several.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import lightgbm
import numpy as np
import pandas as pd

from assay.errors import DataError
from assay.modelling.candidates import CANDIDATES, fit_threads
from assay.modelling.datasets import id_strings
from assay.modelling.preparation import Prepared
from assay.modelling.progress import Progress
from assay.modelling.publication import Refitted, plain_refit
from assay.modelling.selection import CandidateResult, metric_score
from assay.modelling.spec import ModelSpec, UnlearningSpec
from assay.registry.artifacts import booster_text
from assay.registry.ensemble import HeldOut, ShardedModel, check_text, rows_digest

# Statistics the card compares sharded and unsharded models by (binary and multi-class alike).
CARD_METRICS = ("roc_auc", "average_precision", "log_loss")
ROWS_PER_SHARD = 5_000  # "auto" shards: fewer rows per shard cost held-out accuracy (see auto_shards)
MAX_AUTO_SHARDS = 16
MIN_SHARD_TREES = 50  # fewer, larger steps stop paying: a shard's trees are never cut below this
LIGHTGBM_LEARNING_RATE = 0.1  # LightGBM's own default, for params that do not name one
SHARD_THREADS = 1  # each shard's fit (see the module); the shards run side by side instead


def assign(ids: np.ndarray, shards: int, slices: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(shard, slice) of each item id: a seeded SipHash of the id, so the same on every machine."""
    key = hashlib.sha256(f"assay-sisa:{seed}".encode()).hexdigest()[:16]
    # Ids are distinct: hashing them through a factorization (pandas' default) only costs time.
    h = pd.util.hash_array(id_strings(ids), hash_key=key, categorize=False)
    return (h % np.uint64(shards)).astype(np.int64), ((h // np.uint64(shards)) % np.uint64(slices)).astype(
        np.int64
    )


def trees_per_slice(n_estimators: int, slices: int) -> list[int]:
    """The trees each slice adds: the shard's count, spread as evenly as it goes."""
    base, extra = divmod(n_estimators, slices)
    trees = [base + (1 if r < extra else 0) for r in range(slices)]
    if min(trees) < 1:
        raise DataError(f"{slices} slices need at least as many trees; the model has {n_estimators}")
    return trees


def auto_shards(rows: int) -> int:
    """``shards = "auto"``: a shard per ``ROWS_PER_SHARD`` training rows, 1 to ``MAX_AUTO_SHARDS``.

    Measured on editquality (15,000 rows; bench/RESULTS.md): 2 or 3 shards of scaled trees
    cost about 0.002 of held-out ROC-AUC, 4 shards 0.006, 8 shards 0.006-0.008."""
    return max(1, min(MAX_AUTO_SHARDS, rows // ROWS_PER_SHARD))


def shard_plan(plan: UnlearningSpec, params: dict[str, Any], rows: int, seed: int) -> dict[str, Any]:
    """What every shard is trained by: shard and slice counts, the trees each slice adds and the
    learning rate. ``rows``: the training rows before forgotten items were left out, so that
    forgetting never changes an "auto" shard count (a training from scratch would choose the same)."""
    shards = auto_shards(rows) if plan.shards == "auto" else int(plan.shards)
    total = int(params["n_estimators"])
    trees = min(total, max(-(-total // shards), MIN_SHARD_TREES))
    rate = float(params.get("learning_rate", LIGHTGBM_LEARNING_RATE)) * total / trees
    return {
        "shards": shards,
        "slices": plan.slices,
        "seed": seed,
        "trees": trees_per_slice(trees, plan.slices),
        "learning_rate": rate,
        "threads": SHARD_THREADS,
    }


PLAN_KEYS = ("shards", "slices", "seed", "trees", "learning_rate", "threads")


def recorded_plan(lineage: Mapping[str, Any]) -> dict[str, Any]:
    """The shard plan a sharded version was trained by, from its lineage."""
    u = lineage.get("unlearning", {})
    return {key: u[key] for key in PLAN_KEYS if key in u}


def fit_shards(
    data: Prepared,
    params: dict[str, Any],
    plan: dict[str, Any],
    *,
    previous: ShardedModel | None = None,
    start: dict[int, int] | None = None,
    say: Progress = lambda _m: None,
) -> ShardedModel:
    """Train every shard slice by slice as ``plan`` (``shard_plan``) says; with ``previous``,
    shard s restarts at slice ``start[s]`` from its checkpoint and a shard not in ``start`` is
    kept as it was. Shards are fitted side by side, as many at once as fits may use threads.
    A plan recorded before rates were scaled keeps the winner's learning rate; one recorded
    before shards had one thread each fits every shard on every core, one after the other."""
    shards, slices, seed = int(plan["shards"]), int(plan["slices"]), int(plan["seed"])
    shard, slice_ = assign(data.ids, shards, slices, seed)
    params = {**params, **({"learning_rate": plan["learning_rate"]} if "learning_rate" in plan else {})}
    threads = int(plan.get("threads", os.cpu_count() or 1))
    k = len(data.classes)
    texts: list[list[str]] = [[] for _ in range(shards)]
    work = []
    for s in range(shards):
        first = 0 if previous is None or start is None else start.get(s, slices)
        texts[s] = [] if previous is None else previous.texts[s][:first]
        if first < slices:
            say(f"  shard {s + 1}/{shards}: slices {first + 1}..{slices}")
            rows = shard == s
            work.append((first, _Shard(s, data.X[rows], data.y[rows], slice_[rows])))

    def fit(job: tuple[int, _Shard]) -> None:
        first, part = job
        texts[part.number] = _fit_slices(
            data, params, seed, list(plan["trees"]), threads, texts[part.number], first, part, k
        )

    with ThreadPoolExecutor(max(1, min(len(work), fit_threads() // threads))) as pool:
        list(pool.map(fit, work))  # LightGBM lets go of the interpreter while it fits
    retrained = {part.number for _, part in work}
    return ShardedModel(texts, k, data.X.shape[1], dict(plan), _held_out(data, shards, previous, retrained))


def _held_out(data: Prepared, shards: int, previous: ShardedModel | None, retrained: set[int]) -> HeldOut:
    """What the model knows of its held-out rows: the outputs there of the shards it kept from
    ``previous``, when ``previous`` knew them on these very rows."""
    rows = rows_digest(data.X_test)
    known = previous.held_out if previous is not None else None
    if known is None or known.rows != rows or len(known.shards) != shards:
        return HeldOut(rows, [None] * shards)
    return HeldOut(rows, [None if s in retrained else p for s, p in enumerate(known.shards)])


@dataclass
class _Shard:
    """One shard's training rows and each row's slice."""

    number: int
    X: np.ndarray
    y: np.ndarray
    slices: np.ndarray


def _fit_slices(
    data: Prepared,
    params: dict[str, Any],
    seed: int,
    trees: list[int],
    threads: int,
    kept: list[str],
    first: int,
    shard: _Shard,
    k: int,
) -> list[str]:
    """The shard's text models after each slice, training slices ``first``.. on top of ``kept``."""
    texts = list(kept)
    for r in range(first, len(trees)):
        rows = shard.slices <= r
        present = np.bincount(shard.y[rows], minlength=k)
        if present.min() == 0:
            missing = data.classes[int(present.argmin())]
            raise DataError(
                f"shard {shard.number}, slices 0..{r}: no rows of class {missing!r}; "
                "use fewer training.unlearning shards or slices",
                field="training.unlearning",
            )
        # The plan's threads, whatever limit the caller runs under: LightGBM's sums (and so its
        # trees) depend on the thread count, and a continued shard must equal a fresh one.
        estimator = CANDIDATES["lightgbm"].estimator(
            {**params, "n_estimators": trees[r]}, data.schema, seed, threads=threads
        )
        # The checkpoint goes through its text, as a stored one does: the same bytes either way.
        if texts and r == first:  # a stored checkpoint: the strict reader sees it before LightGBM
            check_text(texts[-1], k, data.X.shape[1])
        init = lightgbm.Booster(model_str=texts[-1]) if texts else None
        estimator.fit(
            shard.X[rows],
            shard.y[rows],
            categorical_feature=data.schema.categorical_indices or "auto",
            init_model=init,
        )
        texts.append(booster_text(estimator.booster_))
    return texts


def sharded_refit(spec: ModelSpec, data: Prepared, winner: CandidateResult, say: Progress) -> Refitted:
    """The Refit for specs with ``[training.unlearning]``: the sharded model, and for its card the
    held-out cost against one unsharded model and, when asked, a curve against shard count."""
    wanted = spec.training.unlearning
    assert wanted is not None
    plan = shard_plan(wanted, winner.params, data.read_rows, spec.seed)
    shards, slices = plan["shards"], plan["slices"]
    say(
        f"  {shards} shard(s) of {slices} slice(s), {sum(plan['trees'])} trees each at learning rate "
        f"{plan['learning_rate']:.4g}"
    )
    model = fit_shards(data, winner.params, plan, say=say)
    metrics = {"sharded": held_out_metrics(data, model.predict_proba(data.X_test))}
    curve = []
    if wanted.curve:
        say("  measuring the unsharded model and the curve of accuracy against shard count")
        unsharded = plain_refit(spec, data, winner, say).estimator
        metrics["unsharded"] = held_out_metrics(data, unsharded.predict_proba(data.X_test))
        curve.append({"shards": 1, **metrics["unsharded"]})
        s = 2
        while s < shards:
            point_plan = shard_plan(UnlearningSpec(s, 1, False), winner.params, data.read_rows, spec.seed)
            point = fit_shards(data, winner.params, point_plan)
            curve.append({"shards": s, **held_out_metrics(data, point.predict_proba(data.X_test))})
            s *= 2
        if shards > 1:
            curve.append({"shards": shards, "slices": slices, **metrics["sharded"]})
    card: dict[str, Any] = {
        "fast": shards > 1 or slices > 1,
        "note": (
            f"{shards} shard(s) of {slices} slice(s), {sum(plan['trees'])} trees each at learning rate "
            f"{plan['learning_rate']:.4g}: forgetting an item retrains only its shard, from the slice it joined"
        ),
        "shards": shards,
        "slices": slices,
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
