"""Monitoring a trained model end to end: drift injected at known times in known features is found
there and only there, labels give the training statistics per window, estimates state their
assumption, and concept drift is dated."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assay.engines.engine import LocalEngine
from assay.modelling import evaluation
from assay.monitoring import monitor, performance
from assay.monitoring.labels import add_labels
from assay.registry.gates import summarize
from assay.workspace import Workspace
from tests.monitoring.conftest import DAY, PER_DAY, T0, classes_of, log_frame, traffic


def test_the_drifted_features_are_flagged_in_the_drifted_windows_only(ws: Workspace) -> None:
    frame = traffic(8, drift_from=4)
    log_frame(ws, frame, frame["at"].to_numpy())
    a = monitor.analyse(ws.engine, ws.log, ws.registry, "damaging", since=T0, until=T0 + 8 * DAY, window="1d")
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
    b = monitor.analyse(ws.engine, ws.log, ws.registry, "damaging", window=PER_DAY)
    assert [w.drift.drifted_features for w in b.windows] == flagged


class CountingEngine(LocalEngine):
    """The local engine, counting the calls it is handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], **kwargs: Any) -> list[Any]:
        self.calls.extend(calls)
        return super().map(fn, calls, **kwargs)


def test_each_window_is_judged_for_drift_through_the_engine(ws: Workspace) -> None:
    frame = traffic(4, drift_from=2)
    log_frame(ws, frame, frame["at"].to_numpy())
    work = CountingEngine()
    args = {"since": T0, "until": T0 + 4 * DAY, "window": "1d", "with_psi": True}
    here = monitor.analyse(ws.engine, ws.log, ws.registry, "damaging", **args)  # type: ignore[arg-type]
    handed = monitor.analyse(ws.engine, ws.log, ws.registry, "damaging", work=work, **args)  # type: ignore[arg-type]
    assert work.calls == [(w.window.lo, w.window.hi) for w in handed.windows] and len(work.calls) == 4
    assert handed.to_dict() == here.to_dict()
    assert [w.drift.drifted_features for w in handed.windows] == [[]] * 2 + [
        ["words_added", "user_is_anon"]
    ] * 2


def test_labels_give_the_training_statistics_per_window(ws: Workspace) -> None:
    frame = traffic(3, seed=13)
    log_frame(ws, frame, frame["at"].to_numpy())
    labelled = frame.iloc[::2]
    items = [
        {"id": str(i), "label": str(v)} for i, v in zip(labelled["rev_id"], labelled["reverted"], strict=True)
    ]
    assert all(
        o.accepted
        for o in add_labels(ws.engine, ws.log, "damaging", items, source="t", classes_of=classes_of(ws))
    )
    a = monitor.analyse(ws.engine, ws.log, ws.registry, "damaging", since=T0, until=T0 + 3 * DAY, window="1d")
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
    add_labels(ws.engine, ws.log, "damaging", items, source="t", classes_of=classes_of(ws))
    a = monitor.analyse(ws.engine, ws.log, ws.registry, "damaging", since=T0, until=T0 + 6 * DAY, window="1d")
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
        ws.engine, ws.log, ws.registry, "damaging", since=T0, until=T0 + DAY, window="1d", extra_labels=gold
    )
    assert a.labelled == 40 and a.windows[0].performance is not None and a.windows[0].performance["n"] == 40
