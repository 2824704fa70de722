"""Watching a model: its log cut into windows, each window judged, monitors moved, events kept.

``analyse`` answers "how has this model done over this period?" for reports: it reads the log of
the version a reference names, cuts it into windows (the spec's ``[monitoring] window``, or the
caller's), and for each window computes drift per feature and output (``drift``), the realized
performance of its labelled rows and the estimated performance of all of them (``performance``),
then runs the concept drift detectors over the labelled error stream (``detectors``) and replays
the monitors' state machine from ``ok`` (``alerts.step``), so a report shows where alerts would
have started and ended.

``check`` is the live counterpart the server runs every ``monitor_interval_s`` (and ``assay
monitor check`` on demand): it judges the windows of the production version that have closed
since the model's cursor, moves the stored monitor states, and records every change of state as
an event, in one transaction that also advances the cursor, so each window is judged once even
with several workers checking at the same time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.errors import ArtifactError, NotFound
from assay.modelling.spec import MonitoringSpec
from assay.monitoring import alerts, detectors, performance
from assay.monitoring.drift import WindowDrift, window_drift
from assay.monitoring.labels import read_labels
from assay.monitoring.log import LogFrame, frame_of, log_span
from assay.monitoring.profile import PROFILE_JSON, Profile, output_matrix
from assay.monitoring.windows import Window, WindowSpec, count_windows, time_windows
from assay.registry.versions import DEFAULT_ALIAS, LoadedModel, Registry
from assay.store import db

# Concept drift detectors carry their own confidence: one detection is enough to alert.
CONCEPT_ALERT_AFTER = 1
# Labelled windows before the new ones that the live check replays the error stream over.
CONCEPT_HISTORY_WINDOWS = 10


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


def judge(
    t: Target,
    frame: LogFrame,
    windows: list[Window],
    labels: Mapping[str, str],
    *,
    with_psi: bool = False,
    detections: list[dict[str, Any]] | None = None,
) -> list[WindowResult]:
    """Drift, performance and monitor verdicts of each window of ``frame``."""
    cfg = t.config
    outputs = t.outputs(frame.proba)
    metric, drop = cfg.performance_metric, cfg.performance_drop
    held_out = t.reference.get(metric)
    sensitive = list(t.loaded.record.spec.get("features", {}).get("sensitive", []))
    results = []
    for w in windows:
        sl = slice(w.lo, w.hi)
        drift = window_drift(
            t.profile,
            frame.X[sl],
            outputs[sl],
            features=cfg.features,
            drift_share=cfg.drift_share,
            min_rows=cfg.min_rows,
            with_psi=with_psi,
        )
        realized = None
        if labels and frame.ids is not None:
            rows, y = performance.labelled_rows(frame.ids[sl], labels)
            if len(rows):
                rows = rows + w.lo
                realized = performance.realized(
                    t.loaded, frame.X[rows], frame.proba[rows], y, sensitive=sensitive
                )
        estimated = performance.estimated(t.profile, frame.proba[sl]) if w.n else None
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
    enough = t.config.min_rows
    realized = r.performance
    value = realized["metrics"].get(metric) if realized else None
    judged = value is not None and held_out is not None and realized is not None and realized["n"] >= enough
    out["performance"] = (value < held_out - drop if judged else None, value)  # type: ignore[operator]
    est = r.estimated
    e_value = est["metrics"].get(metric) if est else None
    e_judged = e_value is not None and held_out is not None and d.judged
    out["estimated_performance"] = (e_value < held_out - drop if e_judged else None, e_value)  # type: ignore[operator]
    if labelled:
        rises = [
            e
            for e in r.concept
            if e["detector"] == "adwin" and e["error_rate_after"] > e["error_rate_before"]
        ]
        has_labels = realized is not None
        out["concept_drift"] = (bool(rises) if has_labels or rises else None, float(len(rises)))
    return out


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


def _error_events(t: Target, frame: LogFrame, labels: Mapping[str, str]) -> list[dict[str, Any]]:
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
    registry: Registry,
    ref: str,
    *,
    since: float | None = None,
    until: float | None = None,
    window: str | int | None = None,
    with_psi: bool = False,
    extra_labels: Mapping[str, str] | None = None,
) -> Analysis:
    """Every window of ``ref``'s log in [since, until) (see the module docstring)."""
    t = target(registry, ref)
    spec = WindowSpec.parse(window if window is not None else t.config.window)
    until = time.time() if until is None else until
    labels = {**(extra_labels or {}), **read_labels(engine, t.model)}
    frame = frame_of(t.loaded, engine, since=since, until=until, with_ids=bool(labels))
    windows = _windows(spec, frame, since=since, until=until)
    detections = _error_events(t, frame, labels)
    results = judge(t, frame, windows, labels, with_psi=with_psi, detections=detections)
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


# --- the live check ----------------------------------------------------------------------------


@dataclass
class CheckResult:
    model: str
    version: int | None
    windows: int  # closed windows judged now
    transitions: list[dict[str, Any]]
    skipped: str | None = None  # why nothing was judged


def check(
    engine: Engine,
    registry: Registry,
    model: str,
    *,
    now: float | None = None,
    deliver: bool = True,
    extra_labels: Callable[[], Mapping[str, str]] | None = None,
) -> CheckResult:
    """Judge the production version's windows closed since the cursor; record state changes.

    ``extra_labels`` reads labels from elsewhere (review campaigns); it is only called when a
    window has closed, as reading them can take a while and most checks find nothing to do.
    """
    now = time.time() if now is None else now
    try:
        t = target(registry, f"{model}@{DEFAULT_ALIAS}")
    except NotFound as exc:
        return CheckResult(model, None, 0, [], skipped=exc.message)
    spec = WindowSpec.parse(t.config.window)
    cursors = db.monitor_cursors
    with engine.connect() as conn:
        cursor = conn.execute(sa.select(cursors).where(cursors.c.model == model)).first()
    position = cursor.position if cursor is not None and cursor.kind == spec.kind else None
    # Whether a window has closed is known from the log's bounds: rows are only read when one has.
    span = log_span(
        engine, model, t.version, after=int(position) if position is not None and spec.rows else None
    )
    if span is None:
        return CheckResult(model, t.version, 0, [], skipped="nothing logged yet")
    if spec.seconds is not None:
        start = position if position is not None else math.floor(span[0] / spec.seconds) * spec.seconds
        closed_until = start + math.floor((now - start) / spec.seconds) * spec.seconds
        if closed_until <= start:
            return CheckResult(model, t.version, 0, [], skipped="no window has closed since the last check")
    elif span[2] < (spec.rows or 1):
        return CheckResult(model, t.version, 0, [], skipped="no window has closed since the last check")
    labels = {**(extra_labels() if extra_labels is not None else {}), **read_labels(engine, model)}
    if spec.seconds is not None:
        frame = frame_of(t.loaded, engine, since=start, until=closed_until, with_ids=bool(labels))
        windows = [
            w for w in time_windows(frame.at, spec.seconds, since=start, until=closed_until) if w.closed
        ]
        new_position = windows[-1].end if windows else position
    else:
        frame = frame_of(
            t.loaded, engine, after=int(position) if position is not None else None, with_ids=bool(labels)
        )
        windows = [w for w in count_windows(frame.at, spec.rows or 1) if w.closed]
        new_position = float(frame.positions[: windows[-1].hi].max()) if windows else position
    if not windows:
        return CheckResult(model, t.version, 0, [], skipped="no window has closed since the last check")
    detections = _concept_history(engine, t, frame, labels, spec, position)
    results = judge(t, frame, windows, labels, detections=detections)
    transitions: list[dict[str, Any]] = []
    with engine.begin() as conn:
        # Compare-and-set on the cursor: whoever moves it first judges these windows.
        if cursor is None:
            try:
                conn.execute(
                    sa.insert(cursors).values(
                        model=model, kind=spec.kind, position=new_position, updated_at=db.now()
                    )
                )
            except sa.exc.IntegrityError:
                return CheckResult(model, t.version, 0, [], skipped="another process judged these windows")
        else:
            moved = conn.execute(
                sa.update(cursors)
                .where(
                    cursors.c.model == model,
                    cursors.c.kind == cursor.kind,
                    cursors.c.position == cursor.position,
                )
                .values(kind=spec.kind, position=new_position, updated_at=db.now())
            ).rowcount
            if not moved:
                return CheckResult(model, t.version, 0, [], skipped="another process judged these windows")
        before = alerts.load_states(conn, model)
        current = dict(before)
        for r in results:
            for monitor, (drifting, value) in r.judgements.items():
                old = current.get(monitor, alerts.MonitorState())
                new = alerts.step(old, drifting, alert_after(t, monitor))
                if drifting is not None:
                    new = replace(new, value=_finite(value), window_end=r.window.end)
                current[monitor] = new
                if new.state != old.state:
                    detail = _detail(t, r, monitor, value)
                    alerts.add_event(
                        conn,
                        model,
                        monitor,
                        kind="state",
                        from_state=old.state,
                        to_state=new.state,
                        window=(r.window.start, r.window.end),
                        detail=detail,
                        deliver=deliver and alerts.delivers(old.state, new.state),
                    )
                    transitions.append({"monitor": monitor, "from": old.state, "to": new.state, **detail})
            for e in r.concept:
                alerts.add_event(
                    conn,
                    model,
                    f"concept_drift:{e['detector']}",
                    kind=e["detector"],
                    from_state=None,
                    to_state=e["level"],
                    window=(r.window.start, r.window.end),
                    detail={k: v for k, v in e.items() if isinstance(v, int | float | str)},
                    deliver=False,
                )
        alerts.save_states(conn, model, current, before)
    return CheckResult(model, t.version, len(windows), transitions)


def _concept_history(
    engine: Engine,
    t: Target,
    frame: LogFrame,
    labels: Mapping[str, str],
    spec: WindowSpec,
    position: float | None,
) -> list[dict[str, Any]]:
    """Detector events over the new windows' labelled rows and a few windows before them."""
    if not labels:
        return []
    if spec.seconds is not None and position is not None:
        history = frame_of(
            t.loaded,
            engine,
            since=position - CONCEPT_HISTORY_WINDOWS * spec.seconds,
            until=position,
            with_ids=True,
        )
        joined = LogFrame(
            frame.model,
            frame.version,
            np.r_[history.positions, frame.positions],
            np.r_[history.at, frame.at],
            np.vstack([history.X, frame.X]),
            np.vstack([history.proba, frame.proba]),
            list(history.ids or []) + list(frame.ids or []),
        )
        return [e for e in _error_events(t, joined, labels) if e["at"] >= position]
    return _error_events(t, frame, labels)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _detail(t: Target, r: WindowResult, monitor: str, value: float | None) -> dict[str, Any]:
    d = r.drift
    detail: dict[str, Any] = {
        "version": t.version,
        "window_start": _iso(r.window.start),
        "window_end": _iso(r.window.end),
        "rows": r.window.n,
        "value": _finite(value),
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
    return detail


def watched_models(registry: Registry) -> list[str]:
    """Models with a production version (the ones the live check watches)."""
    return [info.name for info in registry.models() if DEFAULT_ALIAS in info.aliases]
