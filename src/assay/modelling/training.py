"""Training: from a spec to one registry version, as a short sequence of named stages.

Checks the spec's hyperparameters, reads the data once (``preparation``), compares the
candidates by stratified cross-validation and optionally searches hyperparameters
(``selection``), refits the winner on all training data, evaluates it on held-out data
and publishes the version: safe artifact, schema, evaluation, model card (``publication``).
The first version of a model becomes production. Everything random is seeded from the
spec, so the same spec on the same data gives the same metrics (unless a search's time
budget cuts it short).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from assay.engines.engine import Engine, LocalEngine
from assay.errors import GateFailed, SpecError
from assay.heap import frozen_heap
from assay.modelling import mitigation
from assay.modelling.assessment import operating_point_classes
from assay.modelling.candidates import check_params, thread_limit
from assay.modelling.preparation import CampaignLabels, Exclusion, prepare
from assay.modelling.progress import Progress, RunProgress
from assay.modelling.publication import Refit, plain_refit, register
from assay.modelling.selection import CandidateResult, compare, prior_score
from assay.modelling.spec import ModelSpec
from assay.registry.contracts import VersionRecord
from assay.registry.versions import Registry


@dataclass
class TrainResult:
    """What one training run published and how it chose: the comparison, the winner, the search."""

    record: VersionRecord
    comparison: list[CandidateResult]
    winner: CandidateResult
    evaluation: dict[str, Any]
    promoted: bool
    search: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)
    prior_score: float | None = None  # the metric of predicting the class frequencies


def train(
    spec: ModelSpec,
    registry: Registry,
    *,
    progress: Progress | None = None,
    actor: str = "assay train",
    campaign_labels: CampaignLabels | None = None,
    exclusion: Exclusion | None = None,
    refit: Refit | None = None,
    lineage_extra: dict[str, Any] | None = None,
    engine: Engine | None = None,
) -> TrainResult:
    """Train ``spec`` and publish one version; nothing is written if any step fails.

    A spec whose labels come from a review campaign needs ``campaign_labels``; the items in
    ``exclusion`` are left out of training and held-out data; ``refit`` fits the winner (a
    spec with ``[training.unlearning]`` needs the sharded one). The caller supplies them so
    that modelling never reaches up into the review or unlearning domains.
    ``lineage_extra`` adds records to the version's lineage (a retraining run's label snapshot).
    ``engine`` runs the cross-validation folds and the search's trials (default: this
    process); every engine gives the same metrics and model for the same spec and data.
    """
    engine = engine or LocalEngine()
    say = RunProgress(progress or (lambda _m: None))
    started = time.perf_counter()
    # This process's own fits and predicts (the refit, evaluation) get the engine's cores too.
    with thread_limit(engine.jobs), frozen_heap():
        check_params(spec.source, spec.training.params, spec.seed)
        if spec.training.unlearning is not None and refit is None:
            raise SpecError(
                f"{spec.source}: training.unlearning needs sharded training", field="training.unlearning"
            )
        data = prepare(spec, campaign_labels, say, exclusion)
        operating_point_classes(spec, data.classes, data.positive)  # refuse an unclear point before any fit
        mitigation.check_mitigation(spec, data.positive)
        t = spec.training
        prior = prior_score(data.y, folds=t.folds, metric=t.metric, seed=spec.seed)
        comparison, winner, search_info = compare(spec, data, say, engine, prior=prior)
        record, ev = register(
            spec,
            registry,
            data,
            (refit or plain_refit),
            winner,
            comparison,
            search_info,
            started=started,
            say=say,
            lineage_extra=lineage_extra,
            prior=prior,
        )
        promoted = _promote_first(spec, registry, record, actor, say)
        return TrainResult(record, comparison, winner, ev, promoted, search_info, prior_score=prior)


def _promote_first(
    spec: ModelSpec, registry: Registry, record: VersionRecord, actor: str, say: Progress
) -> bool:
    """Alias the new version ``candidate``; the first version of a model also becomes production."""
    registry.set_alias(
        spec.name, "candidate", record.version, actor=actor, reason="newly trained", forced=False, gates=[]
    )
    if "production" in registry.aliases(spec.name):
        return False
    try:
        registry.promote(spec.name, record.version, actor=actor, reason="first version of the model")
    except GateFailed as exc:
        say(f"not promoted to production: {exc.message}")
        return False
    say(f"{record.ref} is the first version: promoted to production")
    return True
