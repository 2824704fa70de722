"""Monitoring a trained model end to end: drift injected at known times in known features is found
there and only there, an undrifted copy raises no alarm, alerts fire once, labels give the training
statistics per window, estimates state their assumption, and concept drift is dated."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from assay.modelling import evaluation
from assay.modelling.spec import load_spec
from assay.modelling.training import train
from assay.monitoring import alerts, monitor, performance
from assay.monitoring.labels import add_labels
from assay.registry.gates import summarize
from assay.settings import Settings
from assay.store import db
from assay.workspace import Workspace
from tests.conftest import edits_frame, write_binary_spec
from tests.monitoring.conftest import DAY, T0, log_frame

PER_DAY = 1440  # a row a minute


@pytest.fixture(scope="module")
def monitored_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with `damaging` trained on 8,000 rows: a reference large enough that Evidently's rule
    (distances for references over 1,000 rows) is not judging its own sampling noise."""
    root = tmp_path_factory.mktemp("monitored")
    spec = write_binary_spec(root / "data", n_train=8000, n_test=2000)
    spec.write_text(
        spec.read_text().replace(
            'candidates = ["logistic_regression", "lightgbm"]', 'candidates = ["lightgbm"]'
        )
    )
    ws = Workspace.open(Settings.load(home=root / "home", environ={}))
    try:
        train(load_spec(spec), ws.registry)
    finally:
        ws.close()
    return root


@pytest.fixture
def ws(monitored_template: Path, tmp_path: Path) -> Iterator[Workspace]:
    shutil.copytree(monitored_template, tmp_path / "copy")
    workspace = Workspace.open(Settings.load(home=tmp_path / "copy" / "home", environ={}))
    yield workspace
    workspace.close()


def traffic(days: int, *, drift_from: int | None = None, seed: int = 10) -> pd.DataFrame:
    """A row a minute from T0; from day ``drift_from`` on, words_added triples and most editors are anonymous."""
    frame = edits_frame(days * PER_DAY, seed=seed)
    frame["rev_id"] = np.arange(len(frame)) + 5_000_000
    if drift_from is not None:
        later = frame.index >= drift_from * PER_DAY
        frame.loc[later, "words_added"] *= 3
        frame.loc[later, "user_is_anon"] = np.random.default_rng(seed).random(int(later.sum())) < 0.8
    frame["at"] = T0 + np.arange(len(frame)) * 60.0
    return frame


def test_the_drifted_features_are_flagged_in_the_drifted_windows_only(ws: Workspace) -> None:
    frame = traffic(8, drift_from=4)
    log_frame(ws, frame, frame["at"].to_numpy())
    a = monitor.analyse(ws.engine, ws.registry, "damaging", since=T0, until=T0 + 8 * DAY, window="1d")
    assert [w.window.n for w in a.windows] == [PER_DAY] * 8
    flagged = [w.drift.drifted_features for w in a.windows]
    assert flagged[:4] == [[]] * 4
    assert flagged[4:] == [["words_added", "user_is_anon"]] * 4
    assert [w.drift.dataset_drift for w in a.windows] == [False] * 8  # 2 of 9 features is under half
    assert all(w.drift.output_drift for w in a.windows[4:]) and not any(
        w.drift.output_drift for w in a.windows[:4]
    )
    tests = {c.column: c.test for c in a.windows[0].drift.features}
    assert tests["words_added"] == "wasserstein" and tests["user_is_anon"] == "jensenshannon"
    # Replayed alerts: after 3 drifting windows in a row, on the drifted features only.
    alerted = {c["monitor"] for c in a.transitions if c["to"] == "alert"}
    assert {"feature:words_added", "feature:user_is_anon", "prediction_drift"} <= alerted
    assert not any(
        m.startswith("feature:") and m not in ("feature:words_added", "feature:user_is_anon") for m in alerted
    )
    assert all(c["window_start"].startswith("2026-01-07") for c in a.transitions if c["to"] == "alert")
    # Windows by count cut the same rows.
    b = monitor.analyse(ws.engine, ws.registry, "damaging", window=PER_DAY)
    assert [w.drift.drifted_features for w in b.windows] == flagged


def test_an_undrifted_copy_raises_no_alarm(ws: Workspace) -> None:
    frame = traffic(10, seed=11)
    log_frame(ws, frame, frame["at"].to_numpy())
    result = monitor.check(ws.engine, ws.registry, "damaging", now=T0 + 10 * DAY)
    assert result.windows == 10
    assert not [t for t in result.transitions if t["to"] == "alert"]
    assert all(s["state"] != "alert" for s in alerts.states(ws.engine, "damaging"))
    a = monitor.analyse(ws.engine, ws.registry, "damaging", since=T0, until=T0 + 10 * DAY, window="1d")
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
        monitor.check(ws.engine, ws.registry, "damaging", now=T0 + hour * 3600.0)
    changes = [(e["from"], e["to"], e["window"]["start"][:10]) for e in reversed(alert_events())]
    assert changes == [
        ("ok", "warning", "2026-01-04"),
        ("warning", "alert", "2026-01-06"),
        ("alert", "ok", "2026-01-12"),  # after 3 clean windows
    ]
    deliveries = [e["delivery"] for e in reversed(alert_events())]
    assert deliveries == ["none", "pending", "pending"]  # webhooks hear of the alert and its end only
    with ws.engine.connect() as conn:
        assert conn.execute(sa.select(db.monitor_cursors.c.position)).scalar() == T0 + 13 * DAY


def test_two_checkers_judge_a_window_once(ws: Workspace) -> None:
    frame = traffic(5, drift_from=0)
    log_frame(ws, frame, frame["at"].to_numpy())
    first = monitor.check(ws.engine, ws.registry, "damaging", now=T0 + 5 * DAY)
    second = monitor.check(ws.engine, ws.registry, "damaging", now=T0 + 5 * DAY)
    assert first.windows == 5 and second.windows == 0 and second.skipped


def _classes_of(ws: Workspace):  # type: ignore[no-untyped-def]
    return lambda v: ws.registry.card(ws.registry.get("damaging", v))["classes"]


def test_labels_give_the_training_statistics_per_window(ws: Workspace) -> None:
    frame = traffic(3, seed=13)
    log_frame(ws, frame, frame["at"].to_numpy())
    labelled = frame.iloc[::2]
    items = [
        {"id": str(i), "label": str(v)} for i, v in zip(labelled["rev_id"], labelled["reverted"], strict=True)
    ]
    assert all(
        o.accepted for o in add_labels(ws.engine, "damaging", items, source="t", classes_of=_classes_of(ws))
    )
    a = monitor.analyse(ws.engine, ws.registry, "damaging", since=T0, until=T0 + 3 * DAY, window="1d")
    first = a.windows[0].performance
    assert first is not None and first["n"] == PER_DAY // 2
    # The same numbers evaluation.evaluate gives for those rows.
    loaded = ws.registry.load(ws.registry.resolve("damaging"))
    day0 = labelled[labelled["at"] < T0 + DAY]
    X = loaded.schema.encode_frame(day0, source="t")
    proba = loaded.predictor.predict_proba(X)
    ev = evaluation.evaluate(
        day0["reverted"].astype(str).to_numpy(), proba, loaded.classes, positive=loaded.positive
    )
    expected = summarize(ev, loaded.positive)
    assert first["metrics"]["roc_auc"] == pytest.approx(expected["roc_auc"])
    assert first["metrics"]["brier"] == pytest.approx(expected["brier"])
    assert set(first["operating_points"]) == set(loaded.operating_points)
    # Undrifted traffic from the training distribution: the estimate is close to the truth, and says
    # what it assumes.
    est = a.windows[0].estimated
    assert est is not None and est["assumption"] == performance.ASSUMPTION
    assert est["metrics"]["roc_auc"] == pytest.approx(first["metrics"]["roc_auc"], abs=0.05)


def test_concept_drift_is_dated_where_estimates_cannot_see_it(ws: Workspace) -> None:
    frame = traffic(6, seed=14)
    log_frame(ws, frame, frame["at"].to_numpy())
    # From day 3 the world changes under the model: a third of the labels flip.
    later = frame["at"] >= T0 + 3 * DAY
    flip = later & (np.random.default_rng(3).random(len(frame)) < 0.33)
    truth = np.where(flip, ~frame["reverted"], frame["reverted"])
    items = [{"id": str(i), "label": str(v)} for i, v in zip(frame["rev_id"], truth, strict=True)]
    add_labels(ws.engine, "damaging", items, source="t", classes_of=_classes_of(ws))
    a = monitor.analyse(ws.engine, ws.registry, "damaging", since=T0, until=T0 + 6 * DAY, window="1d")
    adwin = [e for e in a.detections if e["detector"] == "adwin"]
    assert adwin and all(e["at"] >= T0 + 3 * DAY for e in adwin)
    assert adwin[0]["at"] < T0 + 4 * DAY and adwin[0]["error_rate_after"] > adwin[0]["error_rate_before"]
    held_out = a.target.reference["roc_auc"]
    real = [w.performance["metrics"]["roc_auc"] for w in a.windows if w.performance]
    est = [w.estimated["metrics"]["roc_auc"] for w in a.windows if w.estimated]
    assert all(r < held_out - 0.1 for r in real[3:]) and all(abs(e - held_out) < 0.1 for e in est)
    assert [w.judgements["concept_drift"][0] for w in a.windows] == [False, False, False, True, False, False]


def test_review_campaign_labels_count_as_ground_truth(ws: Workspace, tmp_path: Path) -> None:
    from assay.monitoring.labels import campaign_labels
    from assay.review import labelling, worksets
    from tests.reviewing import campaign, users

    frame = traffic(1, seed=15)
    log_frame(ws, frame, frame["at"].to_numpy())
    source = tmp_path / "items.csv"
    frame.drop(columns=["reverted", "at"]).iloc[:40].to_csv(source, index=False)
    made = campaign(ws, source, name="gold", size=40)
    (ana,) = users(ws, "ana")
    workset = worksets.take_workset(ws.engine, made, ana, size=40, ttl_s=3600)
    assert workset is not None
    truth = dict(zip(frame["rev_id"].astype(str), frame["reverted"].astype(str), strict=True))
    for item in workset.items:
        labelling.submit_label(ws.engine, made, ana, item.item_id, truth[item.item_id], ttl_s=3600)
    gold = campaign_labels(ws.engine, "damaging")
    assert len(gold) == 40 and all(truth[i] == label for i, label in gold.items())
    a = monitor.analyse(
        ws.engine, ws.registry, "damaging", since=T0, until=T0 + DAY, window="1d", extra_labels=gold
    )
    assert a.labelled == 40 and a.windows[0].performance is not None and a.windows[0].performance["n"] == 40
