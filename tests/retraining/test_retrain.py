"""assay.retraining on real training runs: labels that arrived through the label API flow into the
challenger's data and lineage, data that shrank, lost a class or changed its features is refused
with one line and nothing promoted, triggers hold a run back, and every run is on record."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import assay
from assay.errors import Conflict
from assay.modelling.comparison import spec_of
from assay.modelling.spec_file import load_spec
from assay.monitoring import alerts
from assay.monitoring.labels import add_labels
from assay.retraining import runs
from assay.retraining.retrain import Triggers, retrain, retrain_every
from assay.retraining.snapshot import base_spec, take_snapshot
from assay.workspace import Workspace
from tests.conftest import EDITQUALITY_COLUMNS, edits_frame


def serve(ws: Workspace, model: str, frame: pd.DataFrame) -> None:
    """Log ``frame``'s rows as the production version scored them (what the server would do)."""
    loaded = ws.registry.load(ws.registry.resolve(model))
    X = loaded.schema.encode_frame(frame, source="served")
    ids = frame["rev_id"].astype(str).tolist()
    ws.log.write(model, loaded.record.version, time.time(), ids, X, loaded.predictor.predict_proba(X))


def label(ws: Workspace, model: str, ids: list[str], labels: list[str]) -> None:
    """Labels as ``POST /v1/labels`` stores them."""
    outcomes = add_labels(
        ws.engine, ws.log, model, [{"id": i, "label": v} for i, v in zip(ids, labels, strict=True)], source="api:test",
        classes_of=lambda v: ws.registry.load(ws.registry.get(model, v)).classes,
    )  # fmt: skip
    assert all(o.accepted for o in outcomes), [o for o in outcomes if not o.accepted][:3]


def as_labels(values: pd.Series) -> list[str]:
    return ["True" if v else "False" for v in values]


def test_labels_from_the_api_flow_into_the_challenger(served: tuple[Workspace, Path]) -> None:
    ws, spec_path = served
    fresh = edits_frame(300, seed=9)
    fresh["rev_id"] += 50_000  # items the training files never held
    every = edits_frame(1000, seed=1)
    trained, held_out = every.iloc[:50], every.iloc[600:620]
    for frame in (fresh, trained, held_out):
        serve(ws, "damaging", frame)
    label(ws, "damaging", fresh["rev_id"].astype(str).tolist(), as_labels(fresh["reverted"]))
    label(
        ws, "damaging", trained["rev_id"].astype(str).tolist(), as_labels(~trained["reverted"])
    )  # relabelled
    label(ws, "damaging", held_out["rev_id"].astype(str).tolist(), as_labels(held_out["reverted"]))
    champion = ws.registry.resolve("damaging")
    snapshot = take_snapshot(
        ws.engine,
        ws.log,
        ws.registry,
        champion,
        base_spec(champion, spec_of(champion)),
        ws.settings.home / "s",
    )
    facts = snapshot.facts
    assert (facts["rows"], facts["api"], facts["added"], facts["relabelled"], facts["held_out"]) == (
        900,
        370,
        300,
        50,
        20,
    )
    assert facts["without_features"] == 0 and facts["retrained_from"] == "damaging@1"
    rows = snapshot.frame.set_index("rev_id")
    first = fresh.iloc[0]
    assert rows.loc[str(first["rev_id"]), "words_added"] == str(first["words_added"])
    assert rows.loc[str(first["rev_id"]), "user_is_anon"] == str(bool(first["user_is_anon"]))
    assert rows.loc[str(trained.iloc[0]["rev_id"]), "reverted"] == str(not trained.iloc[0]["reverted"])
    assert str(held_out.iloc[0]["rev_id"]) not in rows.index

    outcome = retrain(ws, "damaging", actor="t", resamples=300)
    assert outcome.status in ("promoted", "kept") and outcome.challenger is not None
    lineage = outcome.challenger.lineage
    assert lineage["labels"]["fingerprint"] == facts["fingerprint"] and lineage["train_rows"] == 900
    assert lineage["labels"]["base_train"] == load_spec(spec_path).data.train
    [run] = runs.list_runs(ws.engine, "damaging")
    assert (run.status, run.challenger_version, run.trigger) == (
        outcome.status,
        outcome.challenger.version,
        "manual",
    )
    assert run.comparison["comparison"]["a"] == "damaging@1" and run.labels["api"] == 370
    # No labels since: the new-labels trigger holds the next run back, and records nothing.
    held = retrain(ws, "damaging", actor="t", triggers=Triggers(min_new_labels=1), resamples=300)
    assert held.status == "skipped" and "0 new labels" in held.message
    assert len(runs.list_runs(ws.engine, "damaging")) == 1
    assert retrain(ws, "damaging", actor="t", triggers=Triggers(on_alert=True)).status == "skipped"
    fresher = edits_frame(40, seed=10)
    fresher["rev_id"] += 60_000
    serve(ws, "damaging", fresher)
    label(ws, "damaging", fresher["rev_id"].astype(str).tolist(), as_labels(fresher["reverted"]))
    held = retrain(ws, "damaging", actor="t", triggers=Triggers(min_new_labels=41), resamples=300)
    assert held.status == "skipped" and "40 new labels" in held.message


def _rewrite_training_file(spec_path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(
        spec_path.parent / "edits.train.tsv", sep="\t", header=False, index=False, columns=EDITQUALITY_COLUMNS
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.iloc[:200], "200 training rows, fewer than retraining.min_share = 0.5 of the 600 damaging@1 learnt from"),
        (lambda f: f.assign(reverted=False), "class 'True', which damaging@1 predicts, is gone from the training data"),
        (lambda f: f.assign(words_added=np.where(f.index % 2, "many", "few")), "the data's features changed since damaging@1: words_added is numeric -> categorical"),
    ],
    ids=["shrunk", "lost-class", "schema"],
)  # fmt: skip
def test_unusable_data_is_refused_and_nothing_is_promoted(
    served: tuple[Workspace, Path], change: Callable[[pd.DataFrame], pd.DataFrame], message: str
) -> None:
    ws, spec_path = served
    _rewrite_training_file(spec_path, change(edits_frame(1000, seed=1).iloc[:600]))
    before = ws.registry.aliases("damaging"), ws.registry.model("damaging").versions
    outcome = retrain(ws, "damaging", actor="t", resamples=300)
    assert outcome.status == "refused" and message in outcome.message and "\n" not in outcome.message
    assert (ws.registry.aliases("damaging"), ws.registry.model("damaging").versions) == before
    [run] = runs.list_runs(ws.engine, "damaging")
    assert run.status == "refused" and run.message == outcome.message and run.challenger_version is None
    assert not (ws.settings.home / "retraining" / "damaging" / f"run-{run.id}").exists()


def test_a_retrain_killed_at_any_point_leaves_the_registry_as_it_was(served: tuple[Workspace, Path]) -> None:
    ws, _spec = served
    home = ws.settings.home
    command = [sys.executable, "-c", "from assay.cli import main; main()", "--home", str(home), "retrain", "damaging",
               "--resamples", "200"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(assay.__file__).parents[1])}
    aliases = ws.registry.aliases("damaging")
    for delay in (1.0, 2.5, 4.0, 5.5, 7.0, 9.0):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        reopened = Workspace.open(ws.settings)  # as the next command would
        try:
            assert reopened.registry.aliases("damaging")["production"] == aliases["production"]
            for version in reopened.registry.model("damaging").versions:  # none half-written
                reopened.registry.load(reopened.registry.get("damaging", version))
            assert not list((home / "artifacts" / "damaging").glob(".staging-*"))
        finally:
            reopened.close()
    runs.mark_interrupted(ws.engine, "damaging")
    statuses = [r.status for r in runs.list_runs(ws.engine, "damaging")]
    assert set(statuses) <= {"interrupted", "kept"} and "interrupted" in statuses
    # The same spec on the same data: never significantly better, so a finished run keeps production.
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0 and "kept damaging@1" in finished.stdout, finished.stderr[-2000:]
    assert ws.registry.aliases("damaging")["production"] == aliases["production"]


def test_every_period_runs_again_and_checks_its_triggers(served: tuple[Workspace, Path]) -> None:
    ws, _spec = served
    reported: list[str] = []
    retrain_every(
        ws, "damaging", 0.01, actor="t", triggers=Triggers(on_alert=True), resamples=100, require_better=True,
        report=lambda outcome: reported.append(outcome.message), rounds=3,
    )  # fmt: skip
    assert reported == ["skipped: no monitor of damaging is in alert"] * 3
    assert runs.list_runs(ws.engine, "damaging") == []


def test_a_second_run_of_a_model_at_once_is_refused(served: tuple[Workspace, Path]) -> None:
    ws, _spec = served
    folder = ws.settings.home / "retraining" / "damaging"
    folder.mkdir(parents=True)
    with open(folder / ".lock", "a+b") as other:  # what a run in another process holds
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(Conflict, match="another retrain of 'damaging' is running"):
            retrain(ws, "damaging", actor="t")
    assert runs.list_runs(ws.engine, "damaging") == []


def test_a_monitor_in_alert_triggers_a_run(served: tuple[Workspace, Path]) -> None:
    ws, _spec = served
    with ws.engine.begin() as conn:  # as the monitor check records three drifting windows in a row
        alerts.save_states(conn, "damaging", {"data_drift": alerts.MonitorState("alert", drifting=3)}, {})
    outcome = retrain(ws, "damaging", actor="t", triggers=Triggers(on_alert=True), resamples=200)
    assert outcome.status == "kept" and outcome.run_id is not None
    [run] = runs.list_runs(ws.engine, "damaging")
    assert run.trigger == "alert:data_drift"
