"""Tests for assay.explain on real saved-and-loaded models."""

from __future__ import annotations

from pathlib import Path

import lightgbm
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from assay.errors import InvalidInput
from assay.registry.artifacts import load_model, save_model
from assay.serving.explain import explain

NAMES = ["length", "spelling", "grammar", "topic", "links"]


def make_data(n_classes: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, len(NAMES)))
    X[:, 3] = rng.integers(0, 4, n)
    signal = 2 * X[:, 0] + X[:, 1] + (X[:, 3] == 2) + rng.normal(scale=0.3, size=n)
    y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1]))
    X[rng.random(n) < 0.1, 1] = np.nan
    return X, y


def fit_lightgbm(n_classes: int, directory: Path):
    """The fitted model, its saved-and-loaded predictor and the training matrix."""
    X, y = make_data(n_classes)
    model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, min_child_samples=10, verbose=-1)
    model.fit(X, y, categorical_feature=[3])
    return model, load_model(directory, save_model(model, directory)), X


@pytest.fixture(scope="module", params=[2, 3], ids=["binary", "3-class"])
def lightgbm_model(request, tmp_path_factory):
    return fit_lightgbm(request.param, tmp_path_factory.mktemp("lgb"))


def test_base_plus_all_contributions_is_the_raw_score(lightgbm_model):
    model, predictor, X = lightgbm_model
    raw = model.booster_.predict(X[:10], raw_score=True)
    raw = raw if raw.ndim == 2 else np.column_stack((-raw, raw))
    for class_index in range(predictor.n_classes):
        rows = explain(predictor, X[:10], NAMES, class_index, top=0)
        totals = [row["base"] + sum(c["contribution"] for c in row["contributions"]) for row in rows]
        np.testing.assert_allclose(totals, raw[:, class_index], atol=1e-9)


def test_contributions_are_named_ranked_by_magnitude_and_cut_to_top(lightgbm_model):
    _, predictor, X = lightgbm_model
    class_index = predictor.n_classes - 1
    rows = explain(predictor, X[:5], NAMES, class_index, top=2)
    full = predictor.contributions(X[:5])[:, class_index, :]

    assert len(rows) == 5
    for row, expected in zip(rows, full, strict=True):
        assert row["method"] == "exact"
        assert row["base"] == pytest.approx(expected[-1])
        assert len(row["contributions"]) == 2
        magnitudes = [abs(c["contribution"]) for c in row["contributions"]]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert magnitudes[0] == pytest.approx(np.abs(expected[:-1]).max())
        for item in row["contributions"]:
            assert item["contribution"] == pytest.approx(expected[NAMES.index(item["feature"])])
            assert type(item["contribution"]) is float


def test_top_larger_than_the_feature_count_returns_every_feature(lightgbm_model):
    _, predictor, X = lightgbm_model
    (row,) = explain(predictor, X[:1], NAMES, 0, top=50)
    assert sorted(c["feature"] for c in row["contributions"]) == sorted(NAMES)


def test_binary_class_0_mirrors_class_1(tmp_path):
    _, predictor, X = fit_lightgbm(2, tmp_path)
    (negative,) = explain(predictor, X[:1], NAMES, 0, top=0)
    (positive,) = explain(predictor, X[:1], NAMES, 1, top=0)
    assert negative["base"] == -positive["base"]
    assert negative["contributions"] == [
        {"feature": c["feature"], "contribution": -c["contribution"]} for c in positive["contributions"]
    ]


def test_occlusion_models_say_so(tmp_path):
    X, y = make_data(2)
    model = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(X, y)
    predictor = load_model(tmp_path, save_model(model, tmp_path, reference=np.nanmedian(X, axis=0)))
    (row,) = explain(predictor, X[:1], NAMES, 1)
    assert row["method"] == "occlusion"
    assert len(row["contributions"]) == 5


def test_ties_keep_feature_order(tmp_path):
    # A forest that only ever splits on feature 0: every other feature contributes exactly 0.
    X, y = make_data(2)
    model = RandomForestClassifier(n_estimators=5, max_features=None, max_depth=2, random_state=0)
    X_only0 = X.copy()
    X_only0[:, 1:] = 0.0
    model.fit(X_only0, y)
    predictor = load_model(tmp_path, save_model(model, tmp_path, reference=np.zeros(len(NAMES))))
    (row,) = explain(predictor, X_only0[:1], NAMES, 1, top=0)
    assert [c["feature"] for c in row["contributions"]][1:] == NAMES[1:]


def test_bad_arguments_are_refused(lightgbm_model):
    _, predictor, X = lightgbm_model
    with pytest.raises(InvalidInput, match="class index 7 is out of range") as info:
        explain(predictor, X[:1], NAMES, 7)
    assert info.value.field == "class_index"
    with pytest.raises(ValueError, match="got 4 feature names"):
        explain(predictor, X[:1], NAMES[:4], 0)
