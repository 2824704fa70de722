"""Publication: the chosen candidate becomes one registry version.

``register`` refits the winner on all training rows (``plain_refit``, or the sharded
refit of ``assay.unlearning``), assesses it on held-out data, applies the spec's
fairness mitigation, compiles the form it is served by, assembles its lineage and
model card, and ``publish`` writes the version's files and registers it: every
record is checked against the contract the registry loads it by before a byte is
written, and the card names the version number the store gave.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import assay
from assay.modelling import evaluation, mitigation
from assay.modelling.assessment import Assessment, assess_held_out, full_proba
from assay.modelling.candidates import CANDIDATES
from assay.modelling.compilation import compile_for_serving
from assay.modelling.preparation import Prepared
from assay.modelling.profile import PROFILE_JSON, build_profile, profile_bytes
from assay.modelling.progress import Progress, run_progress
from assay.modelling.reports import model_card
from assay.modelling.selection import CandidateResult, jsonable
from assay.modelling.spec import ModelSpec
from assay.registry.artifacts import library_versions, save_model
from assay.registry.contracts import VersionRecord
from assay.registry.ensemble import ShardedModel, save_sharded
from assay.registry.files import write_file, write_json
from assay.registry.gates import summarize
from assay.registry.records import check_card, check_evaluation, check_lineage, check_schema, check_summary
from assay.registry.schema import FeatureSchema
from assay.registry.versions import Registry


@dataclass
class Refitted:
    """The winner fitted on all training rows, and what the card and lineage say of unlearning."""

    estimator: Any  # a fitted estimator, or a ShardedModel
    card: dict[str, Any]  # the card's "unlearning" section
    lineage: dict[str, Any]  # the lineage's "unlearning" section (exclusions are added to it)
    # The card figures of the version this one replaces after forgetting, reused instead of drawn
    # (``plots.figures_of``); None: the card draws its own.
    figures: dict[str, Any] | None = None


Refit = Callable[[ModelSpec, Prepared, CandidateResult, Progress], Refitted]
"""Fits the winner on all training rows; sharded (SISA) training is one (``assay.unlearning``)."""


def plain_refit(spec: ModelSpec, data: Prepared, winner: CandidateResult, say: Progress) -> Refitted:
    """The winner as one model on all training rows; forgetting any of them retrains it in full."""
    candidate = CANDIDATES[winner.candidate]
    estimator = candidate.fit(
        candidate.estimator(winner.params, data.schema, spec.seed), data.X, data.y, data.schema
    )
    note = "one model: forgetting an example retrains it in full"
    return Refitted(estimator, {"fast": False, "note": note}, {"shards": 1, "slices": 1})


def register(
    spec: ModelSpec,
    registry: Registry,
    data: Prepared,
    refit: Refit,
    winner: CandidateResult,
    comparison: list[CandidateResult],
    search_info: dict[str, Any] | None,
    *,
    started: float,
    say: Progress,
    lineage_extra: dict[str, Any] | None = None,
    prior: float | None = None,
    importance: list[dict[str, Any]] | None = None,
) -> tuple[VersionRecord, dict[str, Any]]:
    """Refit the chosen candidate, assess it on held-out data and publish it: (record, evaluation).

    ``importance``, when given, is kept instead of measured again (a replacement that forgot a
    few rows keeps its predecessor's: permutation importance costs many predictions)."""
    run = run_progress(say)
    since = run.begin(f"refitting {winner.candidate} on all {len(data.X)} training rows")
    refit_started = time.perf_counter()
    refitted = refit(spec, data, winner, run)
    refit_s = time.perf_counter() - refit_started
    run.end("refitted", since)
    assessment = assess(spec, data, refitted.estimator, run, importance)
    estimator = refitted.estimator
    if spec.fairness.mitigation != "none":
        estimator, assessment = mitigation.mitigate(
            spec, data, winner, estimator, assessment, lambda model: assess(spec, data, model, run), run
        )
    since = run.clock()
    compilation = compile_for_serving(estimator, data.X_test, run)
    run.end("compiled and checked against the estimator", since)
    lineage = _lineage(spec, data, winner, search_info, refit_s=refit_s, started=started)
    lineage["inference"] = compilation.lineage()
    lineage["unlearning"] = {
        **refitted.lineage,
        "excluded_rows": data.excluded_rows,
        "source_fingerprint": data.source_fingerprint,
        "exclusions_through": data.exclusions_through,
    }
    lineage.update(lineage_extra or {})
    facts = _facts(spec, data, winner, comparison, search_info, assessment, lineage)
    facts["unlearning"] = refitted.card
    if prior is not None:
        facts["prior_score"] = prior
    run("writing the version: model file, profile, model card and its plots")
    record = publish(
        spec,
        registry,
        data,
        estimator,
        assessment,
        facts,
        run,
        compilation.stored(),
        figures=refitted.figures,
    )
    return record, assessment.evaluation


def assess(
    spec: ModelSpec,
    data: Prepared,
    estimator: Any,
    say: Progress,
    importance: list[dict[str, Any]] | None = None,
) -> Assessment:
    """Held-out statistics, fairness, permutation importance (unless ``importance`` is given)
    and the spec's operating points."""
    run = run_progress(say)
    k = len(data.classes)
    since = run.clock()
    proba = full_proba(estimator, data.X_test, k)
    ev, operating_points, fairness_at, sensitive = assess_held_out(
        spec, data.classes, data.positive, proba, data.y_test, data.test_frame, run
    )
    run.end("evaluated", since)
    if importance is None:
        run(f"permutation importance of {len(data.schema.names)} features")
        run.stage("feature", len(data.schema.names))
        importance = evaluation.permutation_importance(
            lambda m: full_proba(estimator, m, k),
            data.X_test,
            data.y_test,
            data.classes,
            data.schema.names,
            positive=data.positive,
            seed=spec.seed,
            done=run.step,
        )
    return Assessment(proba, ev, importance, operating_points, fairness_at, sensitive)


def _lineage(
    spec: ModelSpec,
    data: Prepared,
    winner: CandidateResult,
    search_info: dict[str, Any] | None,
    *,
    refit_s: float,
    started: float,
) -> dict[str, Any]:
    lineage = {
        "data_fingerprint": data.fingerprint,
        "spec_hash": spec.hash,
        "seed": spec.seed,
        "sources": {"train": spec.data.train, "test": spec.data.test},
        "train_rows": len(data.X),
        "test_rows": len(data.X_test),
        "task": "binary" if data.positive is not None else "multiclass",
        "params": jsonable(winner.params),
        "refit_s": round(refit_s, 3),
        "libraries": library_versions(),
        "assay": assay.__version__,
        "python": platform.python_version(),
        "training_seconds": round(time.perf_counter() - started, 3),
    }
    if search_info:
        lineage["search"] = {k: search_info[k] for k in ("trials", "max_trials", "cut_short", "budget_s")}
    return lineage


def _facts(
    spec: ModelSpec,
    data: Prepared,
    winner: CandidateResult,
    comparison: list[CandidateResult],
    search_info: dict[str, Any] | None,
    assessment: Assessment,
    lineage: dict[str, Any],
) -> dict[str, Any]:
    """What the model card says (``card.json``), less the version and time the registry adds."""
    return {
        "model": spec.name,
        "description": spec.description,
        "task": lineage["task"],
        "classes": data.classes,
        "positive": data.positive,
        "candidate": winner.candidate,
        "params": jsonable(winner.params),
        "metric": spec.training.metric,
        "evaluation": assessment.evaluation,
        "importance": assessment.importance,
        "comparison": [c.to_dict() for c in comparison],
        "search": search_info,
        "operating_points": assessment.operating_points,
        "fairness_at_operating_points": assessment.fairness_at,
        "details": asdict(spec.card),
        **({"mitigation": assessment.mitigation} if assessment.mitigation else {}),
        "lineage": lineage,
        "features": [{"name": f.name, "kind": f.kind} for f in data.schema.features],
        "sensitive": spec.features.sensitive,
        "decision_threshold": 0.5,
        "gates": spec.to_dict()["gates"],
    }


def publish(
    spec: ModelSpec,
    registry: Registry,
    data: Prepared,
    estimator: Any,
    assessment: Assessment,
    facts: dict[str, Any],
    say: Progress,
    compiled: tuple[dict[str, Any], bytes] | None = None,
    *,
    figures: dict[str, Any] | None = None,
) -> VersionRecord:
    """Write the version's files and register it; every record is checked before a byte is written.

    ``compiled`` is the form the version is served by (``compilation.Compilation.stored``);
    ``figures`` the card figures it reuses (``Refitted.figures``)."""
    ev, lineage = assessment.evaluation, facts["lineage"]
    summary = summarize(ev, data.positive)
    # Every record is held to the contract the registry loads it by.
    check_evaluation(ev)
    check_summary(summary)
    check_lineage(lineage)
    schema_record = check_schema(data.schema.to_dict())

    def render_card(version: int, staging: Path) -> None:
        # Called once the store has given the version its number, so the card names that number.
        facts.update(version=version, created_at=pd.Timestamp.now(tz="UTC").isoformat())
        write_json(staging / "card.json", check_card(facts))
        write_file(staging / "card.html", model_card(facts, figures).encode("utf-8"))

    with registry.staging(spec.name) as staging:
        reference = reference_row(data.X, data.schema)
        if isinstance(estimator, ShardedModel):
            save_sharded(estimator, staging, reference)
        else:
            save_model(estimator, staging, reference, compiled)
        write_json(staging / "schema.json", schema_record)
        write_json(staging / "evaluation.json", ev)
        # The reference monitoring compares served traffic with (training rows, held-out scores).
        profile = build_profile(
            data.schema, data.X, assessment.proba, data.y_test, data.classes, data.positive,
            decision_threshold=facts["decision_threshold"], monitored=spec.monitoring.features, seed=spec.seed,
        )  # fmt: skip
        write_file(staging / PROFILE_JSON, profile_bytes(profile))
        record = registry.add(
            name=spec.name,
            task=lineage["task"],
            staging=staging,
            candidate=facts["candidate"],
            spec=spec.to_dict(),
            spec_hash=spec.hash,
            data_fingerprint=data.fingerprint,
            summary=summary,
            lineage=lineage,
            render=render_card,
        )
    say(f"registered {record.ref}")
    return record


def reference_row(X: np.ndarray, schema: FeatureSchema) -> np.ndarray:
    """A typical row (median, or most common code) that occlusion explanations compare against."""
    ref = np.empty(X.shape[1])
    for j, f in enumerate(schema.features):
        col = X[:, j][~np.isnan(X[:, j])]
        if col.size == 0:
            ref[j] = np.nan
        elif f.kind == "numeric":
            ref[j] = float(np.median(col))
        else:
            values, counts = np.unique(col, return_counts=True)
            ref[j] = float(values[counts.argmax()])
    return ref
