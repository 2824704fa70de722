"""The model card: one standalone HTML page describing a trained model.

This module owns turning a model's facts (the JSON that training records:
evaluation, importance, candidate comparison, operating points, lineage) into
a page a product team can read: tables plus matplotlib plots embedded as
inline SVG, with inline CSS and no external assets or JavaScript. The facts
themselves stay the JSON source of truth; the card only presents them.

Every optional section is skipped when its facts are missing or None, and all
text goes through Jinja2's autoescaping (SVG text is escaped by matplotlib).
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import numpy as np
from markupsafe import Markup
from matplotlib.figure import Figure

MAX_GROUPS_PLOTTED = 30
MAX_FEATURES_PLOTTED = 25
THRESHOLD_CURVE_POINTS = 400
# Text as <text> elements (escaped by matplotlib) keeps the page small and the
# labels selectable; a date in the metadata would make identical cards differ.
_SVG_RC: Any = {"svg.fonttype": "none", "font.size": 9}


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# --------------------------------------------------------------------------- formatting


def _fmt(value: Any) -> str:
    """A cell's text: 3 significant decimals for rates, '—' for undefined."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not np.isfinite(value):
            return "—"
        return f"{value:.3f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


# How statistics are named for readers; anything else shows its key with spaces.
STAT_NAMES = {
    "f1": "F1",
    "fpr": "FPR",
    "tpr": "TPR",
    "tnr": "TNR",
    "npv": "NPV",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (avg. precision)",
}


def _stat_name(key: str) -> str:
    return STAT_NAMES.get(key, key.replace("_", " "))


def _table(headers: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"headers": headers, "rows": [[_fmt(v) for v in row] for row in rows]}


def _label(text: Any) -> str:
    # A "$" pair would switch matplotlib to mathtext and can fail to parse.
    return str(text).replace("$", r"\$")


def _floats(values: list[Any] | None) -> np.ndarray:
    """JSON numbers with None as NaN, so matplotlib leaves gaps where a stat is undefined."""
    return np.array([np.nan if v is None else v for v in values or []], dtype=float)


# --------------------------------------------------------------------------- plots


def _svg(fig: Figure) -> Markup:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    # Drop the XML declaration and DOCTYPE: the SVG is inlined into HTML.
    return Markup(text[text.index("<svg") :])


def _figure(width: float = 5.0, height: float = 4.0, **subplots: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(**subplots)


def _roc_plot(ev: dict[str, Any]) -> Markup | None:
    curves = {c: v for c, v in (ev.get("roc_curve") or {}).items() if v}
    if not curves:
        return None
    fig, ax = _figure(4.6, 4.2)
    for c, curve in curves.items():
        auc = (ev.get("per_class") or {}).get(c, {}).get("roc_auc")
        ax.plot(curve["fpr"], curve["tpr"], label=_label(f"{c} (AUC {_fmt(auc)})"))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _svg(fig)


def _pr_plot(ev: dict[str, Any]) -> Markup | None:
    curves = {c: v for c, v in (ev.get("pr_curve") or {}).items() if v}
    if not curves:
        return None
    fig, ax = _figure(4.6, 4.2)
    n = ev.get("n") or 0
    for c, curve in curves.items():
        ap = (ev.get("per_class") or {}).get(c, {}).get("pr_auc")
        (line,) = ax.plot(curve["recall"], curve["precision"], label=_label(f"{c} (AP {_fmt(ap)})"))
        count = (ev.get("counts") or {}).get(c)
        if n and count is not None:
            # A classifier that flags at random scores the class's base rate.
            ax.axhline(count / n, ls=":", lw=0.8, color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    return _svg(fig)


def _threshold_plot(ev: dict[str, Any], markers: dict[str, list[tuple[str, float]]]) -> Markup | None:
    tables = {c: t for c, t in (ev.get("thresholds") or {}).items() if t and t.get("threshold")}
    if not tables:
        return None
    cols = min(len(tables), 3)
    rows = -(-len(tables) // cols)
    fig, axes = _figure(4.6 * cols, 3.4 * rows, nrows=rows, ncols=cols, squeeze=False)
    for ax in axes.flat[len(tables) :]:
        ax.set_visible(False)
    for ax, (c, table) in zip(axes.flat, tables.items(), strict=False):
        # Plot a bounded number of rows: a big test set has one row per distinct score.
        n = len(table["threshold"])
        keep = np.unique(np.linspace(0, n - 1, min(n, THRESHOLD_CURVE_POINTS)).round().astype(int))
        x = _floats(table["threshold"])[keep]
        for stat in ("precision", "recall", "filter_rate"):
            ax.plot(x, _floats(table.get(stat))[keep], label=_stat_name(stat))
        for name, threshold in markers.get(c, []):
            ax.axvline(threshold, color="grey", ls=":", lw=0.9)
            ax.annotate(_label(name), (threshold, 1.0), rotation=90, va="top", ha="right", fontsize=7)
        ax.set(title=_label(c), xlabel="threshold (flag when score ≥ threshold)", ylim=(0, 1.02))
    # One legend for all panels, outside them, so it never hides a curve.
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    return _svg(fig)


def _calibration_plot(ev: dict[str, Any]) -> Markup | None:
    curves = {c: v for c, v in ((ev.get("calibration") or {}).get("curve") or {}).items() if v}
    if not curves:
        return None
    fig, (ax, counts_ax) = _figure(4.6, 5.0, nrows=2, height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfectly calibrated")
    for c, curve in curves.items():
        (line,) = ax.plot(curve["prob_pred"], curve["prob_true"], marker="o", ms=3, label=_label(c))
        counts_ax.plot(curve["prob_pred"], curve["count"], marker="o", ms=3, color=line.get_color())
    ax.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left")
    counts_ax.set(xlabel="mean predicted probability", ylabel="items in bin", ylim=(0, None))
    return _svg(fig)


def _comparison_plot(
    comparison: list[dict[str, Any]], chosen: str | None, key: str, ylabel: str
) -> Markup | None:
    """A box per candidate of one per-fold list (``fold_scores`` or ``fit_times``), the chosen one in bold."""
    entries = [e for e in comparison if e.get(key)]
    if not entries:
        return None
    fig, ax = _figure(max(4.6, 1.3 * len(entries)), 3.6)
    data = [_floats(e.get(key)) for e in entries]
    ax.boxplot([d[np.isfinite(d)] for d in data])
    ax.set_xticks(np.arange(1, len(entries) + 1), [_label(e.get("candidate", "?")) for e in entries])
    ax.set_ylabel(_label(ylabel))
    ax.tick_params(axis="x", rotation=20)
    for tick, entry in zip(ax.get_xticklabels(), entries, strict=True):
        if entry.get("candidate") == chosen:
            tick.set_fontweight("bold")
    return _svg(fig)


def _fairness_plot(attribute: str, cls: str, result: dict[str, Any]) -> Markup | None:
    groups = result.get("groups") or {}
    if not groups:
        return None
    names = list(groups)
    if len(names) > MAX_GROUPS_PLOTTED:  # too many bars are unreadable: keep the biggest groups
        names = sorted(names, key=lambda g: -(groups[g].get("count") or 0))[:MAX_GROUPS_PLOTTED]
    x = np.arange(len(names))
    fig, ax = _figure(max(4.6, 0.5 * len(names) + 2), 3.4)
    width = 0.27
    for offset, stat in zip((-width, 0.0, width), ("selection_rate", "tpr", "fpr"), strict=True):
        heights = _floats([groups[g].get(stat) for g in names])
        ax.bar(x + offset, np.nan_to_num(heights), width, label=_stat_name(stat))
    ax.set_xticks(x, [_label(f"{g}\n(n={groups[g].get('count')})") for g in names])
    ax.set(ylim=(0, 1.0), title=_label(f"{attribute} — {cls}"))
    fig.legend(loc="outside lower center", ncols=3)
    return _svg(fig)


def _importance_plot(importance: list[dict[str, Any]]) -> Markup | None:
    top = importance[:MAX_FEATURES_PLOTTED]
    if not top:
        return None
    fig, ax = _figure(5.5, 0.25 * len(top) + 1.2)
    y = np.arange(len(top))
    ax.barh(y, [r.get("importance") or 0.0 for r in top], xerr=[r.get("std") or 0.0 for r in top])
    ax.set_yticks(y, [_label(r.get("feature")) for r in top])
    ax.invert_yaxis()  # most important on top
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("drop in ROC-AUC when shuffled")
    return _svg(fig)


# --------------------------------------------------------------------------- sections


def _headline(ev: dict[str, Any]) -> dict[str, Any]:
    rows: list[list[Any]] = [["test rows", ev.get("n")], ["accuracy", ev.get("accuracy")]]
    positive = ev.get("positive")
    stats = (ev.get("per_class") or {}).get(positive) if positive is not None else None
    if stats:
        rows.append(["decision threshold", ev.get("decision_threshold")])
        for key in ("precision", "recall", "f1", "roc_auc", "pr_auc", "filter_rate"):
            rows.append([f"{_stat_name(key)} ({positive})", stats.get(key)])
    else:
        for key in ("f1", "roc_auc", "pr_auc"):
            rows.append([f"macro {_stat_name(key)}", (ev.get("macro") or {}).get(key)])
    rows.append(["Brier score", (ev.get("calibration") or {}).get("brier")])
    return _table(["statistic", "value"], [r for r in rows if r[1] is not None])


def _confusion(ev: dict[str, Any]) -> dict[str, Any] | None:
    cm = ev.get("confusion_matrix")
    if not cm:
        return None
    rows = [[label, *row] for label, row in zip(cm["labels"], cm["matrix"], strict=True)]
    return _table(["true ↓ / predicted →", *cm["labels"]], rows)


PER_CLASS_COLUMNS = ("precision", "recall", "f1", "fpr", "match_rate", "roc_auc", "pr_auc")


def _per_class(ev: dict[str, Any]) -> dict[str, Any] | None:
    per_class = ev.get("per_class")
    if not per_class:
        return None
    counts = ev.get("counts") or {}
    rows = [[c, counts.get(c), *(s.get(k) for k in PER_CLASS_COLUMNS)] for c, s in per_class.items()]
    for average in ("micro", "macro"):
        if ev.get(average):
            rows.append([f"({average} average)", None, *(ev[average].get(k) for k in PER_CLASS_COLUMNS)])
    return _table(["class", "count", *map(_stat_name, PER_CLASS_COLUMNS)], rows)


def _operating_points(facts: dict[str, Any]) -> list[dict[str, Any]]:
    points = []
    for name, point in (facts.get("operating_points") or {}).items():
        point = point or {}
        answer = point.get("answer")
        query = point.get("query", "")
        points.append(
            {
                "name": name,
                "class": _fmt(point.get("class", facts.get("positive"))),
                "query": query,
                "missing": None if answer else f'no threshold satisfies "{query}"',
                "cells": [
                    _fmt((answer or {}).get(k))
                    for k in ("threshold", "precision", "recall", "filter_rate", "fpr")
                ],
            }
        )
    return points


def _operating_markers(facts: dict[str, Any]) -> dict[str, list[tuple[str, float]]]:
    """Operating points to mark on the threshold curves, by class (binary: the positive class)."""
    markers: dict[str, list[tuple[str, float]]] = {}
    for name, point in (facts.get("operating_points") or {}).items():
        answer = (point or {}).get("answer") or {}
        cls = (point or {}).get("class", facts.get("positive"))
        if cls is not None and answer.get("threshold") is not None:
            markers.setdefault(str(cls), []).append((name, answer["threshold"]))
    return markers


FAIRNESS_SUMMARIES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
)


def _fairness(ev: dict[str, Any]) -> list[dict[str, Any]]:
    sections = []
    for attribute, by_class in (ev.get("fairness") or {}).items():
        for cls, result in (by_class or {}).items():
            groups = result.get("groups") or {}
            sections.append(
                {
                    "title": f"{attribute} — {cls}",
                    "plot": _fairness_plot(attribute, cls, result),
                    "summary": _table(
                        ["disparity", "value"],
                        [[_stat_name(key), result.get(key)] for key in FAIRNESS_SUMMARIES],
                    ),
                    "groups": _table(
                        ["group", "count", "selection rate", "TPR", "FPR", "precision"],
                        [
                            [
                                g,
                                s.get("count"),
                                s.get("selection_rate"),
                                s.get("tpr"),
                                s.get("fpr"),
                                s.get("precision"),
                            ]
                            for g, s in groups.items()
                        ],
                    ),
                }
            )
    return sections


def _comparison(facts: dict[str, Any]) -> dict[str, Any] | None:
    comparison = facts.get("comparison") or []
    if not comparison:
        return None
    rows = []
    for entry in comparison:
        scores = _floats(entry.get("fold_scores"))
        chosen = " (chosen)" if entry.get("candidate") == facts.get("candidate") else ""
        rows.append(
            [
                f"{entry.get('candidate', '?')}{chosen}",
                entry.get("mean_score"),
                float(np.std(scores)) if len(scores) else None,
                entry.get("mean_fit_time"),
                entry.get("params"),
            ]
        )
    return _table(
        ["candidate", f"mean {facts.get('metric') or 'score'}", "std", "mean fit time (s)", "params"], rows
    )


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
    return _table(["fact", "value"], rows)


def _unlearning(facts: dict[str, Any]) -> dict[str, Any] | None:
    """Whether the model unlearns fast, what sharding cost on held-out data, and the shard curve."""
    u = facts.get("unlearning")
    if not u:
        return None
    curve = u.get("curve") or []
    stats = ("roc_auc", "average_precision", "log_loss")
    out = {"fast": bool(u.get("fast")), "note": u.get("note", ""), "cost": _key_values(u.get("cost"))}
    rows = [[p.get("shards"), *(p.get(s) for s in stats)] for p in curve]
    out["curve"] = _table(["shards", *stats], rows) if curve else None
    out["curve_plot"] = _curve_plot(curve) if len(curve) > 1 else None
    return out


def _curve_plot(curve: list[dict[str, Any]]) -> Markup | None:
    fig, ax = _figure(5.0, 3.2)
    ax.plot([p["shards"] for p in curve], [p["roc_auc"] for p in curve], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shards")
    ax.set_ylabel("held-out ROC-AUC")
    return _svg(fig)


def _key_values(mapping: dict[str, Any] | None) -> dict[str, Any] | None:
    return _table(["name", "value"], [[k, v] for k, v in mapping.items()]) if mapping else None


def _search(search: dict[str, Any] | None) -> dict[str, Any] | None:
    if not search:
        return None
    return _key_values(
        {
            "time budget (s)": search.get("budget_s"),
            "trials": search.get("trials"),
            "best params": search.get("best_params"),
        }
    )


def _features(facts: dict[str, Any]) -> dict[str, Any] | None:
    features = facts.get("features")
    if not features:
        return None
    sensitive = set(facts.get("sensitive") or [])
    return _table(
        ["feature", "kind", "sensitive"],
        [[f.get("name"), f.get("kind"), f.get("name") in sensitive] for f in features],
    )


SUMMARY_FIELDS = (
    ("task", "task"),
    ("classes", "classes"),
    ("positive class", "positive"),
    ("estimator", "candidate"),
    ("selection metric", "metric"),
    ("created", "created_at"),
)


def _context(facts: dict[str, Any]) -> dict[str, Any]:
    ev = facts.get("evaluation") or {}
    # Each figure's data-plot names its kind, so a reader (or a test) can tell which are present.
    plots = [
        ("roc", "ROC curve", _roc_plot(ev)),
        ("pr", "Precision-recall curve", _pr_plot(ev)),
        ("calibration", "Calibration (reliability diagram)", _calibration_plot(ev)),
    ]
    comparison = facts.get("comparison") or []
    comparison_plots = [
        (kind, title, _comparison_plot(comparison, facts.get("candidate"), key, ylabel))
        for kind, key, title, ylabel in (
            ("cv-scores", "fold_scores", "Cross-validation scores by fold", facts.get("metric") or "score"),
            ("fit-times", "fit_times", "Fit times by fold", "seconds"),
        )
    ]
    version = facts.get("version")
    return {
        "facts": facts,
        "title": f"{facts.get('model', 'model')}" + (f" v{version}" if version is not None else ""),
        "summary": _table(
            ["", ""],
            [[label, facts[key]] for label, key in SUMMARY_FIELDS if facts.get(key) is not None],
        ),
        "headline": _headline(ev) if ev else None,
        "confusion": _confusion(ev),
        "per_class": _per_class(ev),
        "plots": _present(plots),
        "threshold_plot": _threshold_plot(ev, _operating_markers(facts)),
        "operating_points": _operating_points(facts),
        "fairness": _fairness(ev),
        "importance_plot": _importance_plot(facts.get("importance") or []),
        "comparison": _comparison(facts),
        "comparison_plots": _present(comparison_plots),
        "params": _key_values(facts.get("params")),
        "search": _search(facts.get("search")),
        "features": _features(facts),
        "sensitive": sorted(facts.get("sensitive") or []),
        "unlearning": _unlearning(facts),
        "lineage": _lineage(facts),
    }


def _present(plots: list[tuple[str, str, Markup | None]]) -> list[dict[str, Any]]:
    return [{"kind": kind, "title": title, "svg": svg} for kind, title, svg in plots if svg is not None]


def model_card(facts: dict[str, Any]) -> str:
    """A complete standalone HTML page for the model described by ``facts``."""
    # rcParams are read as artists are created and drawn, so every plot is built
    # inside the context. (rc_context is process-global: render cards from one
    # thread at a time.)
    with matplotlib.rc_context(_SVG_RC):
        context = _context(facts)
    return _environment().get_template("model_card.html").render(**context)
