"""The model card's plots: matplotlib figures rendered as inline SVG.

Each function takes facts from the card (JSON, possibly partial) and returns
an SVG, or None when there is nothing to draw. Plots are sized to their
content (a row per group or feature, so labels never overlap), every axis that
shows small differences is scaled to the data rather than to 0-1, and numbers
drawn on a plot use the card's format (``fmt``).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from markupsafe import Markup
from matplotlib.figure import Figure

from assay.modelling.formatting import fmt, label, stat_name

MAX_GROUPS_PLOTTED = 30
MAX_FEATURES_PLOTTED = 25
THRESHOLD_CURVE_POINTS = 400
MAX_LABEL_CHARS = 32


def floats(values: list[Any] | None) -> np.ndarray:
    """JSON numbers with None as NaN, so matplotlib leaves gaps where a stat is undefined."""
    return np.array([np.nan if v is None else v for v in values or []], dtype=float)


def _svg(fig: Figure) -> Markup:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    # Drop the XML declaration and DOCTYPE: the SVG is inlined into HTML.
    return Markup(text[text.index("<svg") :])


def _figure(width: float = 5.0, height: float = 4.0, **subplots: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(**subplots)


def roc_plot(ev: dict[str, Any]) -> Markup | None:
    curves = {c: v for c, v in (ev.get("roc_curve") or {}).items() if v}
    if not curves:
        return None
    fig, ax = _figure(4.6, 4.2)
    for c, curve in curves.items():
        auc = (ev.get("per_class") or {}).get(c, {}).get("roc_auc")
        ax.plot(curve["fpr"], curve["tpr"], label=label(f"{c} (AUC {fmt(auc)})"))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _svg(fig)


def pr_plot(ev: dict[str, Any]) -> Markup | None:
    curves = {c: v for c, v in (ev.get("pr_curve") or {}).items() if v}
    if not curves:
        return None
    fig, ax = _figure(4.6, 4.2)
    n = ev.get("n") or 0
    for c, curve in curves.items():
        ap = (ev.get("per_class") or {}).get(c, {}).get("pr_auc")
        (line,) = ax.plot(curve["recall"], curve["precision"], label=label(f"{c} (AP {fmt(ap)})"))
        count = (ev.get("counts") or {}).get(c)
        if n and count is not None:
            # A classifier that flags at random scores the class's base rate.
            ax.axhline(count / n, ls=":", lw=0.8, color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    return _svg(fig)


def threshold_plot(ev: dict[str, Any], markers: dict[str, list[tuple[str, float]]]) -> Markup | None:
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
        x = floats(table["threshold"])[keep]
        for stat in ("precision", "recall", "filter_rate"):
            ax.plot(x, floats(table.get(stat))[keep], label=stat_name(stat))
        for i, (name, threshold) in enumerate(sorted(markers.get(c, []), key=lambda m: m[1])):
            ax.axvline(threshold, color="grey", ls=":", lw=0.9)
            # Alternate heights, so the names of close thresholds do not print over each other.
            ax.annotate(
                label(name, 18),
                (threshold, 1.0 - 0.5 * (i % 2)),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
            )
        ax.set(title=label(c), xlabel="threshold (flag when score ≥ threshold)", ylim=(0, 1.02))
    # One legend for all panels, outside them, so it never hides a curve.
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    return _svg(fig)


def calibration_plot(ev: dict[str, Any]) -> Markup | None:
    curves = {c: v for c, v in ((ev.get("calibration") or {}).get("curve") or {}).items() if v}
    if not curves:
        return None
    fig, (ax, counts_ax) = _figure(4.6, 5.0, nrows=2, height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfectly calibrated")
    for c, curve in curves.items():
        (line,) = ax.plot(curve["prob_pred"], curve["prob_true"], marker="o", ms=3, label=label(c))
        counts_ax.plot(curve["prob_pred"], curve["count"], marker="o", ms=3, color=line.get_color())
    ax.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left")
    counts_ax.set(xlabel="mean predicted probability", ylabel="items in bin", ylim=(0, None))
    return _svg(fig)


def comparison_plot(
    comparison: list[dict[str, Any]], chosen: str | None, key: str, ylabel: str
) -> Markup | None:
    """A box per candidate of one per-fold list (``fold_scores`` or ``fit_times``), the chosen one in bold."""
    entries = [e for e in comparison if e.get(key)]
    if not entries:
        return None
    fig, ax = _figure(max(4.6, 1.3 * len(entries)), 3.6)
    data = [floats(e.get(key)) for e in entries]
    ax.boxplot([d[np.isfinite(d)] for d in data])
    ax.set_xticks(np.arange(1, len(entries) + 1), [label(e.get("candidate", "?")) for e in entries])
    ax.set_ylabel(label(ylabel))
    ax.tick_params(axis="x", rotation=20)
    for tick, entry in zip(ax.get_xticklabels(), entries, strict=True):
        if entry.get("candidate") == chosen:
            tick.set_fontweight("bold")
    return _svg(fig)


FAIRNESS_RATES = ("selection_rate", "tpr", "fpr", "fnr")


def _zoomed(ax: Any, values: np.ndarray) -> None:
    """An x axis from 0 to past the largest value (not 0-1, where small rates vanish), with room
    for the numbers printed beside the marks; ticks stop at 1, the largest rate there is."""
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    ax.set_xlim(0, top * 1.35 if top > 0 else 0.05)
    if top * 1.35 > 1.0:
        ax.set_xticks([0.0, 0.25, 0.5, 0.75, 1.0])


def fairness_plot(attribute: str, cls: str, result: dict[str, Any]) -> Markup | None:
    """One panel per rate, a row per group: the value as a dot and its number beside it."""
    groups = result.get("groups") or {}
    if not groups:
        return None
    names = list(groups)
    if len(names) > MAX_GROUPS_PLOTTED:  # too many rows are unreadable: keep the biggest groups
        names = sorted(names, key=lambda g: -(groups[g].get("count") or 0))[:MAX_GROUPS_PLOTTED]
    y = np.arange(len(names))
    fig, axes = _figure(9.0, 0.32 * len(names) + 1.3, ncols=len(FAIRNESS_RATES), sharey=True, squeeze=False)
    for ax, stat in zip(axes[0], FAIRNESS_RATES, strict=True):
        values = floats([groups[g].get(stat) for g in names])
        ax.hlines(y, 0, np.nan_to_num(values), color="#c5cdd6", lw=1)
        ax.plot(values, y, "o", ms=4)
        _zoomed(ax, values)
        for row, value in zip(y, values, strict=True):
            ax.annotate(fmt(float(value)) if np.isfinite(value) else "—", (value if np.isfinite(value) else 0, row),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=7)  # fmt: skip
        ax.set_title(stat_name(stat), fontsize=9)
        ax.grid(axis="x", lw=0.4, color="#e3e7ec")
    axes[0][0].set_yticks(
        y, [label(f"{g} (n={fmt(groups[g].get('count'))})", MAX_LABEL_CHARS) for g in names]
    )
    for i, tick in enumerate(axes[0][0].get_yticklabels()):
        tick.set_gid(f"group-label-{i}")
    axes[0][0].invert_yaxis()
    fig.suptitle(label(f"{attribute} — {cls}"), fontsize=9)
    return _svg(fig)


DISPARITIES = (
    "demographic_parity_difference",
    "equalized_odds_difference",
    "true_positive_rate_difference",
    "false_positive_rate_difference",
)


def disparity_plot(result: dict[str, Any]) -> Markup | None:
    """Each difference between groups as a bar with its confidence interval, on an axis fitted to them."""
    shown = [k for k in DISPARITIES if result.get(k) is not None]
    if not shown:
        return None
    intervals = result.get("intervals") or {}
    values = np.array([result[k] for k in shown], dtype=float)
    lows = np.array([(intervals.get(k) or [v, v])[0] for k, v in zip(shown, values, strict=True)])
    highs = np.array([(intervals.get(k) or [v, v])[1] for k, v in zip(shown, values, strict=True)])
    fig, ax = _figure(5.6, 0.42 * len(shown) + 1.0)
    y = np.arange(len(shown))
    bars = ax.barh(y, values, color="#2b5fad", height=0.55)
    for i, bar in enumerate(bars):
        bar.set_gid(f"disparity-bar-{i}")
    ax.errorbar(values, y, xerr=[np.maximum(values - lows, 0), np.maximum(highs - values, 0)], fmt="none",
                ecolor="#1d232b", capsize=3, lw=1)  # fmt: skip
    _zoomed(ax, np.r_[values, highs])
    for row, value in zip(y, values, strict=True):
        ax.annotate(fmt(float(value)), (value, row), xytext=(4, 6), textcoords="offset points", fontsize=7)
    ax.set_yticks(y, [stat_name(k) for k in shown])
    ax.invert_yaxis()
    confidence = result.get("confidence")
    ax.set_xlabel(
        "difference between groups" + (f" ({confidence:.0%} interval)" if intervals and confidence else "")
    )
    return _svg(fig)


def group_calibration_plot(result: dict[str, Any]) -> Markup | None:
    """Each group's reliability curve: how often the class is true at each predicted probability."""
    curves = {g: s["calibration"] for g, s in (result.get("groups") or {}).items() if s.get("calibration")}
    if not curves:
        return None
    fig, ax = _figure(4.6, 4.2)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfectly calibrated")
    for g, curve in list(curves.items())[:MAX_GROUPS_PLOTTED]:
        brier = (result["groups"][g] or {}).get("brier")
        ax.plot(curve["prob_pred"], curve["prob_true"], marker="o", ms=3,
                label=label(f"{g} (Brier {fmt(brier)})", MAX_LABEL_CHARS))  # fmt: skip
    ax.set(xlabel="mean predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left", fontsize=7)
    return _svg(fig)


def importance_plot(importance: list[dict[str, Any]]) -> Markup | None:
    top = importance[:MAX_FEATURES_PLOTTED]
    if not top:
        return None
    fig, ax = _figure(5.5, 0.25 * len(top) + 1.2)
    y = np.arange(len(top))
    ax.barh(y, [r.get("importance") or 0.0 for r in top], xerr=[r.get("std") or 0.0 for r in top])
    ax.set_yticks(y, [label(r.get("feature")) for r in top])
    ax.invert_yaxis()  # most important on top
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("drop in ROC-AUC when shuffled")
    return _svg(fig)


def shard_curve_plot(curve: list[dict[str, Any]]) -> Markup | None:
    """Held-out ROC-AUC against the number of shards a sharded model is trained in."""
    fig, ax = _figure(5.0, 3.2)
    ax.plot([p["shards"] for p in curve], [p["roc_auc"] for p in curve], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shards")
    ax.set_ylabel("held-out ROC-AUC")
    return _svg(fig)


class Figures:
    """Draws the card's figures, each marked in the HTML by its key; a figure whose key is in
    ``reused`` (the figures of the version a replacement replaces, ``figures_of``) is taken as is."""

    def __init__(self, reused: dict[str, Markup] | None = None) -> None:
        self.reused = reused or {}

    def __call__(self, key: str, draw: Callable[..., Markup | None], *args: Any) -> Markup | None:
        mark = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        svg = self.reused.get(mark)
        if svg is None:
            svg = draw(*args)
        return None if svg is None else Markup(f"<!--figure {mark}-->") + svg


_FIGURE = re.compile(r"<!--figure ([0-9a-f]{16})-->(<svg.*?</svg>)", re.S)


def figures_of(html: str) -> dict[str, Markup]:
    """The figures of a card this module rendered, by key (for ``Figures``)."""
    return {m.group(1): Markup(m.group(2)) for m in _FIGURE.finditer(html)}
