"""Shadow scoring: a challenger scored on the traffic production served, never returned to anyone.

The server logs every score it computes (``monitoring.log``), with the item's features. The
challenger (by default the version the ``challenger`` alias points at) is scored here on those
logged rows, afterwards and in batches: never on a request's path, so it can neither delay nor
change a response. What it tells: how often the challenger would have decided as production did,
and once labels arrive (``POST /v1/labels``, ``assay labels load``, review campaigns) both
versions' statistics on the same labelled items, with the paired tests of ``assay compare``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from assay.errors import InvalidInput
from assay.modelling.comparison import Comparison, Rows, compare_versions, version_proba
from assay.monitoring.frames import decoded, frame_of
from assay.monitoring.labels import campaign_labels, read_labels
from assay.registry.loaded import LoadedModel
from assay.registry.versions import Registry
from assay.store.log_store import LogStore

CHALLENGER_ALIAS = "challenger"
MAX_ROWS = 200_000  # the latest logged rows a shadow comparison reads
MIN_LABELLED = 20  # fewer labelled items (or a single class) give no statistics


@dataclass
class Shadow:
    """The challenger on production's logged traffic."""

    champion: str
    challenger: str
    rows: int
    agreement: float | None
    labelled_rows: int
    labelled: Comparison | None
    why_not: str | None  # why there are no labelled statistics

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "challenger": self.challenger,
            "rows": self.rows,
            "agreement": self.agreement,
            "labelled_rows": self.labelled_rows,
            "labelled": self.labelled.to_dict() if self.labelled else None,
            "why_not": self.why_not,
        }


def shadow(
    registry: Registry,
    engine: Engine,
    log: LogStore,
    model: str,
    *,
    champion_ref: str | None = None,
    challenger_ref: str | None = None,
    since: float | None = None,
    max_rows: int = MAX_ROWS,
    resamples: int = 1000,
) -> Shadow:
    """Score the challenger on the rows production logged (the latest ``max_rows`` since
    ``since``), and compare both on those that have labels."""
    champion = registry.load(registry.resolve(champion_ref or model))
    challenger = registry.load(registry.resolve(challenger_ref or f"{model}@{CHALLENGER_ALIAS}"))
    logged = frame_of(champion, log, since=since, with_ids=True)
    rows = decoded(champion, logged).iloc[-max_rows:].reset_index(drop=True)
    lacking = [n for n in challenger.schema.names if n not in rows.columns]
    if lacking:
        raise InvalidInput(
            f"{challenger.record.ref} needs features {champion.record.ref}'s log lacks: {', '.join(lacking[:5])}",
            field="model",
        )
    agreement = None
    if len(rows):
        proba = version_proba(challenger, rows, source="the prediction log")
        served = _decided(champion, logged.proba[-max_rows:], champion.classes)
        shadowed = _decided(challenger, _aligned(challenger, champion, proba), champion.classes)
        agreement = float(np.mean(served == shadowed))
    labels = {**campaign_labels(engine, model), **read_labels(engine, model)}
    labelled = rows[rows["id"].isin(labels)].drop_duplicates("id", keep="last").reset_index(drop=True)
    truth = labelled["id"].map(labels).to_numpy(dtype=str)
    comparison, why_not = None, None
    if len(labelled) < MIN_LABELLED or len(set(truth)) < 2:
        why_not = f"{len(labelled)} labelled items of {len(set(truth))} classes: too few to compare (at least {MIN_LABELLED}, both classes)"
    else:
        source = f"the prediction log of {champion.record.ref} (labelled items)"
        comparison = compare_versions(
            registry, champion.record, challenger.record, Rows(labelled, truth, source), resamples=resamples
        )
    return Shadow(
        champion.record.ref, challenger.record.ref, len(rows), agreement, len(labelled), comparison, why_not
    )


def _aligned(challenger: LoadedModel, champion: LoadedModel, proba: np.ndarray) -> np.ndarray:
    """The challenger's probabilities in the champion's class order."""
    if sorted(challenger.classes) != sorted(champion.classes):
        raise InvalidInput(f"{challenger.record.ref} and {champion.record.ref} predict different classes")
    return proba[:, [challenger.classes.index(c) for c in champion.classes]]


def _decided(loaded: LoadedModel, proba: np.ndarray, classes: list[str]) -> np.ndarray:
    """Each row's decided class index, ``proba``'s columns in the order of ``classes``: the
    positive class at ``loaded``'s decision threshold (binary), else the most probable one."""
    if loaded.positive is None:
        return proba.argmax(axis=1)
    return np.asarray(proba[:, classes.index(loaded.positive)] >= loaded.decision_threshold())
