"""Watching a model: its log cut into windows, each window judged, monitors moved, events kept.

``analyse`` answers "how has this model done over this period?" for reports: it reads the log of
the version a reference names, cuts it into windows (the spec's ``[monitoring] window``, or the
caller's), and for each window computes drift per feature and output (``drift``), the realized
performance of its labelled rows and the estimated performance of all of them (``performance``),
then runs the concept drift detectors over the labelled error stream (``detectors``) and replays
the monitors' state machine from ``ok`` (``alerts.step``), so a report shows where alerts would
have started and ended.

The live check (``checks.check``) judges closed windows with the same ``judge`` and moves the
stored monitor states.

The windows' drift tests are independent of each other, so ``judge`` hands them to the engine
(``ASSAY_ENGINE``: this process by default, Ray tasks when set), one call per window, the log's
arrays shipped once; either engine gives the same report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from assay.engines.engine import Engine as WorkEngine
from assay.engines.engine import LocalEngine
from assay.errors import ArtifactError, NotFound
from assay.modelling.profile import PROFILE_JSON, Profile, output_matrix
from assay.modelling.spec import MonitoringSpec
from assay.monitoring import alerts, detectors, performance
from assay.monitoring.drift import WindowDrift, window_drift
from assay.monitoring.frames import frame_of
from assay.monitoring.labels import read_labels
from assay.monitoring.windows import Window, WindowSpec, count_windows, time_windows
from assay.registry.loaded import LoadedModel
from assay.registry.versions import Registry
from assay.store.log_store import LogFrame, LogStore

# Concept drift detectors carry their own confidence: one detection is enough to alert.
CONCEPT_ALERT_AFTER = 1


@dataclass(frozen=True)
class Target:
    """A version being watched: the loaded model, its reference profile and monitoring settings."""

    loaded: LoadedModel
    profile: Profile
    config: MonitoringSpec

    @property
    def model(self) -> str:
        return self.loaded.record.model

    @property
    def version(self) -> int:
        return self.loaded.record.version

    @property
    def reference(self) -> dict[str, Any]:
        """The held-out statistics the version was trained with (what performance is compared to)."""
        return {k: v for k, v in self.loaded.record.summary.items() if k != "fairness"}

    def outputs(self, proba: np.ndarray) -> np.ndarray:
        return output_matrix(
            proba, self.profile.classes, self.profile.positive_index, self.profile.decision_threshold
        )


def target(registry: Registry, ref: str) -> Target:
    """The version ``ref`` names (a bare name: its production alias), ready to be monitored."""
    record = registry.resolve(ref)
    if PROFILE_JSON not in record.manifest:
        raise NotFound(
            f"{record.ref} has no reference profile (it was trained before assay kept one); "
            "train a new version to monitor it",
            field="model",
            code="no_profile",
        )
    loaded = registry.load(record)
    try:
        profile = Profile.from_dict(registry.read_json(record, PROFILE_JSON))
    except ArtifactError as exc:
        raise ArtifactError(f"{record.ref}: {exc.message}", field=exc.field) from exc
    return Target(loaded, profile, MonitoringSpec.from_dict(record.spec.get("monitoring")))


@dataclass
class WindowResult:
    window: Window
    drift: WindowDrift
    performance: dict[str, Any] | None  # realized, from labelled rows
    estimated: dict[str, Any] | None  # CBPE
    concept: list[dict[str, Any]] = field(default_factory=list)  # detector events in the window
    judgements: dict[str, tuple[bool | None, float | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": _iso(self.window.start),
            "end": _iso(self.window.end),
            "closed": self.window.closed,
            "n": self.window.n,
            "drift": self.drift.to_dict(),
            "performance": self.performance,
            "estimated_performance": self.estimated,
            "concept_drift": self.concept,
            "monitors": {k: {"drifting": d, "value": v} for k, (d, v) in self.judgements.items()},
        }


@dataclass
class Analysis:
    target: Target
    window: WindowSpec
    since: float | None
    until: float
    rows: int
    labelled: int
    windows: list[WindowResult]
    detections: list[dict[str, Any]]
    transitions: list[dict[str, Any]]
    with_psi: bool = False
    latest_scores: np.ndarray | None = None  # the first output column of the latest judged window
    first: float | None = None  # the first logged row's time

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        return {
            "model": t.model,
            "version": t.version,
            "window": str(self.window),
            "since": _iso(self.since),
            "until": _iso(self.until),
            "rows": self.rows,
            "labelled_rows": self.labelled,
            "reference": {
                "features": "training data",
                "rows": t.profile.reference_rows,
                "held_out_rows": t.profile.held_out_rows,
                "performance": t.reference,
            },
            "settings": {
                "min_rows": t.config.min_rows,
                "drift_share": t.config.drift_share,
                "alert_after": t.config.alert_after,
                "performance_metric": t.config.performance_metric,
                "performance_drop": t.config.performance_drop,
            },
            "windows": [w.to_dict() for w in self.windows],
            "detections": self.detections,
            "transitions": self.transitions,
            "estimation_assumption": performance.ASSUMPTION if t.profile.positive_index is not None else None,
        }


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


# --- judging windows -------------------------------------------------------------------------


def rows_drift(
    lo: int,
    hi: int,
    *,
    profile: Profile,
    X: np.ndarray,
    outputs: np.ndarray,
    config: MonitoringSpec,
    with_psi: bool,
) -> WindowDrift:
    """The drift of rows ``lo:hi``: one engine call (module level, so that Ray can ship it)."""
    return window_drift(
        profile,
        X[lo:hi],
        outputs[lo:hi],
        features=config.features,
        drift_share=config.drift_share,
        min_rows=config.min_rows,
        with_psi=with_psi,
    )


def windows_drift(
    t: Target,
    X: np.ndarray,
    outputs: np.ndarray,
    spans: list[tuple[int, int]],
    *,
    with_psi: bool = False,
    work: WorkEngine | None = None,
) -> list[WindowDrift]:
    """The drift of each span of rows, computed by ``work`` (this process when None)."""
    shared = {"profile": t.profile, "X": X, "outputs": outputs, "config": t.config, "with_psi": with_psi}
    drifts = (work or LocalEngine()).map(rows_drift, spans, shared=shared)
    assert all(d is not None for d in drifts)  # no deadline: every call finishes
    return drifts  # type: ignore[return-value]


def judge(
    t: Target,
    frame: LogFrame,
    windows: list[Window],
    labels: Mapping[str, str],
    *,
    with_psi: bool = False,
    detections: list[dict[str, Any]] | None = None,
    drift_from: float | None = None,
    work: WorkEngine | None = None,
) -> list[WindowResult]:
    """Drift, performance and monitor verdicts of each window of ``frame``.

    ``drift_from``: windows that start before it are judged on labels only (performance and
    concept drift), as when late labels make the live check judge earlier windows again.
    ``work``: the engine the windows' drift tests run on (this process when None).
    """
    cfg = t.config
    outputs = t.outputs(frame.proba)
    metric, drop = cfg.performance_metric, cfg.performance_drop
    held_out = t.reference.get(metric)
    sensitive = list(t.loaded.record.spec.get("features", {}).get("sensitive", []))
    # Rows judged for drift: none in a window before ``drift_from``.
    spans = [(w.lo, w.hi if drift_from is None or w.start >= drift_from else w.lo) for w in windows]
    drifts = windows_drift(t, frame.X, outputs, spans, with_psi=with_psi, work=work)
    results = []
    for w, (lo, hi), drift in zip(windows, spans, drifts, strict=True):
        sl, seen = slice(w.lo, w.hi), slice(lo, hi)
        realized = None
        if labels and frame.ids is not None:
            rows, y = performance.labelled_rows(frame.ids[sl], labels)
            if len(rows):
                rows = rows + w.lo
                realized = performance.realized(
                    t.loaded, frame.X[rows], frame.proba[rows], y, sensitive=sensitive
                )
        estimated = performance.estimated(t.profile, frame.proba[seen]) if seen.stop > seen.start else None
        concept = [
            e
            for e in (detections or [])
            if w.start <= e["at"] < w.end or (not w.closed and e["at"] >= w.start)
        ]
        result = WindowResult(w, drift, realized, estimated, concept)
        result.judgements = _judgements(t, result, held_out, metric, drop, labelled=bool(labels))
        results.append(result)
    return results


def _judgements(
    t: Target, r: WindowResult, held_out: float | None, metric: str, drop: float, *, labelled: bool
) -> dict[str, tuple[bool | None, float | None]]:
    """Each monitor's verdict on one window: (drifting or None when not judged, its statistic)."""
    d = r.drift
    out: dict[str, tuple[bool | None, float | None]] = {}
    out["data_drift"] = (d.dataset_drift if d.judged else None, d.share)
    for c in d.features:
        out[f"feature:{c.column}"] = (c.drift, c.statistic)
    probability = d.outputs[0] if d.outputs else None
    out["prediction_drift"] = (
        d.output_drift if d.judged else None,
        probability.statistic if probability else None,
    )
    mv = d.multivariate
    out["multivariate"] = (mv["drift"] if mv else None, mv["error"] if mv else None)
    out["performance"] = _below(r.performance, metric, held_out, drop, t.config.min_rows)
    out["estimated_performance"] = _below(r.estimated, metric, held_out, drop, 0 if d.judged else None)
    if labelled:
        rises = rising_detections(r.concept)
        out["concept_drift"] = (
            bool(rises) if r.performance is not None or rises else None,
            float(len(rises)),
        )
    return out


def _below(
    result: dict[str, Any] | None, metric: str, held_out: float | None, drop: float, min_rows: int | None
) -> tuple[bool | None, float | None]:
    """(whether ``metric`` fell more than ``drop`` below the held-out value, the value); not judged
    (None) without a value, a reference, or ``min_rows`` rows (``min_rows`` None: never judged)."""
    value = result["metrics"].get(metric) if result else None
    if value is None or held_out is None or result is None or min_rows is None:
        return None, value
    if result.get("n", min_rows) < min_rows:
        return None, value
    return value < held_out - drop, value


def rising_detections(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Detections of a rising error rate: ADWIN cuts after which errors are more frequent, and
    DDM drifts (DDM only detects rises)."""
    return [
        e
        for e in events
        if e["level"] == "drift"
        and (e["detector"] == "ddm" or e["error_rate_after"] > e["error_rate_before"])
    ]


def alert_after(t: Target, monitor: str) -> int:
    return CONCEPT_ALERT_AFTER if monitor == "concept_drift" else t.config.alert_after


def replay(t: Target, results: list[WindowResult]) -> list[dict[str, Any]]:
    """The state changes monitors starting at ``ok`` would go through over ``results`` (closed only)."""
    states: dict[str, alerts.MonitorState] = {}
    changes = []
    for r in results:
        if not r.window.closed:
            continue
        for monitor, (drifting, value) in r.judgements.items():
            before = states.get(monitor, alerts.MonitorState())
            after = alerts.step(before, drifting, alert_after(t, monitor))
            states[monitor] = after
            if after.state != before.state:
                changes.append(
                    {
                        "monitor": monitor,
                        "from": before.state,
                        "to": after.state,
                        "window_start": _iso(r.window.start),
                        "window_end": _iso(r.window.end),
                        "value": value,
                    }
                )
    return changes


def error_events(t: Target, frame: LogFrame, labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """Detector events over the labelled rows of ``frame``, in time order."""
    if not labels or frame.ids is None:
        return []
    rows, y = performance.labelled_rows(frame.ids, labels)
    if not len(rows):
        return []
    classes = t.loaded.classes
    proba = frame.proba[rows]
    if t.profile.positive_index is not None:
        pi = t.profile.positive_index
        predicted = np.where(proba[:, pi] >= t.loaded.decision_threshold(), classes[pi], classes[1 - pi])
    else:
        predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    errors = (predicted != np.asarray(y, dtype=object)).astype(float)
    events = detectors.error_stream_events(frame.at[rows], errors)
    for e in events:
        e["time"] = _iso(e["at"])
    return events


def _windows(spec: WindowSpec, frame: LogFrame, *, since: float | None, until: float) -> list[Window]:
    if spec.seconds is not None:
        return time_windows(frame.at, spec.seconds, since=since, until=until)
    assert spec.rows is not None
    return count_windows(frame.at, spec.rows)


def analyse(
    engine: Engine,
    log: LogStore,
    registry: Registry,
    ref: str,
    *,
    since: float | None = None,
    until: float | None = None,
    window: str | int | None = None,
    with_psi: bool = False,
    extra_labels: Mapping[str, str] | None = None,
    work: WorkEngine | None = None,
) -> Analysis:
    """Every window of ``ref``'s log in [since, until) (see the module docstring); the windows'
    drift tests run on ``work`` (this process when None)."""
    t = target(registry, ref)
    spec = WindowSpec.parse(window if window is not None else t.config.window)
    until = time.time() if until is None else until
    labels = {**(extra_labels or {}), **read_labels(engine, t.model)}
    frame = frame_of(t.loaded, log, since=since, until=until, with_ids=bool(labels))
    windows = _windows(spec, frame, since=since, until=until)
    detections = error_events(t, frame, labels)
    results = judge(t, frame, windows, labels, with_psi=with_psi, detections=detections, work=work)
    labelled = sum(r.performance["n"] for r in results if r.performance)
    judged = [r for r in results if r.drift.judged]
    latest_scores = None
    if judged:
        w = judged[-1].window
        latest_scores = t.outputs(frame.proba[w.lo : w.hi])[:, 0]
    return Analysis(
        target=t,
        window=spec,
        since=since,
        until=until,
        rows=len(frame),
        labelled=labelled,
        windows=results,
        detections=detections,
        transitions=replay(t, results),
        with_psi=with_psi,
        latest_scores=latest_scores,
        first=float(frame.at[0]) if len(frame) else None,
    )


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def window_detail(t: Target, r: WindowResult, monitor: str, value: float | None) -> dict[str, Any]:
    d = r.drift
    detail: dict[str, Any] = {
        "version": t.version,
        "window_start": _iso(r.window.start),
        "window_end": _iso(r.window.end),
        "rows": r.window.n,
        "value": finite(value),
    }
    if monitor == "data_drift":
        detail["drifted_features"] = d.drifted_features
        detail["share"] = d.share
    elif monitor.startswith("feature:"):
        column = next(c for c in d.features if c.column == monitor.split(":", 1)[1])
        detail.update(test=column.test, threshold=column.threshold)
    elif monitor in ("performance", "estimated_performance"):
        detail.update(
            metric=t.config.performance_metric, held_out=t.reference.get(t.config.performance_metric)
        )
        if monitor == "estimated_performance":
            detail["assumption"] = performance.ASSUMPTION
    elif monitor == "concept_drift":
        detail["detections"] = [
            {"detector": e["detector"], "time": e["time"], "index": e["index"]}
            for e in rising_detections(r.concept)
        ]
    return detail
