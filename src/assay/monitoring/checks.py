"""The live check: the production version's closed windows judged once, monitor states moved.

The server runs ``check`` every ``monitor_interval_s`` (and ``assay monitor check`` on demand): it
judges the windows of the production version that have closed since the model's cursor, moves the
stored monitor states, and records every change of state as an event, in one transaction that also
advances the cursor, so each window is judged once even with several workers checking at once.

Labels come late, hours or weeks after the score. When labels changed since the last check (the
model's ``label_mark`` differs from the cursor's ``labels_seen``: labels from the API or files,
and review campaigns' labels, judgments and endorsements when the caller reads campaigns), the
label-driven monitors (``performance``, ``concept_drift``) are judged again over the last
``RELABEL_WINDOWS`` closed windows as well as the new ones, and their states are replayed from
``ok`` over those windows: a window's performance is what its labels say now, and an alert the
late labels reveal (or clear) is an event at that check, once. Drift is not judged again (it does
not depend on labels). Count windows are counted back from the cursor as they were judged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import NotFound
from assay.monitoring import alerts
from assay.monitoring.frames import frame_of
from assay.monitoring.labels import label_mark, read_labels
from assay.monitoring.monitor import (
    Target,
    WindowResult,
    alert_after,
    error_events,
    judge,
    target,
    window_detail,
)
from assay.monitoring.windows import Window, WindowSpec, count_windows, time_windows
from assay.registry.refs import DEFAULT_ALIAS
from assay.registry.versions import Registry
from assay.store import db, tables
from assay.store.log_store import LogFrame, LogStore

# Closed windows before the new ones whose label-driven verdicts late labels can change, and over
# which the concept drift detectors are run again (a change shows over several windows).
RELABEL_WINDOWS = 10
LABEL_MONITORS = frozenset({"performance", "concept_drift"})
_NOTHING_CLOSED = "no window has closed since the last check"


@dataclass
class CheckResult:
    model: str
    version: int | None
    windows: int  # closed windows judged now (new ones; windows judged again for labels not counted)
    transitions: list[dict[str, Any]]
    skipped: str | None = None  # why nothing was judged
    relabelled: int = 0  # earlier windows judged again because labels arrived


@dataclass(frozen=True)
class _Cursor:
    """Where judging got to: a window end (time) or a log position (count), and the labels seen."""

    row: Any  # the stored row (compare-and-set), None before the first check
    position: float | None  # None: nothing judged yet with this kind of window
    labels_seen: int


@dataclass
class _Work:
    frame: LogFrame
    windows: list[Window]  # closed windows, earlier ones (for labels) first
    new_from: int  # windows[new_from:] are new
    position: float | None  # the cursor after them


def check(
    engine: Engine,
    log: LogStore,
    registry: Registry,
    model: str,
    *,
    now: float | None = None,
    deliver: bool = True,
    extra_labels: Callable[[], Mapping[str, str]] | None = None,
) -> CheckResult:
    """Judge the production version's windows closed since the cursor; record state changes.

    ``extra_labels`` reads labels from elsewhere (review campaigns); it is only called when a
    window has closed or labels arrived, as reading them can take a while and most checks find
    nothing to do.
    """
    now = time.time() if now is None else now
    try:
        t = target(registry, f"{model}@{DEFAULT_ALIAS}")
    except NotFound as exc:
        return CheckResult(model, None, 0, [], skipped=exc.message)
    spec = WindowSpec.parse(t.config.window)
    cursor = _read_cursor(engine, model, spec)
    mark = label_mark(engine, model, campaigns=extra_labels is not None)
    relabel = cursor.position is not None and mark != cursor.labels_seen
    reason = _nothing_due(log, t, spec, cursor.position, now)
    if reason is not None and not relabel:
        return CheckResult(model, t.version, 0, [], skipped=reason)
    labels = {**(extra_labels() if extra_labels is not None else {}), **read_labels(engine, model)}
    work = _read_windows(log, t, spec, cursor.position, now, labels=labels, relabel=relabel)
    fresh = len(work.windows) - work.new_from
    if not fresh and not relabel:
        return CheckResult(model, t.version, 0, [], skipped=_NOTHING_CLOSED)
    detections = error_events(t, work.frame, labels)
    results = judge(
        t,
        work.frame,
        work.windows,
        labels,
        detections=detections,
        drift_from=work.windows[work.new_from].start if fresh else math.inf,
    )
    with engine.begin() as conn:
        if not _advance(conn, model, spec, cursor, work.position, mark):
            return CheckResult(model, t.version, 0, [], skipped="another process judged these windows")
        transitions = _move_states(conn, t, results, work.new_from, relabel=relabel, deliver=deliver)
    return CheckResult(model, t.version, fresh, transitions, relabelled=work.new_from if relabel else 0)


def _read_cursor(engine: Engine, model: str, spec: WindowSpec) -> _Cursor:
    cursors = tables.monitor_cursors
    with engine.connect() as conn:
        row = conn.execute(sa.select(cursors).where(cursors.c.model == model)).first()
    if row is None:
        return _Cursor(None, None, 0)
    position = row.position if row.kind == spec.kind else None
    return _Cursor(row, position, int(row.labels_seen or 0))


def _nothing_due(
    log: LogStore, t: Target, spec: WindowSpec, position: float | None, now: float
) -> str | None:
    """Why no window can have closed since ``position`` (known from the log's bounds), or None."""
    after = int(position) if position is not None and spec.rows else None
    span = log.span(t.model, t.version, after=after)
    if span is None:
        return "nothing logged yet"
    if spec.seconds is not None:
        start = position if position is not None else _aligned(span[0], spec.seconds)
        return None if now - start >= spec.seconds else _NOTHING_CLOSED
    return None if span[2] >= (spec.rows or 1) else _NOTHING_CLOSED


def _aligned(at: float, seconds: float) -> float:
    return math.floor(at / seconds) * seconds


def _read_windows(
    log: LogStore,
    t: Target,
    spec: WindowSpec,
    position: float | None,
    now: float,
    *,
    labels: Mapping[str, str],
    relabel: bool,
) -> _Work:
    """The log rows and closed windows to judge: the new ones, and (time windows with labels) the
    ``RELABEL_WINDOWS`` before them, for late labels and the error stream's history."""
    with_ids = bool(labels)
    if spec.seconds is None:
        return _read_counted(log, t, spec.rows or 1, position, with_ids=with_ids, relabel=relabel)
    seconds = spec.seconds
    if position is None:
        span = log.span(t.model, t.version)
        start = _aligned(span[0], seconds) if span is not None else now
    else:
        start = position
    closed_until = max(start, start + math.floor((now - start) / seconds) * seconds)
    since = start - RELABEL_WINDOWS * seconds if position is not None and (labels or relabel) else start
    frame = frame_of(t.loaded, log, since=since, until=closed_until, with_ids=with_ids)
    if len(frame):  # no windows from before the log began
        since = min(start, max(since, _aligned(float(frame.at[0]), seconds)))
    windows = [w for w in time_windows(frame.at, seconds, since=since, until=closed_until) if w.closed]
    new_from = next((k for k, w in enumerate(windows) if w.start >= start), len(windows))
    return _Work(frame, windows, new_from, windows[-1].end if new_from < len(windows) else position)


def _read_counted(
    log: LogStore, t: Target, rows: int, position: float | None, *, with_ids: bool, relabel: bool
) -> _Work:
    """Count windows: the full ones after the cursor, and (labels arrived) the ``RELABEL_WINDOWS``
    judged before it, counted back from the cursor as they were judged (each check's windows
    start at the cursor and only full ones move it)."""
    after = int(position) if position is not None else None
    start = after
    if relabel and after is not None:
        start = log.start_before(t.model, t.version, after, RELABEL_WINDOWS * rows)
    frame = frame_of(t.loaded, log, after=start, with_ids=with_ids)
    judged = 0
    if after is not None and start != after:
        frame, judged = _judged_first(frame, after)
    earlier = [
        Window(float(frame.at[lo]), float(frame.at[lo + rows - 1]), lo, lo + rows, True)
        for lo in range(judged % rows, judged, rows)
    ][-RELABEL_WINDOWS:]
    fresh = [
        replace(w, lo=w.lo + judged, hi=w.hi + judged)
        for w in count_windows(frame.at[judged:], rows)
        if w.closed
    ]
    new_position = float(frame.positions[judged : fresh[-1].hi].max()) if fresh else position
    return _Work(frame, earlier + fresh, len(earlier), new_position)


def _judged_first(frame: LogFrame, after: int) -> tuple[LogFrame, int]:
    """``frame`` with the rows at or before position ``after`` first (each part in time order),
    and how many those are."""
    judged = frame.positions <= after
    order = np.concatenate([np.flatnonzero(judged), np.flatnonzero(~judged)])
    ids = [frame.ids[i] for i in order.tolist()] if frame.ids is not None else None
    reordered = LogFrame(
        frame.model,
        frame.version,
        frame.positions[order],
        frame.at[order],
        frame.X[order],
        frame.proba[order],
        ids,
    )
    return reordered, int(judged.sum())


def _advance(
    conn: Connection, model: str, spec: WindowSpec, cursor: _Cursor, position: float | None, mark: int
) -> bool:
    """Move the cursor, compare-and-set: whoever moves it first judges these windows."""
    cursors = tables.monitor_cursors
    values = {"kind": spec.kind, "position": position, "labels_seen": mark, "updated_at": db.now()}
    if cursor.row is None:
        try:
            conn.execute(sa.insert(cursors).values(model=model, **values))
        except sa.exc.IntegrityError:
            return False
        return True
    row = cursor.row
    moved = conn.execute(
        sa.update(cursors)
        .where(
            cursors.c.model == model,
            cursors.c.kind == row.kind,
            cursors.c.position == row.position,
            sa.func.coalesce(cursors.c.labels_seen, 0) == int(row.labels_seen or 0),
        )
        .values(**values)
    ).rowcount
    return bool(moved)


def _move_states(
    conn: Connection,
    t: Target,
    results: list[WindowResult],
    new_from: int,
    *,
    relabel: bool,
    deliver: bool,
) -> list[dict[str, Any]]:
    """Step each monitor over the new windows, recording every change of state and the new
    windows' detector events; when labels arrived, first replay the label-driven monitors over
    the earlier windows (``results[:new_from]``) and record where that moves them."""
    before = alerts.load_states(conn, t.model)
    current = dict(before)
    transitions: list[dict[str, Any]] = []
    if relabel:
        for monitor, (state, r) in _replayed(t, results[:new_from]).items():
            old = current.get(monitor, alerts.MonitorState())
            current[monitor] = state
            _record(conn, t, monitor, old, state, r, transitions, deliver=deliver, relabelled=True)
    for r in results[new_from:]:
        for monitor, (drifting, value) in r.judgements.items():
            old = current.get(monitor, alerts.MonitorState())
            new = alerts.step(old, drifting, alert_after(t, monitor))
            if drifting is not None:
                new = replace(new, value=_finite(value), window_end=r.window.end)
            current[monitor] = new
            _record(conn, t, monitor, old, new, r, transitions, deliver=deliver, relabelled=False)
        _concept_events(conn, t, r)
    alerts.save_states(conn, t.model, current, before)
    return transitions


def _replayed(t: Target, results: list[WindowResult]) -> dict[str, tuple[alerts.MonitorState, WindowResult]]:
    """The label-driven monitors' states from ``ok`` over ``results`` with today's labels, and the
    last window that judged each (monitors no window judged are left out: nothing to say)."""
    out: dict[str, tuple[alerts.MonitorState, WindowResult]] = {}
    for r in results:
        for monitor in LABEL_MONITORS:
            drifting, value = r.judgements.get(monitor, (None, None))
            if drifting is None:
                continue
            state = out[monitor][0] if monitor in out else alerts.MonitorState()
            state = alerts.step(state, drifting, alert_after(t, monitor))
            out[monitor] = (replace(state, value=_finite(value), window_end=r.window.end), r)
    return out


def _record(
    conn: Connection,
    t: Target,
    monitor: str,
    old: alerts.MonitorState,
    new: alerts.MonitorState,
    r: WindowResult,
    transitions: list[dict[str, Any]],
    *,
    deliver: bool,
    relabelled: bool,
) -> None:
    """An event for a change of state (none when the state stays)."""
    if new.state == old.state:
        return
    detail = window_detail(t, r, monitor, new.value)
    if relabelled:
        detail["relabelled"] = True  # judged again: labels for this window came after it closed
    alerts.add_event(
        conn,
        t.model,
        monitor,
        kind="state",
        from_state=old.state,
        to_state=new.state,
        window=(r.window.start, r.window.end),
        detail=detail,
        deliver=deliver and alerts.delivers(old.state, new.state),
    )
    transitions.append({"monitor": monitor, "from": old.state, "to": new.state, **detail})


def _concept_events(conn: Connection, t: Target, r: WindowResult) -> None:
    for e in r.concept:
        alerts.add_event(
            conn,
            t.model,
            f"concept_drift:{e['detector']}",
            kind=e["detector"],
            from_state=None,
            to_state=e["level"],
            window=(r.window.start, r.window.end),
            detail={k: v for k, v in e.items() if isinstance(v, int | float | str)},
            deliver=False,
        )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def watched_models(registry: Registry) -> list[str]:
    """Models with a production version (the ones the live check watches)."""
    return [info.name for info in registry.models() if DEFAULT_ALIAS in info.aliases]
