"""The model card: one standalone HTML page describing a trained model.

This module owns turning a model's facts (the JSON that training records:
evaluation, fairness at every operating point, mitigation, importance,
candidate comparison, lineage and the spec's ``[card]`` details) into the
sections of "Model Cards for Model Reporting" (Mitchell et al. 2019): model
details, intended use, factors, metrics, evaluation data, training data,
quantitative analyses, ethical considerations, caveats and recommendations,
plus the promotion gates. Tables and SVG plots (``plots``), inline CSS, no
external assets and no JavaScript; the facts stay the JSON source of truth.

Every optional section is skipped or says "not stated" when its facts are
missing (cards of versions trained before a fact existed still render), and all
text goes through Jinja2's autoescaping (SVG text is escaped by matplotlib).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import matplotlib
import numpy as np
from markupsafe import Markup

from assay import templating
from assay.modelling import plots
from assay.modelling.card_fairness import fairness_sections, mitigation_section
from assay.modelling.formatting import fmt, stat_name, table
from assay.registry.gates import check_gates, summarize

# Text as <text> elements (escaped by matplotlib) keeps the page small and the
# labels selectable; a date in the metadata would make identical cards differ.
_SVG_RC: Any = {"svg.fonttype": "none", "font.size": 9}


def _environment() -> jinja2.Environment:
    return templating.environment(Path(__file__).with_name("templates"))


# --------------------------------------------------------------------------- performance


def _headline(ev: dict[str, Any]) -> dict[str, Any]:
    rows: list[list[Any]] = [
        ["test rows", ev.get("n")],
        ["accuracy (items classified correctly)", ev.get("accuracy")],
        ["log loss", ev.get("log_loss")],
        ["Brier score", (ev.get("calibration") or {}).get("brier")],
    ]
    positive = ev.get("positive")
    stats = (ev.get("per_class") or {}).get(positive) if positive is not None else None
    if stats:
        rows.append(["decision threshold", ev.get("decision_threshold")])
        rows += [[f"{stat_name(k)} ({positive})", stats.get(k)] for k in HEADLINE_STATS]
    else:
        rows += [
            [f"macro {stat_name(k)}", (ev.get("macro") or {}).get(k)] for k in ("f1", "roc_auc", "pr_auc")
        ]
    return table(["statistic", "value"], [r for r in rows if r[1] is not None])


HEADLINE_STATS = ("precision", "recall", "f1", "roc_auc", "pr_auc", "filter_rate")
PER_CLASS_COLUMNS = ("precision", "recall", "f1", "fpr", "match_rate", "roc_auc", "pr_auc")


def _confusion(ev: dict[str, Any]) -> dict[str, Any] | None:
    cm = ev.get("confusion_matrix")
    if not cm:
        return None
    rows = [[label, *row] for label, row in zip(cm["labels"], cm["matrix"], strict=True)]
    return table(["true ↓ / predicted →", *cm["labels"]], rows)


def _per_class(ev: dict[str, Any]) -> dict[str, Any] | None:
    per_class = ev.get("per_class")
    if not per_class:
        return None
    counts = ev.get("counts") or {}
    rows = [[c, counts.get(c), *(s.get(k) for k in PER_CLASS_COLUMNS)] for c, s in per_class.items()]
    for average in ("micro", "macro"):
        if ev.get(average):
            rows.append([f"({average} average)", None, *(ev[average].get(k) for k in PER_CLASS_COLUMNS)])
    return table(["class", "count", *map(stat_name, PER_CLASS_COLUMNS)], rows)


def _operating_points(facts: dict[str, Any]) -> dict[str, Any] | None:
    points = facts.get("operating_points") or {}
    if not points:
        return None
    rows = []
    for name, point in points.items():
        answer = (point or {}).get("answer")
        query = (point or {}).get("query", "")
        cells = (
            [answer.get(k) for k in ("threshold", "precision", "recall", "filter_rate", "fpr")]
            if answer
            else []
        )
        rows.append(
            [
                name,
                point.get("class", facts.get("positive")),
                query,
                *(cells or ["no threshold satisfies it"]),
            ]
        )
    headers = ["operating point", "class", "query", "threshold", "precision", "recall", "filter rate", "FPR"]
    out = table(headers, rows)
    for row in out["rows"]:  # an unanswerable query spans the statistics' columns
        row[-1]["span"] = len(headers) - len(row) + 1
    return out


def _operating_markers(facts: dict[str, Any]) -> dict[str, list[tuple[str, float]]]:
    """Operating points to mark on the threshold curves, by class (binary: the positive class)."""
    markers: dict[str, list[tuple[str, float]]] = {}
    for name, point in (facts.get("operating_points") or {}).items():
        answer = (point or {}).get("answer") or {}
        cls = (point or {}).get("class", facts.get("positive"))
        if cls is not None and answer.get("threshold") is not None:
            markers.setdefault(str(cls), []).append((name, answer["threshold"]))
    return markers


# --------------------------------------------------------------------------- the rest


def _gates(facts: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any] | None:
    """The spec's gates against this version's own numbers; regressions need the alias holder."""
    gates = facts.get("gates") or {}
    if not gates or not ev.get("per_class"):
        return None

    version = SimpleNamespace(
        ref=f"{facts.get('model')}@{facts.get('version')}",
        version=facts.get("version") or 0,
        spec={"gates": gates},
        summary=summarize(ev, ev.get("positive")),
    )
    rows = [
        [r["gate"], r["stat"], r["value"], r["limit"], "pass" if r["passed"] else "FAIL"]
        for r in check_gates(version, None)
    ]
    rows += [
        ["max_regression", stat, None, limit, "checked at promotion"]
        for stat, limit in (gates.get("max_regression") or {}).items()
    ]
    return table(["gate", "statistic", "this version", "limit", "result"], rows)


def _comparison(facts: dict[str, Any]) -> dict[str, Any] | None:
    comparison = facts.get("comparison") or []
    if not comparison:
        return None
    prior = facts.get("prior_score")
    rows = []
    for entry in comparison:
        scores = plots.floats(entry.get("fold_scores"))
        notes = ["chosen"] if entry.get("candidate") == facts.get("candidate") else []
        mean = entry.get("mean_score")
        if prior is not None and mean is not None and mean <= prior + PRIOR_MARGIN:
            notes.append("no better than the prior")
        std = float(np.std(scores[np.isfinite(scores)])) if np.isfinite(scores).any() else None
        cost = entry.get("serving") or {}  # what one row and 1,000 rows cost to predict as served
        rows.append(
            [
                entry.get("candidate", "?"),
                mean,
                std,
                entry.get("mean_fit_time"),
                round(cost["predict_us"], 1) if cost else None,
                round(cost["batch_us"] / 1000, 2) if cost else None,
                cost.get("runtime"),
                ", ".join(notes),
                entry.get("params"),
            ]
        )
    if prior is not None:
        rows.append(["(prior: the class frequencies)", prior, None, None, None, None, None, "", None])
    metric = facts.get("metric") or "score"
    header = ["candidate", f"mean {metric}", "std", "mean fit time (s)", "1 row (µs)", "1,000 rows (ms)"]
    return table([*header, "served by", "note", "params"], rows)


PRIOR_MARGIN = 0.005  # as training's NO_BETTER_MARGIN: within this of the prior is no better


def _lineage(facts: dict[str, Any]) -> dict[str, Any] | None:
    lineage = facts.get("lineage")
    if not lineage:
        return None
    rows: list[list[Any]] = []
    for key, value in lineage.items():
        name = key.replace("_", " ")
        # One row per entry of a nested mapping (library versions, sources by role)
        # reads better than a JSON blob in one cell.
        if isinstance(value, dict):
            rows.extend([f"{name}: {sub}", sub_value] for sub, sub_value in value.items())
        else:
            rows.append([name, value])
    return table(["fact", "value"], rows)


def _unlearning(facts: dict[str, Any], draw: plots.Figures) -> dict[str, Any] | None:
    """Whether the model unlearns fast, what sharding cost on held-out data, and the shard curve."""
    u = facts.get("unlearning")
    if not u:
        return None
    curve = u.get("curve") or []
    stats = ("roc_auc", "average_precision", "log_loss")
    out = {"fast": bool(u.get("fast")), "note": u.get("note", ""), "cost": _key_values(u.get("cost"))}
    rows = [[p.get("shards"), *(p.get(s) for s in stats)] for p in curve]
    out["curve"] = table(["shards", *stats], rows) if curve else None
    out["curve_plot"] = draw("shard-curve", plots.shard_curve_plot, curve) if len(curve) > 1 else None
    return out


def _key_values(mapping: dict[str, Any] | None) -> dict[str, Any] | None:
    return table(["name", "value"], [[k, v] for k, v in mapping.items()]) if mapping else None


def _features(facts: dict[str, Any]) -> dict[str, Any] | None:
    features = facts.get("features") or []
    sensitive = list(facts.get("sensitive") or [])
    if not features and not sensitive:
        return None
    names = {f.get("name") for f in features}
    rows = [
        [f.get("name"), f.get("kind"), "yes", "yes" if f.get("name") in sensitive else "no"] for f in features
    ]
    # Sensitive columns the model does not use are still what it was judged on.
    rows += [[s, "—", "no", "yes"] for s in sensitive if s not in names]
    return table(["column", "kind", "feature", "sensitive"], rows)


def _data(facts: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    lineage = facts.get("lineage") or {}
    sources = lineage.get("sources") or {}
    test = sources.get("test") or []
    counts = ev.get("counts") or {}
    return {
        "training": table(
            ["fact", "value"],
            [
                r
                for r in [
                    ["files", sources.get("train")],
                    ["rows", lineage.get("train_rows")],
                    ["data fingerprint", lineage.get("data_fingerprint")],
                ]
                if r[1]
            ],
        ),
        "evaluation": table(
            ["fact", "value"],
            [
                ["files", test or "a seeded stratified split of the training files"],
                ["rows", ev.get("n") or lineage.get("test_rows")],
            ]
            + [[f"class {c}", n] for c, n in counts.items()],
        ),
    }


def _caveats(facts: dict[str, Any], ev: dict[str, Any]) -> list[str]:
    """What a reader should know that the numbers alone do not say, found in the facts."""
    notes = []
    for attribute, by_class in (ev.get("fairness") or {}).items():
        block: dict[str, Any] = next(iter((by_class or {}).values()), {}) or {}
        if block.get("excluded_groups"):
            notes.append(
                f"{attribute}: {len(block['excluded_groups'])} group(s) have fewer than {block.get('min_group_size')} "
                f"held-out rows and are not compared: {', '.join(block['excluded_groups'][:10])}."
            )
    prior = facts.get("prior_score")
    for entry in facts.get("comparison") or []:
        mean = entry.get("mean_score")
        if prior is not None and mean is not None and mean <= prior + PRIOR_MARGIN:
            notes.append(
                f"Candidate {entry.get('candidate')} scored no better than predicting the class frequencies."
            )
    if ev.get("task") == "multiclass":
        notes.append(
            "Micro and macro rows average one-vs-rest statistics; the accuracy is the share of items classified correctly."
        )
    return notes


SUMMARY_FIELDS = (
    ("task", "task"),
    ("classes", "classes"),
    ("positive class", "positive"),
    ("estimator", "candidate"),
    ("selection metric", "metric"),
    ("created", "created_at"),
)
DETAIL_FIELDS = (("owner", "owner"), ("licence", "licence"), ("contact", "contact"))


def _context(facts: dict[str, Any], draw: plots.Figures) -> dict[str, Any]:
    ev = facts.get("evaluation") or {}
    details = facts.get("details") or {}
    # Each figure's data-plot names its kind, so a reader (or a test) can tell which are present.
    performance_plots = [
        ("roc", "ROC curve", draw("roc", plots.roc_plot, ev)),
        ("pr", "Precision-recall curve", draw("pr", plots.pr_plot, ev)),
        ("calibration", "Calibration (reliability diagram)", draw("calibration", plots.calibration_plot, ev)),
    ]
    comparison = facts.get("comparison") or []
    comparison_plots = [
        (kind, title, draw(kind, plots.comparison_plot, comparison, facts.get("candidate"), key, ylabel))
        for kind, key, title, ylabel in (
            ("cv-scores", "fold_scores", "Cross-validation scores by fold", facts.get("metric") or "score"),
            ("fit-times", "fit_times", "Fit times by fold", "seconds"),
        )
    ]
    version = facts.get("version")
    summary_rows = [[name, facts[key]] for name, key in SUMMARY_FIELDS if facts.get(key) is not None]
    summary_rows += [[name, details[key]] for name, key in DETAIL_FIELDS if details.get(key)]
    return {
        "facts": facts,
        "details": details,
        "title": f"{facts.get('model', 'model')}" + (f" v{version}" if version is not None else ""),
        "summary": table(["", ""], summary_rows),
        "headline": _headline(ev) if ev else None,
        "confusion": _confusion(ev),
        "per_class": _per_class(ev),
        "plots": _present(performance_plots),
        "threshold_plot": draw("thresholds", plots.threshold_plot, ev, _operating_markers(facts)),
        "operating_points": _operating_points(facts),
        "fairness": fairness_sections(facts, ev, draw),
        "mitigation": mitigation_section(facts),
        "gates": _gates(facts, ev),
        "importance_plot": draw("importance", plots.importance_plot, facts.get("importance") or []),
        # A replacement that forgot a few items keeps its predecessor's importance.
        "importance_from": (facts.get("unlearning") or {}).get("inherited_from"),
        "comparison": _comparison(facts),
        "comparison_plots": _present(comparison_plots),
        "params": _key_values(facts.get("params")),
        "search": _key_values(_search(facts.get("search"))),
        "features": _features(facts),
        "data": _data(facts, ev),
        "sensitive": sorted(facts.get("sensitive") or []),
        "unlearning": _unlearning(facts, draw),
        "figures_from": (facts.get("unlearning") or {}).get("inherited_from") if draw.reused else None,
        "caveats": _caveats(facts, ev),
        "lineage": _lineage(facts),
    }


def _search(search: dict[str, Any] | None) -> dict[str, Any] | None:
    if not search:
        return None
    return {
        "time budget (s)": search.get("budget_s"),
        "trials": search.get("trials"),
        "best params": search.get("best_params"),
    }


def _present(figures: list[tuple[str, str, Any]]) -> list[dict[str, Any]]:
    return [{"kind": kind, "title": title, "svg": svg} for kind, title, svg in figures if svg is not None]


def model_card(facts: dict[str, Any], reused: dict[str, Markup] | None = None) -> str:
    """A complete standalone HTML page for the model described by ``facts``; with ``reused``
    (``plots.figures_of`` the card of the version a replacement replaces) its figures are taken, not drawn."""
    # rcParams are read as artists are created and drawn, so every plot is built
    # inside the context. (rc_context is process-global: render cards from one
    # thread at a time.)
    with matplotlib.rc_context(_SVG_RC):
        context = _context(facts, plots.Figures(reused))
    return _environment().get_template("model_card.html").render(fmt=fmt, **context)
