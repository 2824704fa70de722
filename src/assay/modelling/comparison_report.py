"""The comparison as a page or a picture: statistics side by side and box plots of per-fold scores.

``write_report`` writes a standalone HTML page (tables plus inline SVG, no external assets) or,
for a ``.png`` path, the plots alone: each version's cross-validation scores per fold as a box
plot, and each paired difference with its bootstrap interval.
"""

from __future__ import annotations

import io
from pathlib import Path

import jinja2
from markupsafe import Markup
from matplotlib.figure import Figure

from assay import templating
from assay.errors import InvalidInput
from assay.modelling.comparison import BOOTSTRAPPED, Comparison

REPORT_SUFFIXES = (".html", ".png")


def _environment() -> jinja2.Environment:
    return templating.environment(Path(__file__).with_name("templates"))


def figure(comparison: Comparison) -> Figure:
    """Box plots of both versions' fold scores beside the paired differences and their intervals."""
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    folds_ax, diff_ax = fig.subplots(1, 2)
    cv = comparison.cross_validation
    boxes = [(ref, cv[key]) for ref, key in ((comparison.a, "a"), (comparison.b, "b")) if cv.get(key)]
    if boxes:
        folds_ax.boxplot([scores for _, scores in boxes], tick_labels=[ref for ref, _ in boxes])
        for i, (_, scores) in enumerate(boxes, start=1):
            folds_ax.plot([i] * len(scores), scores, "o", alpha=0.5, markersize=4)
        folds_ax.set_ylabel(f"cross-validated {cv['metric']} per fold")
    else:
        folds_ax.text(0.5, 0.5, "no per-fold scores recorded", ha="center", va="center")
    folds_ax.set_title("cross-validation folds")
    stats = [
        s for s in BOOTSTRAPPED if comparison.stats[s].get("ci") and comparison.stats[s]["ci"][0] is not None
    ]
    for i, stat in enumerate(stats):
        row = comparison.stats[stat]
        low, high = row["ci"]
        diff_ax.errorbar(
            [row["difference"]],
            [i],
            xerr=[[row["difference"] - low], [high - row["difference"]]],
            fmt="o",
            capsize=4,
        )
    diff_ax.axvline(0.0, color="grey", linewidth=1)
    diff_ax.set_yticks(range(len(stats)), stats)
    diff_ax.set_xlabel(f"{comparison.b} minus {comparison.a} (bootstrap interval)")
    diff_ax.set_title(f"on {comparison.n} rows")
    return fig


def render_html(comparison: Comparison) -> str:
    buffer = io.StringIO()
    figure(comparison).savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return (
        _environment()
        .get_template("comparison.html")
        .render(c=comparison.to_dict(), verdict=comparison.verdict(), plot=Markup(svg[svg.index("<svg") :]))
    )


def write_report(comparison: Comparison, path: Path) -> Path:
    """Write the page (``.html``) or the plots (``.png``); the file appears whole or not at all."""
    suffix = path.suffix.lower()
    if suffix not in REPORT_SUFFIXES:
        raise InvalidInput(f"{path}: write {' or '.join(REPORT_SUFFIXES)}", field="output")
    tmp = path.with_name(path.name + ".tmp")
    if suffix == ".png":
        figure(comparison).savefig(tmp, format="png", dpi=120)
    else:
        tmp.write_text(render_html(comparison))
    tmp.replace(path)
    return path
