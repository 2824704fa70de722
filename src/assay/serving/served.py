"""A served model: a loaded version plus everything the scoring hot path needs precomputed.

``ServedModel.of`` turns a registry ``LoadedModel`` into the response keys, class order,
decision threshold, operating points, per-group thresholds (a version mitigated with them),
request encoder and fast predictor that every score of that version uses; ``scores`` turns a
matrix of probabilities into response dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import InvalidInput
from assay.registry.compiled import Overflow
from assay.registry.loaded import LoadedModel
from assay.serving.encoding import Encoder
from assay.serving.groups import GroupDecision
from assay.serving.predictor import fast_predict


@dataclass(frozen=True)
class ServedModel:
    """A loaded version plus everything the hot path needs precomputed."""

    loaded: LoadedModel
    name: str
    version: int
    version_label: str  # what responses say: the integer version as a string
    keys: list[str]  # response probability key of each class index
    order: list[int]  # class indices in response order (binary: "true" first, as ORES answered)
    positive_index: int | None
    threshold: float
    operating_points: list[tuple[str, int, float | None]]  # (name, class index, threshold)
    encoder: Encoder  # the request encoding of the version's schema
    predict: Callable[[np.ndarray], np.ndarray]  # the predictor's predict_proba, single rows made fast
    groups: GroupDecision | None = None  # per-group thresholds, when the version was mitigated with them

    @classmethod
    def of(cls, loaded: LoadedModel) -> ServedModel:
        classes = loaded.classes
        positive = loaded.positive_index
        if positive is not None and len(classes) == 2:
            keys = ["true" if i == positive else "false" for i in range(2)]
        else:
            keys = list(classes)
        points = []
        for op_name, op in sorted(loaded.operating_points.items()):
            cls_name = op.get("class") or loaded.positive or classes[-1]
            if cls_name in classes:
                points.append((op_name, classes.index(cls_name), op.get("threshold")))
        return cls(
            loaded=loaded,
            name=loaded.record.model,
            version=loaded.record.version,
            version_label=str(loaded.record.version),
            keys=keys,
            order=[positive, 1 - positive]
            if positive is not None and len(classes) == 2
            else list(range(len(classes))),
            positive_index=positive if len(classes) == 2 else None,
            threshold=loaded.decision_threshold(),
            operating_points=points,
            encoder=Encoder.of(loaded.schema),
            predict=_naming(fast_predict(loaded.predictor), loaded.schema.names),
            groups=GroupDecision.of(loaded.card.get("mitigation"), loaded.schema),
        )

    @property
    def names(self) -> list[str]:
        return self.encoder.names

    @property
    def name_set(self) -> frozenset[str]:
        return self.encoder.name_set

    def predictions(self, proba: np.ndarray, groups: Sequence[str | None] | None = None) -> np.ndarray:
        """Each row's prediction: positive-or-not for binary models, the likeliest class otherwise.

        A version with per-group thresholds decides each row at its group's (``groups``, one
        per row; None or no list: the fallback threshold)."""
        if self.groups is not None and self.positive_index is not None:
            limits = self.groups.limits(groups if groups is not None else [None] * len(proba))
            return proba[:, self.positive_index] >= limits
        if len(proba) == 1:  # numpy's per-call cost dwarfs one comparison
            row = proba[0].tolist()
            if self.positive_index is not None:
                return np.array([row[self.positive_index] >= self.threshold])
            return np.array([self.loaded.classes[max(range(len(row)), key=row.__getitem__)]], dtype=object)
        if self.positive_index is not None:
            return proba[:, self.positive_index] >= self.threshold
        return np.asarray(self.loaded.classes, dtype=object)[proba.argmax(axis=1)]

    def scores(self, proba: np.ndarray, groups: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
        """The base score of each row of probabilities (``groups``: as ``predictions`` takes them)."""
        if self.groups is not None:
            return self._group_scores(
                self.groups, proba, groups if groups is not None else [None] * len(proba)
            )
        version, keys, order, points = self.version_label, self.keys, self.order, self.operating_points
        out = []
        if self.positive_index is not None:
            # Binary, the common case: one comparison and one dict literal per row, no numpy
            # pass and no comprehension (it shows in 1,000-item requests).
            pi, threshold = self.positive_index, self.threshold
            ni, kp, kn = 1 - pi, keys[pi], keys[1 - pi]
            for row in proba.tolist():
                p = row[pi]
                score: dict[str, Any] = {
                    "version": version,
                    "prediction": p >= threshold,
                    "probability": {kp: p, kn: row[ni]},
                }
                if points:
                    score["operating_points"] = {name: t is not None and row[j] >= t for name, j, t in points}
                out.append(score)
            return out
        for row, prediction in zip(proba.tolist(), self.predictions(proba).tolist(), strict=True):
            score = {
                "version": version,
                "prediction": prediction,
                "probability": {keys[j]: row[j] for j in order},
            }
            if points:
                score["operating_points"] = {name: t is not None and row[j] >= t for name, j, t in points}
            out.append(score)
        return out

    def _group_scores(
        self, decision: GroupDecision, proba: np.ndarray, groups: Sequence[str | None]
    ) -> list[dict[str, Any]]:
        """Scores decided at each row's group threshold, saying which threshold that was."""
        pi = self.positive_index
        assert pi is not None  # training records group thresholds for binary models only
        keys, n = self.keys, len(proba)
        limits = decision.limits(groups).tolist()
        # A point with no threshold flags nothing; a point the mitigation fitted is decided per group.
        at_points = {
            name: (
                decision.limits(groups, name)
                if name in decision.points
                else np.full(n, np.inf if t is None else t)
            ).tolist()
            for name, _, t in self.operating_points
        }
        out = []
        for k, (row, group) in enumerate(zip(proba.tolist(), groups, strict=True)):
            score: dict[str, Any] = {
                "version": self.version_label,
                "prediction": row[pi] >= limits[k],  # floats both: a Python bool
                "probability": {keys[pi]: row[pi], keys[1 - pi]: row[1 - pi]},
                "decision": {"attribute": decision.attribute, "group": group, "threshold": limits[k]},
            }
            if at_points:
                score["operating_points"] = {name: row[pi] >= t[k] for name, t in at_points.items()}
            out.append(score)
        return out


def _naming(
    predict: Callable[[np.ndarray], np.ndarray], names: list[str]
) -> Callable[[np.ndarray], np.ndarray]:
    """``predict``, its refusal of a value it cannot compute with naming the feature."""

    def run(X: np.ndarray) -> np.ndarray:
        try:
            return predict(X)
        except Overflow as exc:
            name = names[exc.column]
            raise InvalidInput(
                # No row number: big batches are predicted in chunks, and the row is the chunk's.
                f"feature {name!r}: {exc.value:g} is too far outside the training data for this model "
                "to score",
                field=f"features.{name}",
            ) from None

    return run
