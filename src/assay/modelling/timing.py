"""Serving cost as a property of a model: what one row and 1,000 rows cost to predict.

Measured on each candidate during cross-validation (its first fold's model), the way the server
will predict it: the compiled form when the model compiles (``compilation``), through the fast
single-row path (``assay.serving.predictor``), one thread. The comparison table and the card
show it, and ``training.max_predict_us`` keeps a family too slow to serve from winning.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from assay.errors import SpecError
from assay.modelling.compilation import Compilation, compile_estimator

# One row is timed over this many calls (the median is kept), 1,000 rows over BATCH_REPEATS.
SINGLE_CALLS = 200
BATCH_ROWS = 1000
BATCH_REPEATS = 3
# The single-row measurement stops early once this much time has gone (a very slow model).
SINGLE_BUDGET_S = 1.0


def serving_cost(estimator: Any, X: np.ndarray) -> tuple[dict[str, Any], Compilation]:
    """({"runtime", "predict_us", "batch_us"}, the compilation) of a fitted estimator on rows ``X``."""
    compilation = compile_estimator(estimator, X)
    predict = served_predict(estimator, compilation)
    rows = np.resize(np.asarray(X, dtype=np.float64), (BATCH_ROWS, X.shape[1]))
    single = _median_time(predict, rows[:1], SINGLE_CALLS, SINGLE_BUDGET_S)
    batch = _median_time(predict, rows, BATCH_REPEATS, float("inf"))
    cost = {"runtime": compilation.runtime, "predict_us": single * 1e6, "batch_us": batch * 1e6}
    return cost, compilation


def served_predict(estimator: Any, compilation: Compilation) -> Callable[[np.ndarray], np.ndarray]:
    """The function the server will call for ``estimator``'s probabilities."""
    from assay.serving.predictor import fast_predict

    predictor = compilation.predictor
    if predictor is None and compilation.runtime == "lightgbm":
        from assay.registry.artifacts import lightgbm_predictor

        text = estimator.booster_.model_to_string().encode()
        predictor = lightgbm_predictor(text, len(estimator.classes_), int(estimator.n_features_in_))
    if predictor is None:
        return estimator.predict_proba
    return fast_predict(predictor)


def _median_time(fn: Callable[[np.ndarray], Any], X: np.ndarray, calls: int, budget_s: float) -> float:
    fn(X)  # warm: first-call set-up (thread state, caches) is not the per-call cost
    times = []
    deadline = time.perf_counter() + budget_s
    for _ in range(calls):
        started = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - started)
        if started > deadline:
            break
    return float(np.median(times))


def fast_enough(results: Sequence[Any], max_predict_us: float | None, source: str) -> list[Any]:
    """The cross-validated candidates whose one-row predict fits ``training.max_predict_us``."""
    if max_predict_us is None:
        return list(results)
    kept = [r for r in results if r.serving is not None and r.serving["predict_us"] <= max_predict_us]
    if not kept:
        measured = ", ".join(
            f"{r.candidate} {r.serving['predict_us']:.0f} µs" for r in results if r.serving is not None
        )
        raise SpecError(
            f"{source}: training.max_predict_us: no candidate predicts one row within "
            f"{max_predict_us:g} µs ({measured})",
            field="training.max_predict_us",
        )
    return kept
