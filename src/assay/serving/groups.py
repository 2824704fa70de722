"""Per-group decisions: the threshold each item gets from a version mitigated with per-group thresholds.

Training with ``[fairness] mitigation = "thresholds"`` records, in the card's
``mitigation`` block, one threshold per group of the attribute for the decision
and for each named operating point, and the threshold an item of no known group
gets (``fallback_threshold``: the population's threshold the groups were matched
to). ``GroupDecision`` applies them to every score the version gives:

* when the attribute is a feature of the model, its value in the item's features
  names the group (a value that is no group, e.g. a number never seen, gets the
  fallback);
* otherwise the caller declares it: ``context: {attribute: value}`` on a /v1 item,
  a column of that name in a file to ``assay score``, an input tensor of that name
  on /v2. A value that names no group is refused (a typo would otherwise be
  scored at another group's threshold); no value gets the fallback.

A missing value (null, an empty cell) is the group ``(missing)`` when training saw
one, else the fallback. Values are compared as training grouped them: as text
(``True``, ``1``, ``Female``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.errors import InvalidInput
from assay.registry.contracts import Mitigation
from assay.registry.schema import Feature, FeatureSchema, is_missing

if TYPE_CHECKING:
    import pandas as pd

MISSING_GROUP = "(missing)"  # what training calls the group of rows without a value


@dataclass(frozen=True)
class GroupDecision:
    """The group thresholds of one version, and how an item's group is found."""

    attribute: str
    thresholds: dict[str, float]
    fallback: float
    points: dict[str, tuple[dict[str, float], float]]  # operating point -> (group thresholds, fallback)
    feature: int | None  # the attribute's column in the model's matrix, when it is a feature
    codes: dict[float, str] = field(default_factory=dict)  # feature only: encoded value -> group

    @classmethod
    def of(cls, mitigation: Mitigation | None, schema: FeatureSchema) -> GroupDecision | None:
        """The decision a card's mitigation block asks for; None for a version without group thresholds."""
        if mitigation is None or mitigation["method"] != "thresholds":
            return None
        attribute = mitigation["attribute"]
        thresholds = dict(mitigation["thresholds"])
        points = {
            name: (dict(p["thresholds"]), float(p["fallback_threshold"]))
            for name, p in mitigation["operating_points"].items()
        }
        feature = schema.names.index(attribute) if attribute in schema.names else None
        codes = {} if feature is None else _codes(schema.features[feature], thresholds)
        return cls(attribute, thresholds, float(mitigation["fallback_threshold"]), points, feature, codes)

    def declared(self, value: Any, where: str) -> str | None:
        """The group a declared value names (None: the fallback); a value naming no group is refused."""
        if is_missing(value):
            return MISSING_GROUP if MISSING_GROUP in self.thresholds else None
        if isinstance(value, Mapping | list | tuple):
            raise InvalidInput(f"{self.attribute!r} must be a string, number or boolean", field=where)
        group = str(value)
        if group not in self.thresholds:
            known = ", ".join(repr(g) for g in list(self.thresholds)[:10])
            raise InvalidInput(
                f"{self.attribute!r} has no group {group[:100]!r} (known: {known}); "
                "leave it out to be decided at the fallback threshold",
                field=where,
                code="unknown_group",
            )
        return group

    def of_rows(self, X: np.ndarray) -> list[str | None]:
        """Each encoded row's group, read from the attribute's feature column."""
        assert self.feature is not None
        missing = MISSING_GROUP if MISSING_GROUP in self.thresholds else None
        return [missing if math.isnan(v) else self.codes.get(v) for v in X[:, self.feature].tolist()]

    def resolve(
        self, X: np.ndarray, contexts: Sequence[Mapping[str, Any] | None], where: str = "context"
    ) -> list[str | InvalidInput | None]:
        """Each row's group, or its error: from its features, else from its declared context.

        ``where`` names the declared value in errors (``context.<attribute>``)."""
        field_name = f"{where}.{self.attribute}"
        from_features = self.of_rows(X) if self.feature is not None else None
        out: list[str | InvalidInput | None] = []
        for k, context in enumerate(contexts):
            try:
                declared = None
                if context is not None and self.attribute in context:
                    declared = self.declared(context[self.attribute], field_name)
                if from_features is None:
                    out.append(declared)
                elif declared is not None and declared != from_features[k]:
                    raise InvalidInput(
                        f"{field_name} says {declared!r} but the item's feature "
                        f"{self.attribute!r} says {from_features[k]!r}",
                        field=field_name,
                        code="context_conflict",
                    )
                else:
                    out.append(from_features[k])
            except InvalidInput as exc:
                out.append(exc)
        return out

    def limits(self, groups: Sequence[str | None], point: str | None = None) -> np.ndarray:
        """The threshold of each row's group, for the decision or for operating point ``point``."""
        thresholds, fallback = (self.thresholds, self.fallback) if point is None else self.points[point]
        return np.array([thresholds.get(g, fallback) if g is not None else fallback for g in groups])


def _codes(feature: Feature, groups: Mapping[str, float]) -> dict[float, str]:
    """What each group's value encodes to in the feature's column (the schema's own encoding)."""
    one = FeatureSchema([feature])
    out = {}
    # Training grouped the column it encoded, so every group but (missing) encodes; one that
    # did not could name no item and is left out.
    for group in groups:
        with contextlib.suppress(InvalidInput, ValueError):
            if group != MISSING_GROUP:
                out[one.encode_value(0, float(group) if feature.kind == "numeric" else group)] = group
    return out


def row_groups(
    decision: GroupDecision | None, X: np.ndarray, contexts: Sequence[Mapping[str, Any] | None]
) -> list[str | InvalidInput | None]:
    """Each encoded row's group (or its error) under a version's per-group thresholds; None
    everywhere for a version without them."""
    return [None] * len(X) if decision is None else decision.resolve(X, contexts)


def frame_groups(
    decision: GroupDecision | None, frame: pd.DataFrame, X: np.ndarray, source: str
) -> list[str | None]:
    """Each row of a file's group: the attribute's column when it is no feature; the first row
    naming no group refuses the file, naming the row."""
    if decision is None:
        return [None] * len(X)
    contexts: list[Mapping[str, Any] | None] = [None] * len(X)
    if decision.feature is None and decision.attribute in frame.columns:
        contexts = [{decision.attribute: v} for v in frame[decision.attribute].to_numpy(dtype=object)]
    out: list[str | None] = []
    for k, group in enumerate(decision.resolve(X, contexts, "column")):
        if isinstance(group, InvalidInput):
            raise InvalidInput(
                f"{source}: row {k}: {group.message}", field=decision.attribute, code=group.code
            )
        out.append(group)
    return out
