"""The records a registry version holds, as typed contracts with one validation function each.

A version carries JSON records besides its model: ``card.json`` (the model card's facts),
``evaluation.json`` (the held-out statistics), the ``summary`` gates read, the ``lineage`` and
the feature schema (``schema.json``). Their typed definitions live in ``registry.contracts``;
this module owns checking them:

* ``check_card``, ``check_evaluation``, ``check_summary``, ``check_lineage`` and
  ``check_schema``: each takes parsed JSON and returns it typed, or raises an ``ArtifactError``
  naming the record and the field (``card.json: decision_threshold must be a number from 0 to
  1, got 'abc'``). Exact keys, JSON types (``true`` is no number), finite numbers in their
  ranges (probabilities and rates in [0, 1], counts whole and not negative), enums, unique
  names and class lists that agree with each other.

Training validates what it is about to write, import validates what a bundle brings, and the
registry validates again at every load, all with these same functions: a record that passes
here is one every reader (scorer, ``assay show``, the API, promotion gates) can use as typed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from assay.registry.contracts import (
    AUC_STATS,
    COUNT_STATS,
    FAIRNESS_STATS,
    GATE_KINDS,
    KINDS,
    RATE_STATS,
    RUNTIMES,
    SUMMARY_STATS,
    TASKS,
    Candidate,
    CardRecord,
    EvaluationRecord,
    GateLimits,
    ImportedFrom,
    Inference,
    LabelSnapshot,
    LineageRecord,
    SchemaRecord,
    ServingCost,
    SummaryRecord,
)
from assay.registry.fairness_records import check_fairness, check_mitigation
from assay.registry.validation import Validator

# --------------------------------------------------------------------------- the checks


def check_schema(value: Any, name: str = "schema.json") -> SchemaRecord:
    """A feature schema: features with unique names, a kind each, categories only when categorical."""
    v = Validator(name)
    record = v.keys(value, "", {"features"})
    features = v.array(record["features"], "features", min_length=1)
    names: set[str] = set()
    for i, feature in enumerate(features):
        where = f"features[{i}]"
        kind = v.enum(v.get(feature, where, "kind"), f"{where}.kind", KINDS)
        required = {"name", "kind", "nullable"} | ({"categories"} if kind == "categorical" else set())
        f = v.keys(feature, where, required)
        feature_name = v.string(f["name"], f"{where}.name")
        if feature_name in names:
            raise v.fail(f"{where}.name", f"{feature_name!r} names two features")
        names.add(feature_name)
        v.boolean(f["nullable"], f"{where}.nullable")
        if "categories" in f:
            v.strings(f["categories"], f"{where}.categories", unique=True, empty_ok=True)
    return cast(SchemaRecord, value)


def check_evaluation(value: Any, name: str = "evaluation.json") -> EvaluationRecord:
    """Held-out statistics: classes, counts, rates and tables that agree with each other."""
    v = Validator(name)
    ev = v.keys(value, "", set(EvaluationRecord.__annotations__) - {"log_loss"}, {"log_loss"})
    task = v.enum(ev["task"], "task", TASKS)
    classes = v.strings(ev["classes"], "classes", unique=True, min_length=2)
    positive = _positive(v, ev["positive"], "positive", task, classes)
    if task == "binary":
        v.number(ev["decision_threshold"], "decision_threshold", 0.0, 1.0)
    elif ev["decision_threshold"] is not None:
        raise v.fail("decision_threshold", "must be null for a multiclass task")
    n = v.integer(ev["n"], "n", 1)
    counts = v.keys(ev["counts"], "counts", set(classes))
    if sum(v.integer(counts[c], f"counts.{c}", 0) for c in classes) != n:
        raise v.fail("counts", f"must add up to n={n}")
    cm = v.keys(ev["confusion_matrix"], "confusion_matrix", {"labels", "matrix"})
    if cm["labels"] != classes:
        raise v.fail("confusion_matrix.labels", "must be the classes, in order")
    rows = v.array(cm["matrix"], "confusion_matrix.matrix", length=len(classes))
    cells = [
        v.integer(cell, f"confusion_matrix.matrix[{i}][{j}]", 0)
        for i, row in enumerate(rows)
        for j, cell in enumerate(v.array(row, f"confusion_matrix.matrix[{i}]", length=len(classes)))
    ]
    if sum(cells) != n:
        raise v.fail("confusion_matrix.matrix", f"must add up to n={n}")
    v.number(ev["accuracy"], "accuracy", 0.0, 1.0)
    if "log_loss" in ev:
        v.number(ev["log_loss"], "log_loss", 0.0)
    per_class = v.keys(ev["per_class"], "per_class", set(classes))
    for c in classes:
        _stats(v, per_class[c], f"per_class.{c}", RATE_STATS + AUC_STATS, COUNT_STATS)
    for average in ("micro", "macro"):
        _stats(v, ev[average], average, RATE_STATS + AUC_STATS, ())
    focus = set(classes) if positive is None else {positive}
    tables = v.keys(ev["thresholds"], "thresholds", focus)
    for c in sorted(focus):
        _threshold_table(v, tables[c], f"thresholds.{c}")
    calibration = v.keys(ev["calibration"], "calibration", {"brier", "curve"})
    v.number(calibration["brier"], "calibration.brier", 0.0, 2.0)
    curves = v.keys(calibration["curve"], "calibration.curve", focus)
    for c in sorted(focus):
        v.columns(
            curves[c], f"calibration.curve.{c}", {"prob_pred": False, "prob_true": False, "count": True}
        )
    for attribute, by_class in v.mapping(ev["fairness"], "fairness").items():
        blocks = v.keys(by_class, f"fairness.{attribute}", focus)
        for c in sorted(focus):
            check_fairness(v, blocks[c], f"fairness.{attribute}.{c}")
    for curve, columns in (("roc_curve", ("fpr", "tpr")), ("pr_curve", ("precision", "recall"))):
        by_class = v.keys(ev[curve], curve, focus)
        for c in sorted(focus):
            if by_class[c] is not None:
                v.columns(by_class[c], f"{curve}.{c}", dict.fromkeys(columns, False))
    return cast(EvaluationRecord, value)


def check_summary(value: Any, name: str = "summary") -> SummaryRecord:
    """The headline numbers promotion gates compare: each in [0, 1] (Brier up to 2) or null."""
    v = Validator(name)
    summary = v.keys(value, "", set(SUMMARY_STATS) | {"fairness"})
    for stat in SUMMARY_STATS:
        v.number(summary[stat], stat, 0.0, 2.0 if stat == "brier" else 1.0, null=True)
    fairness = v.keys(summary["fairness"], "fairness", set(), set(FAIRNESS_STATS))
    for stat, limit in fairness.items():
        v.number(limit, f"fairness.{stat}", 0.0, 1.0)
    return cast(SummaryRecord, value)


def check_lineage(value: Any, name: str = "lineage") -> LineageRecord:
    """Where a version came from: data and spec hashes, seed, rows, parameters, library versions,
    and the optional parts some versions carry (``_LINEAGE_PARTS``)."""
    v = Validator(name)
    required = {k for k in LineageRecord.__annotations__ if k not in _LINEAGE_PARTS}
    lineage = v.keys(value, "", required, tuple(_LINEAGE_PARTS))
    for key in ("data_fingerprint", "spec_hash"):
        v.sha256(lineage[key], key)
    v.integer(lineage["seed"], "seed")
    sources = v.keys(lineage["sources"], "sources", {"train", "test"})
    v.strings(sources["train"], "sources.train", min_length=1)
    v.strings(sources["test"], "sources.test", empty_ok=True)
    v.integer(lineage["train_rows"], "train_rows", 1)
    v.integer(lineage["test_rows"], "test_rows", 1)
    v.enum(lineage["task"], "task", TASKS)
    v.params(lineage["params"], "params")
    v.number(lineage["refit_s"], "refit_s", 0.0)
    v.number(lineage["training_seconds"], "training_seconds", 0.0)
    for library, version in v.mapping(lineage["libraries"], "libraries").items():
        v.string(version, f"libraries.{library}")
    v.string(lineage["assay"], "assay")
    v.string(lineage["python"], "python")
    for key, check in _LINEAGE_PARTS.items():
        if key in lineage:
            check(v, lineage[key])
    return cast(LineageRecord, value)


def _check_search(v: Validator, value: Any) -> None:
    search = v.keys(value, "search", {"trials", "max_trials", "cut_short", "budget_s"})
    trials = v.integer(search["trials"], "search.trials", 0)
    v.integer(search["max_trials"], "search.max_trials", max(trials, 1))
    v.boolean(search["cut_short"], "search.cut_short")
    v.number(search["budget_s"], "search.budget_s", 0.0)


def _check_imported_from(v: Validator, value: Any) -> None:
    origin = v.keys(value, "imported_from", set(ImportedFrom.__annotations__))
    v.string(origin["model"], "imported_from.model")
    v.integer(origin["version"], "imported_from.version", 1)
    v.string(origin["created_at"], "imported_from.created_at")
    v.sha256(origin["bundle_sha256"], "imported_from.bundle_sha256")


def _check_unlearning(v: Validator, value: Any) -> None:
    u = v.keys(value, "unlearning", {"shards", "slices"}, _LINEAGE_UNLEARNING)
    v.integer(u["shards"], "unlearning.shards", 1)
    v.integer(u["slices"], "unlearning.slices", 1)
    for key in ("excluded_rows", "exclusions_through"):
        if key in u:
            v.integer(u[key], f"unlearning.{key}", 0)
    if "source_fingerprint" in u:
        v.sha256(u["source_fingerprint"], "unlearning.source_fingerprint")
    if "forgot" in u:
        v.mapping(u["forgot"], "unlearning.forgot")
    if "learning_rate" in u:
        v.number(u["learning_rate"], "unlearning.learning_rate", 0.0)
    if "threads" in u:
        v.integer(u["threads"], "unlearning.threads", 1)


def _check_labels(v: Validator, value: Any) -> None:
    snapshot = v.keys(value, "labels", set(LabelSnapshot.__annotations__))
    v.sha256(snapshot["fingerprint"], "labels.fingerprint")
    v.string(snapshot["retrained_from"], "labels.retrained_from")
    v.strings(snapshot["base_train"], "labels.base_train", min_length=1)
    if snapshot["base_campaign"] is not None:
        v.string(snapshot["base_campaign"], "labels.base_campaign")
    for key in ("rows", "api", "relabelled", "added", "held_out", "without_features"):
        v.integer(snapshot[key], f"labels.{key}", 0)
    for campaign, count in v.mapping(snapshot["campaigns"], "labels.campaigns").items():
        v.integer(count, f"labels.campaigns.{campaign}", 0)


def _check_inference(v: Validator, value: Any) -> None:
    inference = v.keys(value, "inference", set(Inference.__annotations__))
    v.enum(inference["runtime"], "inference.runtime", RUNTIMES)
    if inference["max_abs_diff"] is not None:
        v.number(inference["max_abs_diff"], "inference.max_abs_diff", 0.0)
    if inference["reason"] is not None:
        v.string(inference["reason"], "inference.reason")


# The parts of a lineage only some versions carry, each with its check.
_LINEAGE_PARTS: dict[str, Callable[[Validator, Any], None]] = {
    "search": _check_search,
    "imported_from": _check_imported_from,
    "unlearning": _check_unlearning,
    "labels": _check_labels,
    "inference": _check_inference,
}
_LINEAGE_UNLEARNING = (
    "seed",
    "trees",
    "learning_rate",
    "threads",
    "excluded_rows",
    "exclusions_through",
    "source_fingerprint",
    "forgot",
)


def check_card(value: Any, name: str = "card.json") -> CardRecord:
    """The model card's facts: the evaluation and lineage (checked as such), the decision
    threshold and operating points (thresholds in [0, 1], classes among the model's), the
    features, the candidates compared and the gates."""
    v = Validator(name)
    card = v.keys(value, "", set(CardRecord.__annotations__) - _CARD_OPTIONAL, _CARD_OPTIONAL)
    v.string(card["model"], "model")
    v.integer(card["version"], "version", 1)
    v.string(card["created_at"], "created_at")
    v.string(card["description"], "description", empty_ok=True)
    task = v.enum(card["task"], "task", TASKS)
    classes = v.strings(card["classes"], "classes", unique=True, min_length=2)
    positive = _positive(v, card["positive"], "positive", task, classes)
    v.string(card["candidate"], "candidate")
    v.params(card["params"], "params")
    v.string(card["metric"], "metric")
    v.nested(check_evaluation, card["evaluation"], "evaluation")
    if (card["evaluation"]["classes"], card["evaluation"]["positive"]) != (classes, positive):
        raise v.fail("evaluation", "is about other classes than the card")
    v.nested(check_lineage, card["lineage"], "lineage")
    for i, entry in enumerate(v.array(card["importance"], "importance")):
        item = v.keys(entry, f"importance[{i}]", {"feature", "importance", "std"})
        v.string(item["feature"], f"importance[{i}].feature")
        v.number(item["importance"], f"importance[{i}].importance")
        v.number(item["std"], f"importance[{i}].std", 0.0)
    for i, entry in enumerate(v.array(card["comparison"], "comparison", min_length=1)):
        _candidate(v, entry, f"comparison[{i}]")
    if card["search"] is not None:
        _search(v, card["search"], "search")
    for point, op in v.mapping(card["operating_points"], "operating_points").items():
        where = f"operating_points.{point}"
        entry = v.keys(op, where, {"query", "class", "answer"})
        v.string(entry["query"], f"{where}.query")
        v.enum(entry["class"], f"{where}.class", classes)
        if entry["answer"] is not None:
            _threshold_row(v, entry["answer"], f"{where}.answer")
    features: set[str] = set()
    for i, feature in enumerate(v.array(card["features"], "features", min_length=1)):
        entry = v.keys(feature, f"features[{i}]", {"name", "kind"})
        feature_name = v.string(entry["name"], f"features[{i}].name")
        if feature_name in features:
            raise v.fail(f"features[{i}].name", f"{feature_name!r} names two features")
        features.add(feature_name)
        v.enum(entry["kind"], f"features[{i}].kind", KINDS)
    v.strings(card["sensitive"], "sensitive", unique=True, empty_ok=True)
    v.number(card["decision_threshold"], "decision_threshold", 0.0, 1.0)
    check_gate_limits(card["gates"], f"{name}: gates")
    if "unlearning" in card:
        u = v.keys(card["unlearning"], "unlearning", {"fast", "note"}, _CARD_UNLEARNING)
        v.boolean(u["fast"], "unlearning.fast")
        v.string(u["note"], "unlearning.note")
        if "inherited_from" in u:
            v.string(u["inherited_from"], "unlearning.inherited_from")
    _card_extras(v, card)
    return cast(CardRecord, value)


_CARD_UNLEARNING = ("shards", "slices", "metrics", "cost", "curve", "inherited_from")


def _card_extras(v: Validator, card: dict[str, Any]) -> None:
    """Fairness at each operating point, the prior's score, the spec's [card] details, mitigation."""
    points = v.mapping(card.get("fairness_at_operating_points", {}), "fairness_at_operating_points")
    for point, by_attribute in points.items():
        if point not in card["operating_points"]:
            raise v.fail(f"fairness_at_operating_points.{point}", "is no operating point of the card")
        for attribute, block in v.mapping(by_attribute, f"fairness_at_operating_points.{point}").items():
            check_fairness(v, block, f"fairness_at_operating_points.{point}.{attribute}")
    if "prior_score" in card:
        v.number(card["prior_score"], "prior_score")
    for key, text in v.mapping(card.get("details", {}), "details").items():
        if isinstance(text, list):
            v.strings(text, f"details.{key}", empty_ok=True)
        else:
            v.string(text, f"details.{key}", empty_ok=True)
    if "mitigation" in card:
        check_mitigation(v, card["mitigation"], card)


def check_gate_limits(value: Any, name: str) -> GateLimits:
    """Promotion gates as a spec states them: under each kind, known statistics to finite limits."""
    v = Validator(name)
    gates = v.keys(value, "", set(), set(GATE_KINDS))
    for kind, limits in gates.items():
        stats = FAIRNESS_STATS if kind == "fairness" else SUMMARY_STATS
        for stat, limit in v.keys(limits, kind, set(), set(stats)).items():
            v.number(limit, f"{kind}.{stat}")
    return cast(GateLimits, value)


# --------------------------------------------------------------------------- parts


def _positive(v: Validator, value: Any, where: str, task: str, classes: list[str]) -> str | None:
    if task == "multiclass":
        if value is not None:
            raise v.fail(where, "must be null for a multiclass task")
        return None
    if len(classes) != 2:
        raise v.fail("classes", f"a binary task has two classes, not {len(classes)}")
    return v.enum(value, where, classes)


def _stats(v: Validator, value: Any, where: str, rates: Iterable[str], counts: Iterable[str]) -> None:
    stats = v.keys(value, where, {*rates, *counts})
    for stat in rates:
        v.number(stats[stat], f"{where}.{stat}", 0.0, 1.0, null=True)
    for stat in counts:
        v.integer(stats[stat], f"{where}.{stat}", 0)


def _threshold_table(v: Validator, value: Any, where: str) -> None:
    columns = {"threshold": False, **dict.fromkeys(COUNT_STATS, True), **dict.fromkeys(RATE_STATS, False)}
    table = v.columns(value, where, columns, null={"threshold": False, **dict.fromkeys(RATE_STATS, True)})
    if not table["threshold"]:
        raise v.fail(f"{where}.threshold", "must not be empty")


def _threshold_row(v: Validator, value: Any, where: str) -> None:
    row = v.keys(value, where, {"threshold", *COUNT_STATS, *RATE_STATS})
    v.number(row["threshold"], f"{where}.threshold", 0.0, 1.0)
    for stat in RATE_STATS:
        v.number(row[stat], f"{where}.{stat}", 0.0, 1.0, null=True)
    for stat in COUNT_STATS:
        v.integer(row[stat], f"{where}.{stat}", 0)


# The card keys marked NotRequired in registry.contracts.
_CARD_OPTIONAL = {"unlearning", "fairness_at_operating_points", "prior_score", "details", "mitigation"}


def _candidate(v: Validator, value: Any, where: str) -> None:
    entry = v.keys(value, where, set(Candidate.__annotations__) - {"serving"}, {"serving"})
    v.string(entry["candidate"], f"{where}.candidate")
    v.params(entry["params"], f"{where}.params")
    v.numbers(v.array(entry["fold_scores"], f"{where}.fold_scores", min_length=1), f"{where}.fold_scores")
    v.numbers(v.array(entry["fit_times"], f"{where}.fit_times", min_length=1), f"{where}.fit_times", 0.0)
    v.number(entry["mean_score"], f"{where}.mean_score")
    v.number(entry["mean_fit_time"], f"{where}.mean_fit_time", 0.0)
    if "serving" in entry:
        cost = v.keys(entry["serving"], f"{where}.serving", set(ServingCost.__annotations__))
        v.enum(cost["runtime"], f"{where}.serving.runtime", RUNTIMES)
        v.number(cost["predict_us"], f"{where}.serving.predict_us", 0.0)
        v.number(cost["batch_us"], f"{where}.serving.batch_us", 0.0)


def _search(v: Validator, value: Any, where: str) -> None:
    required = {"budget_s", "trials", "elapsed_s", "best_params", "history"}
    search = v.keys(value, where, required, {"max_trials", "cut_short"})
    v.number(search["budget_s"], f"{where}.budget_s", 0.0)
    trials = v.integer(search["trials"], f"{where}.trials", 0)
    if "max_trials" in search:
        v.integer(search["max_trials"], f"{where}.max_trials", max(trials, 1))
    if "cut_short" in search:
        v.boolean(search["cut_short"], f"{where}.cut_short")
    v.number(search["elapsed_s"], f"{where}.elapsed_s", 0.0)
    v.params(search["best_params"], f"{where}.best_params")
    for i, trial in enumerate(v.array(search["history"], f"{where}.history", length=trials)):
        entry = v.keys(trial, f"{where}.history[{i}]", {"params", "mean_score"})
        v.params(entry["params"], f"{where}.history[{i}].params")
        v.number(entry["mean_score"], f"{where}.history[{i}].mean_score")
