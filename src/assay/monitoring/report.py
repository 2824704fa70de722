"""Monitoring reports people read: a plain-text summary and a standalone HTML page with plots.

Both present an ``Analysis`` (``monitor.analyse``): what was logged, which windows and features
drifted and how much, the score distribution now against the reference, performance over time
against the held-out value the version was trained with (measured from labels, and estimated
with its assumption stated), concept drift detections and where alerts would have started and
ended. The HTML page has inline CSS and inline SVG plots (matplotlib), no script and no external
asset, so the same page is a file to mail and the admin page of ``assay serve``.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup
from matplotlib.figure import Figure

from assay import templating
from assay.modelling.formatting import plain
from assay.monitoring.drift import P_VALUE_TESTS
from assay.monitoring.monitor import Analysis, WindowResult

_SVG_RC: Any = {"svg.fonttype": "none", "font.size": 9}
MAX_HEATMAP_WINDOWS = 200
MAX_TABLE_WINDOWS = 400


def environment() -> jinja2.Environment:
    return templating.environment(Path(__file__).with_name("templates"))


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def _num(value: Any, digits: int = 3) -> str:
    text = plain(value)
    if text is not None:
        return text
    value = float(value)
    if not np.isfinite(value):
        return "—"
    return f"{value:.{digits}f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.{digits}g}"


def score_ratio(test: str, statistic: float | None, threshold: float) -> float | None:
    """How far a column is from its threshold, 1 at the threshold and above 1 when drifting:
    the distance over its threshold, or for p-values log(p) over log(threshold)."""
    if statistic is None:
        return None
    if test in P_VALUE_TESTS:
        return float(np.log(max(statistic, 1e-300)) / np.log(threshold))
    return statistic / threshold


# --------------------------------------------------------------------------- text


def summary_text(a: Analysis, html_path: Path | None = None) -> str:
    """What ``assay monitor report`` prints."""
    t = a.target
    judged = [w for w in a.windows if w.drift.judged]
    lines = [
        f"{t.model}@{t.version}: {a.rows:,} logged rows from {_when(a.since if a.since else a.first)} "
        f"to {_when(a.until)}, {len(a.windows)} windows of {a.window} ({len(judged)} with at least "
        f"{t.config.min_rows} rows judged)",
        f"reference: {t.profile.reference_rows:,} training rows (features), {t.profile.held_out_rows:,} held-out "
        f"rows (outputs); rule: Evidently's default, data set drift when >= {t.config.drift_share:g} of features drift",
        *_drift_lines(judged),
        *_latest_window_lines(judged[-1] if judged else None),
        *_performance_lines(a),
        *_concept_lines(a),
    ]
    alerts = [c for c in a.transitions if c["to"] == "alert"]
    lines.append(
        f"alerts (replayed, after {t.config.alert_after} drifting windows in a row): "
        + (", ".join(f"{c['monitor']} from {c['window_start'][:16]}" for c in alerts) if alerts else "none")
    )
    if html_path is not None:
        lines.append(f"report: {html_path}")
    return "\n".join(lines)


def _drift_lines(judged: list[WindowResult]) -> list[str]:
    """Data set, feature and prediction drift over the judged windows."""
    drifting = [w for w in judged if w.drift.dataset_drift]
    flagged: dict[str, int] = {}
    for w in judged:
        for name in w.drift.drifted_features:
            flagged[name] = flagged.get(name, 0) + 1
    lines = [
        f"data drift: {len(drifting)} of {len(judged)} judged windows"
        + (f" (first {_when(drifting[0].window.start)})" if drifting else "")
    ]
    if flagged:
        top = sorted(flagged.items(), key=lambda kv: -kv[1])
        lines.append(
            "features flagged: " + ", ".join(f"{k} ({v} window{'s' if v > 1 else ''})" for k, v in top)
        )
    else:
        lines.append("features flagged: none")
    out_drift = [w for w in judged if w.drift.output_drift]
    lines.append(f"prediction drift: {len(out_drift)} of {len(judged)} judged windows")
    return lines


def _latest_window_lines(latest: WindowResult | None) -> list[str]:
    """Every column's test and statistic in the latest judged window."""
    if latest is None:
        return []
    d = latest.drift
    lines = [f"latest judged window {_when(latest.window.start)} ({latest.window.n:,} rows):"]
    for c in d.features + d.outputs:
        mark = "DRIFT" if c.drift else "ok"
        psi = f", psi {_num(c.psi)}" if c.psi is not None else ""
        lines.append(
            f"  {c.column:<34} {c.test:<13} {_num(c.statistic):>9} (threshold {c.threshold:g}) {mark}{psi}"
        )
    if d.multivariate:
        mv = d.multivariate
        lines.append(
            f"  multivariate reconstruction error {_num(mv['error'])} (reference {_num(mv['reference'])}, "
            f"band {_num(mv['lower'])}-{_num(mv['upper'])}) {'DRIFT' if mv['drift'] else 'ok'}"
        )
    return lines


def _performance_lines(a: Analysis) -> list[str]:
    """Realized performance from labels and the estimate (with its assumption)."""
    metric = a.target.config.performance_metric
    held_out = a.target.reference.get(metric)
    measured = [w.performance for w in a.windows if w.performance]
    if measured:
        value = measured[-1]["metrics"].get(metric)
        lines = [
            f"performance from {a.labelled:,} labelled rows: {metric} {_num(value)} in the latest "
            f"labelled window (held-out {_num(held_out)})"
        ]
    else:
        lines = ["performance from labels: no labelled rows in this period"]
    estimated = [w.estimated for w in a.windows if w.estimated and w.drift.judged]
    if estimated:
        est = estimated[-1]
        lines.append(
            f"estimated {metric} (CBPE) {_num(est['metrics'].get(metric))} in the latest judged window "
            f"(held-out {_num(held_out)}); {est['assumption']}"
        )
    return lines


def _concept_lines(a: Analysis) -> list[str]:
    if a.detections:
        return [
            "concept drift on the error stream: "
            + "; ".join(f"{e['detector']} {e['level']} at {_when(e['at'])}" for e in a.detections[:10])
            + (" ..." if len(a.detections) > 10 else "")
        ]
    return ["concept drift on the error stream: no detection"] if a.labelled else []


# --------------------------------------------------------------------------- plots


def _svg(fig: Figure) -> Markup:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return Markup(text[text.index("<svg") :])


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    import matplotlib

    with matplotlib.rc_context(_SVG_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        return fig, fig.subplots()


def _drift_heatmap(a: Analysis) -> Markup | None:
    windows = [w for w in a.windows if w.drift.judged][-MAX_HEATMAP_WINDOWS:]
    if not windows:
        return None
    names = [c.column for c in windows[0].drift.features]
    grid = np.full((len(names), len(windows)), np.nan)
    for k, w in enumerate(windows):
        for j, c in enumerate(w.drift.features):
            ratio = score_ratio(c.test, c.statistic, c.threshold)
            grid[j, k] = np.nan if ratio is None else min(ratio, 3.0)
    fig, ax = _figure(max(5.0, min(12.0, 2 + 0.25 * len(windows))), 1.2 + 0.32 * len(names))
    image = ax.imshow(grid, aspect="auto", cmap="RdYlGn_r", vmin=0.0, vmax=2.0, interpolation="nearest")
    ys, xs = np.nonzero(grid >= 1.0)
    ax.scatter(xs, ys, marker="x", color="black", s=14, linewidths=1)
    ax.set_yticks(range(len(names)), names)
    step = max(1, len(windows) // 12)
    ax.set_xticks(
        range(0, len(windows), step),
        [_when(w.window.start) for w in windows][::step],
        rotation=30,
        ha="right",
    )
    fig.colorbar(image, ax=ax, label="statistic / threshold (x: drift)")
    return _svg(fig)


def _share_plot(a: Analysis) -> Markup | None:
    windows = [w for w in a.windows if w.drift.judged]
    if not windows:
        return None
    fig, ax = _figure(6.0, 2.6)
    x = [datetime.fromtimestamp(w.window.start, UTC) for w in windows]
    ax.plot(x, [w.drift.share for w in windows], marker="o", ms=3, label="share of drifted features")
    ax.axhline(a.target.config.drift_share, color="crimson", ls="--", lw=1, label="data set drift at")
    mv = [(xi, w.drift.multivariate) for xi, w in zip(x, windows, strict=True) if w.drift.multivariate]
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("share")
    if mv:
        ax2 = ax.twinx()
        ax2.plot(
            [p[0] for p in mv], [p[1]["error"] for p in mv], color="gray", lw=1, label="reconstruction error"
        )
        ax2.fill_between(
            [p[0] for p in mv],
            [p[1]["lower"] for p in mv],
            [p[1]["upper"] for p in mv],
            color="gray",
            alpha=0.15,
        )
        ax2.set_ylabel("PCA reconstruction error")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return _svg(fig)


def _score_plot(a: Analysis) -> Markup | None:
    """The first output column (the positive probability, or the first class's) now vs reference."""
    latest = next((w for w in reversed(a.windows) if w.drift.judged), None)
    profile = a.target.profile
    if latest is None or not profile.outputs:
        return None
    ref = profile.outputs[0]
    if ref.kind != "numeric":
        return None
    frame_scores = latest.drift.outputs[0]
    edges = np.linspace(0.0, 1.0, 21)
    ref_hist = np.histogram(ref.values, edges, weights=ref.counts)[0]
    fig, ax = _figure(5.0, 3.0)
    centers = (edges[:-1] + edges[1:]) / 2
    ax.bar(centers, ref_hist / max(ref_hist.sum(), 1), width=0.05, alpha=0.5, label="reference (held-out)")
    now = a.latest_scores
    if now is not None:
        cur_hist = np.histogram(now, edges)[0]
        ax.step(edges, np.r_[cur_hist / max(cur_hist.sum(), 1), 0], where="post", color="crimson",
                label=f"window of {_when(latest.window.start)}")  # fmt: skip
    ax.set_xlabel(ref.name)
    ax.set_ylabel("share of rows")
    ax.set_title(f"{frame_scores.test} {_num(frame_scores.statistic)}", fontsize=9)
    ax.legend(fontsize=8)
    return _svg(fig)


def _performance_plot(a: Analysis) -> Markup | None:
    metric = a.target.config.performance_metric
    held_out = a.target.reference.get(metric)
    real = [(w.window.start, w.performance["metrics"].get(metric)) for w in a.windows if w.performance]
    est = [
        (w.window.start, w.estimated["metrics"].get(metric))
        for w in a.windows
        if w.estimated and w.drift.judged
    ]
    real = [(t, v) for t, v in real if v is not None]
    est = [(t, v) for t, v in est if v is not None]
    if not real and not est:
        return None
    fig, ax = _figure(6.0, 2.8)
    if real:
        ax.plot([datetime.fromtimestamp(t, UTC) for t, _ in real], [v for _, v in real], marker="o", ms=3,
                label=f"{metric} from labels")  # fmt: skip
    if est:
        ax.plot([datetime.fromtimestamp(t, UTC) for t, _ in est], [v for _, v in est], ls="--", marker=".",
                label=f"{metric} estimated (CBPE)")  # fmt: skip
    if held_out is not None:
        ax.axhline(held_out, color="black", lw=1, label="held-out (training)")
        ax.axhline(
            held_out - a.target.config.performance_drop, color="crimson", ls=":", lw=1, label="alert below"
        )
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _svg(fig)


# --------------------------------------------------------------------------- HTML


def _window_rows(a: Analysis) -> list[list[str]]:
    metric = a.target.config.performance_metric
    rows = []
    for w in [w for w in a.windows if w.window.n][-MAX_TABLE_WINDOWS:]:
        d = w.drift
        rows.append(
            [
                _when(w.window.start) + ("" if w.window.closed else " (open)"),
                _num(w.window.n),
                ", ".join(d.drifted_features) if d.judged else "(too few rows)",
                _num(d.share) if d.judged else "—",
                _num(d.dataset_drift) if d.judged else "—",
                _num(d.output_drift) if d.judged else "—",
                _num(d.multivariate["error"]) if d.multivariate else "—",
                _num(w.performance["metrics"].get(metric)) + f" (n={w.performance['n']})"
                if w.performance
                else "—",
                _num(w.estimated["metrics"].get(metric)) if w.estimated and d.judged else "—",
            ]
        )
    return rows


def _latest_columns(w: WindowResult | None) -> list[list[str]]:
    if w is None:
        return []
    return [
        [
            c.column,
            c.test,
            _num(c.statistic),
            f"{c.threshold:g}",
            "DRIFT" if c.drift else ("ok" if c.drift is not None else "—"),
            _num(c.mean),
            _num(c.reference_mean),
            _num(c.missing_share),
            _num(c.psi),
        ]
        for c in w.drift.features + w.drift.outputs
    ]


def render_html(a: Analysis, *, back: str | None = None) -> str:
    """The standalone HTML report of an analysis (``back``: a link to show above it)."""
    t = a.target
    judged = [w for w in a.windows if w.drift.judged]
    latest = judged[-1] if judged else None
    metric = t.config.performance_metric
    context = {
        "model": t.model,
        "version": t.version,
        "period": f"{_when(a.since if a.since else a.first)} to {_when(a.until)}",
        "window": str(a.window),
        "rows": _num(a.rows),
        "labelled": _num(a.labelled),
        "reference_rows": _num(t.profile.reference_rows),
        "held_out_rows": _num(t.profile.held_out_rows),
        "settings": t.config,
        "metric": metric,
        "held_out": _num(t.reference.get(metric)),
        "summary": summary_text(a),
        "heatmap": _drift_heatmap(a),
        "share_plot": _share_plot(a),
        "score_plot": _score_plot(a) if latest is not None else None,
        "performance_plot": _performance_plot(a),
        "latest": latest,
        "latest_when": _when(latest.window.start) if latest else None,
        "latest_columns": _latest_columns(latest),
        "windows": _window_rows(a),
        "detections": [{**e, "when": _when(e["at"])} for e in a.detections],
        "transitions": a.transitions,
        "assumption": a.windows[0].estimated["assumption"] if a.windows and a.windows[0].estimated else None,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "back": back,
        "empty_windows": sum(1 for w in a.windows if not w.window.n),
    }
    return environment().get_template("report.html").render(**context)
