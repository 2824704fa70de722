"""Choosing the candidate: cross-validation on small data, the prior baseline, the seeded search and its budget."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

from assay.engines.engine import LocalEngine
from assay.modelling.candidates import CANDIDATES
from assay.modelling.selection import cross_validate, no_better_than_prior, prior_score
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.registry.schema import FeatureSchema
from assay.workspace import Workspace
from tests.conftest import write_binary_spec


def test_search_is_reproducible_when_the_budget_does_not_cut_it(workspace: Workspace, tmp_path: Path) -> None:
    spec = load_spec(write_binary_spec(tmp_path / "data", n_train=400, n_test=200))
    spec.training.candidates = ["lightgbm"]
    spec.training.search_budget_s = 600
    spec.training.search_trials = 3
    runs, messages = [], []
    for _ in range(2):
        runs.append(train(spec, workspace.registry, progress=messages.append))
    first, second = runs
    for run in runs:
        assert run.search["trials"] == 3 and run.search["cut_short"] is False
        assert run.record.lineage["search"] == {
            "trials": 3,
            "max_trials": 3,
            "cut_short": False,
            "budget_s": 600,
        }
        # The spec's explicit hyperparameters are kept in every trial; the rest are sampled.
        assert all(t["params"]["n_estimators"] == 60 for t in run.search["history"])
        assert len({t["params"]["num_leaves"] for t in run.search["history"]}) > 1
    assert first.search["history"] == second.search["history"]
    assert first.winner.params == second.winner.params
    assert first.record.summary == second.record.summary
    assert workspace.registry.read_json(first.record, "evaluation.json") == workspace.registry.read_json(
        second.record, "evaluation.json"
    )
    assert sum("search: 3 of 3 trials" in m for m in messages) == 2


def test_search_stops_at_its_time_budget(workspace: Workspace, tmp_path: Path) -> None:
    spec = load_spec(write_binary_spec(tmp_path / "data", n_train=500, n_test=200))
    spec.training.candidates = ["logistic_regression"]
    spec.training.search_budget_s = 1.0
    spec.training.search_trials = 100_000
    stamps: dict[str, float] = {}
    trial_messages: list[str] = []

    def progress(message: str) -> None:
        if message.startswith("searching"):
            stamps["start"] = time.monotonic()
        elif message.startswith("search:"):
            stamps["end"] = time.monotonic()
        elif message.startswith("  search trial"):
            trial_messages.append(message)

    result = train(spec, workspace.registry, progress=progress)
    elapsed = stamps["end"] - stamps["start"]
    one_fold = max(result.comparison[0].fit_times)
    # The budget plus one fold (fit and scoring), generously: the machine may be busy.
    assert 1.0 <= elapsed <= 1.0 + 3 * one_fold + 1.0
    assert result.search["cut_short"] is True and result.record.lineage["search"]["cut_short"] is True
    # Only whole trials count: the one the deadline interrupted is neither counted nor reported.
    assert 0 < result.search["trials"] == len(result.search["history"]) == len(trial_messages) < 100_000


def test_small_data_gets_leaves_it_can_split_and_a_constant_model_is_flagged() -> None:
    """Wine: a 60-row leaf made HistGradientBoosting predict the class frequencies on its 106-row folds."""
    bunch = load_wine()
    # assay's default held-out split leaves 133 training rows, so each of 5 folds trains on 106.
    X, _, y, _ = train_test_split(
        bunch.data, bunch.target, test_size=0.25, stratify=bunch.target, random_state=0
    )
    hgb = CANDIDATES["hist_gradient_boosting"]
    schema = FeatureSchema.learn(pd.DataFrame(X), {}, source="wine")
    fold_rows = len(X) * 4 // 5
    assert hgb.defaults_for(fold_rows)["min_samples_leaf"] == 5
    assert hgb.defaults_for(100_000)["min_samples_leaf"] == hgb.defaults["min_samples_leaf"]
    prior = prior_score(y, folds=5, metric="accuracy", seed=0)
    assert prior == pytest.approx(np.mean(y == np.bincount(y).argmax()), abs=0.02)

    def accuracy(params: dict) -> float:
        [result] = cross_validate(
            [("hist_gradient_boosting", params)],
            schema,
            X,
            y,
            folds=5,
            metric="accuracy",
            seed=0,
            progress=None,
            engine=LocalEngine(),
        )
        return result.mean_score

    old = accuracy({**hgb.defaults, "max_iter": 50})
    assert no_better_than_prior(old, prior)  # the defaults before they fitted the data's size
    sized = accuracy({**hgb.defaults_for(fold_rows), "max_iter": 50})
    assert sized > 0.85 and not no_better_than_prior(sized, prior)
