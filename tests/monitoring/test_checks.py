"""The live check: each closed window judged once, alerts firing once and clearing once, two checkers
never judging a window twice, and late labels judging the windows they fall in again."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from assay.monitoring import alerts, checks, labels, monitor
from assay.monitoring.labels import add_labels
from assay.review.judgments import record_judgment
from assay.store import tables
from assay.workspace import Workspace
from tests.monitoring.conftest import DAY, PER_DAY, T0, classes_of, log_frame, traffic
from tests.reviewing import campaign


def test_an_undrifted_copy_raises_no_alarm(ws: Workspace) -> None:
    frame = traffic(10, seed=11)
    log_frame(ws, frame, frame["at"].to_numpy())
    result = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + 10 * DAY)
    assert result.windows == 10
    assert not [t for t in result.transitions if t["to"] == "alert"]
    assert all(s["state"] != "alert" for s in alerts.states(ws.engine, "damaging"))
    a = monitor.analyse(
        ws.engine, ws.log, ws.registry, "damaging", since=T0, until=T0 + 10 * DAY, window="1d"
    )
    assert not any(w.drift.drifted_features for w in a.windows)


def test_an_alert_fires_once_and_clears_once(ws: Workspace) -> None:
    frame = traffic(12, drift_from=3)
    frame = frame[frame.index < 9 * PER_DAY]  # days 3-8 drift
    clean = traffic(4, seed=12)
    clean["rev_id"] += 100_000
    clean["at"] += 9 * DAY  # days 9-12 clean again
    log_frame(ws, frame, frame["at"].to_numpy())
    log_frame(ws, clean, clean["at"].to_numpy())

    def alert_events() -> list[dict]:
        return [
            e
            for e in alerts.events(ws.engine, "damaging", limit=1000)
            if e["monitor"] == "feature:words_added"
        ]

    # Checked every hour for 13 days: each window is judged once, when it closes.
    for hour in range(1, 13 * 24 + 1):
        checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + hour * 3600.0)
    changes = [(e["from"], e["to"], e["window"]["start"][:10]) for e in reversed(alert_events())]
    assert changes == [
        ("ok", "warning", "2026-01-04"),
        ("warning", "alert", "2026-01-06"),
        ("alert", "ok", "2026-01-12"),  # after 3 clean windows
    ]
    deliveries = [e["delivery"] for e in reversed(alert_events())]
    assert deliveries == ["none", "pending", "pending"]  # webhooks hear of the alert and its end only
    with ws.engine.connect() as conn:
        assert conn.execute(sa.select(tables.monitor_cursors.c.position)).scalar() == T0 + 13 * DAY


def test_two_checkers_judge_a_window_once(ws: Workspace) -> None:
    frame = traffic(5, drift_from=0)
    log_frame(ws, frame, frame["at"].to_numpy())
    first = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + 5 * DAY)
    second = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + 5 * DAY)
    assert first.windows == 5 and second.windows == 0 and second.skipped


def test_late_labels_judge_the_windows_they_fall_in_again_and_alert_once(ws: Workspace) -> None:
    frame = traffic(8, seed=16)
    log_frame(ws, frame, frame["at"].to_numpy())
    now = T0 + 8 * DAY
    first = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=now)
    assert first.windows == 8 and first.transitions == []
    assert {s["monitor"]: s["state"] for s in alerts.states(ws.engine)}["performance"] == "ok"
    events_before = len(alerts.events(ws.engine, "damaging", limit=1000))

    # A week later the labels come: from day 4 on, the world changed under the model.
    later = frame["at"] >= T0 + 4 * DAY
    flip = later & (np.random.default_rng(5).random(len(frame)) < 0.4)
    truth = np.where(flip, ~frame["reverted"], frame["reverted"])
    items = [{"id": str(i), "label": str(v)} for i, v in zip(frame["rev_id"], truth, strict=True)]
    assert all(
        o.accepted
        for o in add_labels(ws.engine, ws.log, "damaging", items, source="t", classes_of=classes_of(ws))
    )

    second = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=now)  # no new window has closed
    assert second.windows == 0 and second.relabelled == 8 and second.skipped is None
    performance = [t for t in second.transitions if t["monitor"] == "performance"]
    assert [t["to"] for t in performance] == ["alert"] and performance[0]["relabelled"] is True
    assert performance[0]["window_start"].startswith("2026-01-08")  # the last window it was judged in
    assert {t["monitor"] for t in second.transitions} <= checks.LABEL_MONITORS  # drift is not judged again
    state = {s["monitor"]: s for s in alerts.states(ws.engine, "damaging")}
    assert state["performance"]["state"] == "alert"
    events = alerts.events(ws.engine, "damaging", limit=1000)
    assert [e["delivery"] for e in events if e["monitor"] == "performance"] == ["pending"]

    # The alert fires once: checking again with no new labels and no new window changes nothing.
    third = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=now)
    assert third.transitions == [] and third.skipped
    assert len(alerts.events(ws.engine, "damaging", limit=1000)) == len(events)
    assert len(events) > events_before


def _count_windows(ws: Workspace, rows: int) -> None:
    """Monitor `damaging` in windows of ``rows`` rows (its spec's [monitoring] window)."""
    versions = tables.versions
    with ws.engine.begin() as conn:
        spec = conn.execute(sa.select(versions.c.spec).where(versions.c.model == "damaging")).scalar_one()
        spec = {**spec, "monitoring": {**(spec.get("monitoring") or {}), "window": rows}}
        conn.execute(sa.update(versions).where(versions.c.model == "damaging").values(spec=spec))


def _late_labels(ws: Workspace, frame: pd.DataFrame, changed_from: float) -> list[dict]:
    """Labels that reveal the world changed under the model from ``changed_from`` on."""
    later = frame["at"] >= changed_from
    flip = later & (np.random.default_rng(5).random(len(frame)) < 0.4)
    truth = np.where(flip, ~frame["reverted"], frame["reverted"])
    return [{"id": str(i), "label": str(v)} for i, v in zip(frame["rev_id"], truth, strict=True)]


def test_late_labels_judge_count_windows_again_and_alert_once(ws: Workspace) -> None:
    _count_windows(ws, PER_DAY)
    frame = traffic(8, seed=16)
    log_frame(ws, frame.iloc[: 4 * PER_DAY], frame["at"].to_numpy()[: 4 * PER_DAY])
    first = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + 9 * DAY)
    log_frame(ws, frame.iloc[4 * PER_DAY :], frame["at"].to_numpy()[4 * PER_DAY :])
    second = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + 9 * DAY)
    assert (first.windows, second.windows) == (4, 4) and first.transitions == second.transitions == []

    items = _late_labels(ws, frame, T0 + 4 * DAY)
    assert all(
        o.accepted
        for o in add_labels(ws.engine, ws.log, "damaging", items, source="t", classes_of=classes_of(ws))
    )
    third = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + 9 * DAY)
    assert third.windows == 0 and third.relabelled == 8 and third.skipped is None
    performance = [t for t in third.transitions if t["monitor"] == "performance"]
    assert [t["to"] for t in performance] == ["alert"] and performance[0]["relabelled"] is True
    assert performance[0]["rows"] == PER_DAY
    assert {t["monitor"] for t in third.transitions} <= checks.LABEL_MONITORS
    # Once: no new labels and no new rows change nothing; the cursor stayed at the last full window.
    fourth = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + 9 * DAY)
    assert fourth.transitions == [] and fourth.skipped
    log_frame(ws, traffic(1, seed=3).assign(rev_id=lambda f: f["rev_id"] + 10**7), T0 + 8.5 * DAY)
    assert checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + 9 * DAY).windows == 1


def test_review_campaign_labels_trigger_the_re_judging_as_api_labels_do(
    ws: Workspace, tmp_path: Path
) -> None:
    frame = traffic(4, seed=21)
    log_frame(ws, frame, frame["at"].to_numpy())
    campaign_labels = partial(labels.campaign_labels, ws.engine, "damaging")

    def check() -> checks.CheckResult:
        return checks.check(
            ws.engine, ws.log, ws.registry, "damaging", now=T0 + 4 * DAY, extra_labels=campaign_labels
        )

    assert check().windows == 4 and check().skipped  # judged; then nothing to do
    source = tmp_path / "items.csv"
    frame.iloc[:40].drop(columns=["reverted", "at"]).to_csv(source, index=False)
    c = campaign(ws, source, name="late")
    relabelled = check()  # a campaign's items are labels to come: its windows are judged again
    assert relabelled.skipped is None and relabelled.relabelled == 4 and relabelled.windows == 0
    assert check().skipped
    classes = classes_of(ws)(1)
    for item in frame["rev_id"].iloc[:5].astype(str):
        record_judgment(ws.engine, model="damaging", item_id=item, label=classes[1], classes=classes,
                        token_name="t", campaign_id=c.id)  # fmt: skip
    assert check().relabelled == 4  # a judgment is a label: judged again
    assert check().skipped
    # Without campaigns read (no extra labels), review work does not make a check judge again.
    plain = checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + 4 * DAY)
    assert plain.relabelled == 4  # the mark it compares to was taken with campaigns: once
    record_judgment(
        ws.engine, model="damaging", item_id="x", label=classes[1], classes=classes, token_name="t"
    )
    assert checks.check(ws.engine, ws.log, ws.registry, "damaging", now=T0 + 4 * DAY).skipped
