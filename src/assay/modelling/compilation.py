"""Compiling a trained estimator into the form its version is served by, and proving it the same.

``compile_estimator`` turns a fitted scikit-learn model into its compiled form
(``assay.registry.compiled``): tree ensembles into LightGBM text (``tree_text``), the
logistic-regression pipeline into per-feature linear terms. Then it scores the held-out rows
with both and keeps the compiled form only when no probability differs by more than
``AGREEMENT_TOLERANCE``; otherwise, or when the model uses something the compiled forms cannot
say, the version is served by its reference (the estimator itself) and ``Compilation.reason``
says why. Compiling never fails a training run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.modelling.linear_terms import NotLinear, linear_model
from assay.modelling.progress import Progress
from assay.modelling.tree_text import NotCompilable, boosting_text, forest_text
from assay.registry.compiled import (
    AGREEMENT_TOLERANCE,
    COMPILED_FILES,
    LinearPredictor,
    linear_bytes,
    read_linear,
)
from assay.registry.ensemble import ShardedModel
from assay.registry.lightgbm_text import check_lightgbm_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compilation:
    """What compiling gave: the compiled file (None when the reference serves) and why."""

    runtime: str  # "lightgbm-text" | "linear-json" (compiled), "lightgbm" (as trained) or "reference"
    data: bytes | None
    output: str  # "probability" | "average" (a forest's averaged raw scores)
    max_abs_diff: float | None  # largest |compiled - reference| probability on the checked rows
    reason: str | None  # why the reference serves, when it does
    predictor: Any = field(default=None, repr=False, compare=False)  # the compiled form, loaded

    def stored(self) -> tuple[dict[str, Any], bytes] | None:
        """(model.json's ``compiled`` entry, the compiled file) for ``save_model``; None if none."""
        meta = self.meta()
        return None if meta is None or self.data is None else (meta, self.data)

    def meta(self) -> dict[str, Any] | None:
        """model.json's ``compiled`` entry."""
        if self.runtime not in COMPILED_FILES:
            return None
        return {
            "format": self.runtime,
            "file": COMPILED_FILES[self.runtime],
            "output": self.output,
            "max_abs_diff": self.max_abs_diff,
        }

    def lineage(self) -> dict[str, Any]:
        """The lineage's ``inference`` entry: which runtime serves, its agreement, and why."""
        return {"runtime": self.runtime, "max_abs_diff": self.max_abs_diff, "reason": self.reason}


def compile_estimator(estimator: Any, X_check: np.ndarray) -> Compilation:
    """The compiled form of ``estimator``, checked against its ``predict_proba`` on ``X_check``."""
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, LGBMClassifier | ShardedModel):  # LightGBM already: served as trained
        runtime = "lightgbm" if isinstance(estimator, LGBMClassifier) else "lightgbm-shards"
        return Compilation(runtime, None, "probability", None, None)
    try:
        if isinstance(estimator, HistGradientBoostingClassifier):
            fmt, output, data = "lightgbm-text", "probability", boosting_text(estimator).encode()
        elif isinstance(estimator, RandomForestClassifier):
            fmt, output, data = "lightgbm-text", "average", forest_text(estimator).encode()
        elif isinstance(estimator, Pipeline):
            fmt, output, data = "linear-json", "probability", linear_bytes(linear_model(estimator))
        else:
            return _reference(f"no compiled form for {type(estimator).__name__}")
        compiled = _predictor(fmt, output, data, len(estimator.classes_), int(estimator.n_features_in_))
    except (NotCompilable, NotLinear) as exc:
        return _reference(f"cannot be compiled: {exc}")
    except Exception as exc:  # compiling must never fail a training run: the reference serves
        log.exception("compiling %s failed", type(estimator).__name__)
        return _reference(f"compiling failed: {exc!r}")
    X_check = np.asarray(X_check, dtype=np.float64)
    diff = float(
        np.max(np.abs(compiled.predict_proba(X_check) - estimator.predict_proba(X_check)), initial=0.0)
    )
    if not diff <= AGREEMENT_TOLERANCE:  # NaN too
        reason = f"its compiled form differs by {diff:.3g} on the held-out rows (> {AGREEMENT_TOLERANCE:g})"
        return Compilation("reference", None, output, diff, reason)
    return Compilation(fmt, data, output, diff, None, compiled)


def _reference(reason: str) -> Compilation:
    return Compilation("reference", None, "probability", None, reason)


def _predictor(fmt: str, output: str, data: bytes, n_classes: int, n_features: int) -> Any:
    """The compiled predictor read back from the bytes that will be stored, as loading will read them."""
    if fmt == "linear-json":
        return LinearPredictor(read_linear(data, n_classes, n_features))
    from assay.registry.artifacts import lightgbm_predictor

    check_lightgbm_text(data)
    return lightgbm_predictor(data, n_classes, n_features, average=output == "average")


def compile_for_serving(estimator: Any, X_test: np.ndarray, say: Progress) -> Compilation:
    """``compile_estimator`` on the held-out rows, saying which runtime will serve the version."""
    say("compiling the model for serving")
    compilation = compile_estimator(estimator, X_test)
    if compilation.reason is not None:
        say(f"  served by the estimator itself: {compilation.reason}")
    elif compilation.max_abs_diff is not None:
        say(
            f"  compiled ({compilation.runtime}); largest probability difference {compilation.max_abs_diff:.3g}"
        )
    return compilation
