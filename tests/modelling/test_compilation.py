"""Compiled inference: every family's compiled form computes the estimator's probabilities, is
stored and hash-checked in the version, explains exactly, and falls back to the reference."""

from __future__ import annotations

import json
import re
import warnings

import lightgbm
import numpy as np
import pandas as pd
import pytest

from assay.errors import ArtifactError
from assay.modelling import compilation as compilation_module
from assay.modelling.candidates import CANDIDATES
from assay.modelling.compilation import compile_estimator
from assay.modelling.tree_text import forest_text
from assay.registry.artifacts import LightGBMPredictor, SklearnPredictor, load_model, save_model
from assay.registry.compiled import LinearPredictor, Overflow
from assay.registry.files import write_atomic
from assay.registry.schema import FeatureSchema
from assay.serving.predictor import fast_predict

FAMILIES = ["hist_gradient_boosting", "random_forest", "logistic_regression"]
EXPECTED = {
    "hist_gradient_boosting": LightGBMPredictor,
    "random_forest": LightGBMPredictor,
    "logistic_regression": LinearPredictor,
}
SMALL = {"hist_gradient_boosting": {"max_iter": 40}, "random_forest": {"n_estimators": 25}}


def _data(n_classes: int, seed: int = 0) -> tuple[FeatureSchema, np.ndarray, np.ndarray]:
    """Numeric with missing values, a categorical with missing values, a boolean."""
    rng = np.random.default_rng(seed)
    n = 1600
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n) * 1000,
            "c": rng.choice(list("pqrstu"), n),
            "d": rng.random(n) < 0.3,
        }
    )
    frame.loc[rng.random(n) < 0.15, "a"] = np.nan
    frame.loc[rng.random(n) < 0.1, "c"] = None
    kinds = {"a": "numeric", "b": "numeric", "c": "categorical", "d": "boolean"}
    schema = FeatureSchema.learn(frame, kinds, source="t")
    X = schema.encode_frame(frame, source="t")
    signal = np.nan_to_num(X[:, 0]) + X[:, 1] / 1000 + np.nan_to_num(X[:, 2], nan=2.5) / 3 + X[:, 3]
    y = (signal > 0.8).astype(int) + (n_classes == 3) * (signal > 2.0)
    return schema, X, y


def _fitted(name: str, n_classes: int) -> tuple[object, np.ndarray]:
    schema, X, y = _data(n_classes)
    candidate = CANDIDATES[name]
    estimator = candidate.fit(candidate.estimator(SMALL.get(name, {}), schema, 0), X[:1000], y[:1000], schema)
    return estimator, X[1000:]


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_compiles_to_the_estimators_probabilities(tmp_path, name, n_classes):
    estimator, X = _fitted(name, n_classes)
    compiled = compile_estimator(estimator, X)
    assert compiled.reason is None and compiled.max_abs_diff is not None
    assert compiled.max_abs_diff <= 1e-12
    manifest = save_model(estimator, tmp_path, np.nanmedian(X, axis=0), compiled.stored())
    assert compiled.meta()["file"] in manifest
    predictor = load_model(tmp_path, manifest)
    assert isinstance(predictor, EXPECTED[name]) and predictor.explanation_method == "exact"
    reference = estimator.predict_proba(X)
    np.testing.assert_allclose(predictor.predict_proba(X), reference, rtol=0, atol=1e-12)
    # One row at a time, through the fast path the server uses.
    fast = fast_predict(predictor)
    for k in range(0, len(X), 97):
        np.testing.assert_allclose(fast(X[k : k + 1]), reference[k : k + 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["hist_gradient_boosting", "random_forest"])
def test_compiled_trees_explain_exactly(name):
    """TreeSHAP contributions of the compiled trees add up to each row's score."""
    estimator, X = _fitted(name, 2)
    predictor = compile_estimator(estimator, X).predictor
    contributions = predictor.contributions(X[:50])
    p = estimator.predict_proba(X[:50])[:, 1]
    total = contributions[:, 1, :].sum(axis=1)
    expected = np.log(p / (1 - p)) if name == "hist_gradient_boosting" else p
    np.testing.assert_allclose(total, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_a_value_too_large_for_the_linear_terms_is_refused_not_scored(n_classes):
    """1e308 in a feature scaled by < 1 overflows float64: refused (naming the column), one row or many,
    never a NaN probability or a warning; a large but computable value saturates."""
    estimator, X = _fitted("logistic_regression", n_classes)
    predictor = compile_estimator(estimator, X).predictor
    rows = X[:300].copy()
    big = float(np.finfo(np.float64).max)
    rows[137, 0] = big  # column a, scaled by its standard deviation (~0.9): inf in the term
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for batch in (rows, rows[137:138]):
            with pytest.raises(Overflow) as caught:
                predictor.predict_proba(batch)
            assert (caught.value.column, caught.value.value) == (0, big)
            assert caught.value.row == (137 if len(batch) > 1 else 0)
        rows[137, 0] = 1e250  # finite terms: the logistic saturates without a warning
        proba = predictor.predict_proba(rows)
        assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1.0)
        assert np.allclose(fast_predict(predictor)(rows[137:138]), proba[137:138])


def test_categories_never_seen_go_where_scikit_learn_sends_them():
    estimator, X = _fitted("hist_gradient_boosting", 2)
    odd = X[:200].copy()
    odd[:, 2] = np.where(np.arange(200) % 2 == 0, 17.0, np.nan)  # an unseen code, or missing
    predictor = compile_estimator(estimator, X).predictor
    np.testing.assert_allclose(predictor.predict_proba(odd), estimator.predict_proba(odd), rtol=0, atol=1e-12)


def test_forest_thresholds_compare_as_float32_does():
    """scikit-learn tests float32(x) <= t: values either side of every threshold's float32 rounding."""
    estimator, X = _fitted("random_forest", 2)
    splits = [(t.tree_.threshold, t.tree_.feature) for t in estimator.estimators_]
    # An infinite threshold splits missing values from the rest; the rows below test those too.
    thresholds = np.concatenate([t[(f >= 0) & np.isfinite(t)] for t, f in splits])
    features = np.concatenate([f[(f >= 0) & np.isfinite(t)] for t, f in splits])
    rows = np.repeat(np.nanmedian(X, axis=0)[None, :], 4 * len(thresholds), axis=0)
    for k, (t, j) in enumerate(zip(thresholds, features, strict=True)):
        t32 = np.float32(t)
        for m, v in enumerate(
            (float(t32), float(np.nextafter(t32, np.float32(np.inf))), np.nextafter(t, np.inf), t)
        ):
            rows[4 * k + m, j] = v
    predictor = compile_estimator(estimator, X).predictor
    np.testing.assert_allclose(
        predictor.predict_proba(rows), estimator.predict_proba(rows), rtol=0, atol=1e-12
    )


def test_a_compiled_form_that_disagrees_leaves_the_reference_serving(tmp_path, monkeypatch):
    estimator, X = _fitted("random_forest", 2)
    good = forest_text(estimator)

    def off_by_a_little(model):
        # Every leaf of the first tree 0.25 higher: a probability differs by 0.25 / 25 trees.
        values = re.search(r"leaf_value=([^\n]+)", good).group(1)
        shifted = " ".join(repr(float(v) + 0.25) for v in values.split())
        text = re.sub(
            r"tree_sizes=[^\n]*\n", "", good.replace(f"leaf_value={values}", f"leaf_value={shifted}", 1)
        )
        return lightgbm.Booster(model_str=text).model_to_string()  # tree sizes written again

    monkeypatch.setattr(compilation_module, "forest_text", off_by_a_little)
    compiled = compile_estimator(estimator, X)
    assert compiled.runtime == "reference" and compiled.stored() is None
    assert "differs by" in compiled.reason and compiled.max_abs_diff > 1e-6
    manifest = save_model(estimator, tmp_path, np.nanmedian(X, axis=0), compiled.stored())
    assert isinstance(load_model(tmp_path, manifest), SklearnPredictor)


def test_a_model_that_cannot_be_compiled_is_served_as_it_is():
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import PolynomialFeatures

    estimator, X = _fitted("logistic_regression", 2)
    odd = Pipeline([("poly", PolynomialFeatures()), ("model", estimator[-1])])
    compiled = compile_estimator(odd, X)
    assert compiled.runtime == "reference" and "cannot be compiled" in compiled.reason


def test_a_changed_compiled_file_is_refused(tmp_path):
    estimator, X = _fitted("logistic_regression", 2)
    manifest = save_model(
        estimator, tmp_path, np.nanmedian(X, axis=0), compile_estimator(estimator, X).stored()
    )
    path = tmp_path / "model.compiled.linear.json"
    body = json.loads(path.read_bytes())
    body["intercept"] = [body["intercept"][0] + 1.0]
    path.write_bytes(json.dumps(body).encode())
    with pytest.raises(ArtifactError, match=r"compiled\.linear\.json"):
        load_model(tmp_path, manifest)
    # Even with a manifest that agrees with the new bytes, a crafted file is checked in full.
    body["features"][0]["scale"] = 0.0
    manifest["model.compiled.linear.json"] = write_atomic(path, json.dumps(body).encode())
    with pytest.raises(ArtifactError, match="zero scale"):
        load_model(tmp_path, manifest)


def test_model_json_cannot_claim_a_compiled_form_that_disagrees(tmp_path):
    estimator, X = _fitted("hist_gradient_boosting", 2)
    compiled = compile_estimator(estimator, X)
    meta, data = compiled.stored()
    with pytest.raises(ArtifactError, match="disagrees"):
        save_model(estimator, tmp_path, np.nanmedian(X, axis=0), ({**meta, "max_abs_diff": 0.01}, data))
