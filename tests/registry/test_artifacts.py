"""Tests for assay.artifacts: round trips for every model kind, integrity refusals, the
no-code-at-load rule, contributions, and the JSON helpers."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from datetime import UTC, datetime
from pathlib import Path

import lightgbm
import numpy as np
import pytest
import skops.io
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from assay.errors import ArtifactError, InvalidInput
from assay.registry import artifacts
from assay.registry.artifacts import (
    ArtifactVersionWarning,
    LightGBMPredictor,
    SklearnPredictor,
    load_model,
    save_model,
    sha256_file,
    write_json,
)
from assay.registry.files import json_bytes

KINDS = ("lightgbm", "hgb", "rf", "lr")
CATEGORICAL = 3
N_FEATURES = 5

# Side effects of hostile payloads land here; a test that loads one asserts it stays empty.
RAN: list[str] = []


def make_data(n_classes: int, n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Numeric columns 0, 1, 2, 4 (NaN in 0 and 4), one categorical column coded 0..3 (some NaN)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[:, CATEGORICAL] = rng.integers(0, 4, n)
    signal = X[:, 0] + 0.8 * X[:, 1] + (X[:, CATEGORICAL] == 2) - 0.5 * (X[:, CATEGORICAL] == 1)
    signal += rng.normal(scale=0.5, size=n)
    y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1]))
    X[rng.random(n) < 0.15, 0] = np.nan
    X[rng.random(n) < 0.10, 4] = np.nan
    X[rng.random(n) < 0.05, CATEGORICAL] = np.nan
    return X, y


def make_reference(X: np.ndarray) -> np.ndarray:
    """What the caller computes from training data: median for numeric, mode for categorical."""
    reference = np.nanmedian(X, axis=0)
    codes, counts = np.unique(X[~np.isnan(X[:, CATEGORICAL]), CATEGORICAL], return_counts=True)
    reference[CATEGORICAL] = codes[np.argmax(counts)]
    return reference


def fit(kind: str, X: np.ndarray, y: np.ndarray):
    if kind == "lightgbm":
        model = lightgbm.LGBMClassifier(n_estimators=25, num_leaves=8, min_child_samples=10, verbose=-1)
        return model.fit(X, y, categorical_feature=[CATEGORICAL])
    if kind == "hgb":
        mask = [j == CATEGORICAL for j in range(N_FEATURES)]
        model = HistGradientBoostingClassifier(max_iter=25, categorical_features=mask, random_state=0)
        return model.fit(X, y)
    if kind == "rf":
        return RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0).fit(X, y)
    numeric = [j for j in range(N_FEATURES) if j != CATEGORICAL]
    impute_scale = Pipeline(
        [("impute", SimpleImputer(strategy="median", add_indicator=True)), ("scale", StandardScaler())]
    )
    preprocess = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), [CATEGORICAL]), ("num", impute_scale, numeric)]
    )
    return Pipeline([("preprocess", preprocess), ("model", LogisticRegression(max_iter=2000))]).fit(X, y)


@pytest.fixture(scope="module")
def fitted() -> dict[tuple[str, int], tuple[object, np.ndarray, np.ndarray]]:
    out = {}
    for n_classes in (2, 3):
        X, y = make_data(n_classes)
        for kind in KINDS:
            out[kind, n_classes] = (fit(kind, X, y), X, y)
    return out


def saved(fitted, kind: str, n_classes: int, directory: Path):
    estimator, X, _ = fitted[kind, n_classes]
    manifest = save_model(estimator, directory, reference=make_reference(X))
    return estimator, X, manifest


def raw_score(estimator, X: np.ndarray, n_classes: int) -> np.ndarray:
    """The original estimator's raw score per class: log-odds (binary, class 0 = -class 1)."""
    if isinstance(estimator, lightgbm.LGBMClassifier):
        score = estimator.booster_.predict(X, raw_score=True)
    else:
        score = estimator.decision_function(X)
    return np.column_stack((-score, score)) if n_classes == 2 else score


def rewrite(directory: Path, manifest: dict[str, str], name: str, data: bytes) -> dict[str, str]:
    """Replace a file and record its new hash: what an attacker with write access to the
    registry (or the author of a bundle) can do."""
    (directory / name).write_bytes(data)
    return {**manifest, name: hashlib.sha256(data).hexdigest()}


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_the_estimators_probabilities(fitted, tmp_path, kind, n_classes):
    estimator, X, manifest = saved(fitted, kind, n_classes, tmp_path)
    expected_file = "model.lgb.txt" if kind == "lightgbm" else "model.skops"
    assert set(manifest) == {expected_file, "model.json"}
    assert all(sha256_file(tmp_path / name) == digest for name, digest in manifest.items())

    predictor = load_model(tmp_path, manifest)

    assert isinstance(predictor, LightGBMPredictor if kind == "lightgbm" else SklearnPredictor)
    assert (predictor.n_classes, predictor.n_features) == (n_classes, N_FEATURES)
    assert predictor.explanation_method == ("occlusion" if kind in ("hgb", "rf") else "exact")
    rows = np.vstack([X, np.full((1, N_FEATURES), np.nan)])  # an all-missing row as well
    proba = predictor.predict_proba(rows)
    assert proba.dtype == np.float64 and proba.shape == (len(rows), n_classes)
    np.testing.assert_allclose(proba, estimator.predict_proba(rows), rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        predictor.predict_proba(rows[:1]), estimator.predict_proba(rows[:1]), atol=1e-9
    )


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("kind", ["lightgbm", "lr"])
def test_exact_contributions_sum_to_the_raw_score(fitted, tmp_path, kind, n_classes):
    estimator, X, manifest = saved(fitted, kind, n_classes, tmp_path)
    predictor = load_model(tmp_path, manifest)

    contributions = predictor.contributions(X)

    assert contributions.shape == (len(X), n_classes, N_FEATURES + 1)
    np.testing.assert_allclose(contributions.sum(axis=2), raw_score(estimator, X, n_classes), atol=1e-9)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_lr_contributions_land_on_their_source_feature(fitted, tmp_path, n_classes):
    # Changing one feature must move that feature's contribution only: one-hot columns
    # and missing indicators are summed back onto the right source column.
    _, X, manifest = saved(fitted, "lr", n_classes, tmp_path)
    predictor = load_model(tmp_path, manifest)
    row = X[~np.isnan(X).any(axis=1)][:1]
    for j, new_value in [(0, np.nan), (CATEGORICAL, 2.0), (CATEGORICAL, np.nan), (4, 3.0)]:
        changed = row.copy()
        changed[0, j] = new_value
        delta = predictor.contributions(changed) - predictor.contributions(row)
        others = np.delete(delta, j, axis=2)
        np.testing.assert_allclose(others, 0.0, atol=1e-12)
        assert np.abs(delta[0, :, j]).max() > 0


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("kind", ["hgb", "rf"])
def test_occlusion_contributions_compare_against_the_reference(fitted, tmp_path, kind, n_classes):
    estimator, X, manifest = saved(fitted, kind, n_classes, tmp_path)
    predictor = load_model(tmp_path, manifest)
    reference = make_reference(X)

    def logit(rows: np.ndarray) -> np.ndarray:
        p = np.clip(estimator.predict_proba(rows), 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    contributions = predictor.contributions(X[:7])
    assert contributions.shape == (7, n_classes, N_FEATURES + 1)
    np.testing.assert_allclose(contributions[:, :, -1], np.repeat(logit(reference[None]), 7, axis=0))
    for j in range(N_FEATURES):
        occluded = X[:7].copy()
        occluded[:, j] = reference[j]
        np.testing.assert_allclose(contributions[:, :, j], logit(X[:7]) - logit(occluded), atol=1e-12)
    # At the reference row itself every feature contributes nothing.
    np.testing.assert_allclose(predictor.contributions(reference[None])[0, :, :-1], 0.0, atol=1e-12)


def test_predictors_refuse_a_matrix_of_the_wrong_width(fitted, tmp_path):
    _, X, manifest = saved(fitted, "lightgbm", 2, tmp_path)
    predictor = load_model(tmp_path, manifest)
    with pytest.raises(InvalidInput, match="5 feature columns"):
        predictor.predict_proba(X[:, :4])
    with pytest.raises(InvalidInput):
        predictor.contributions(X[0])


# --------------------------------------------------------------------------- integrity


@pytest.mark.parametrize("kind", ["lightgbm", "lr"])
@pytest.mark.parametrize("victim", ["model", "model.json"])
def test_a_flipped_byte_is_refused(fitted, tmp_path, kind, victim):
    _, _, manifest = saved(fitted, kind, 2, tmp_path)
    name = victim if victim == "model.json" else next(n for n in manifest if n != "model.json")
    data = bytearray((tmp_path / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{name}.*truncated or modified \(hash mismatch"):
        load_model(tmp_path, manifest)


def test_a_truncated_file_is_refused(fitted, tmp_path):
    _, _, manifest = saved(fitted, "rf", 3, tmp_path)
    data = (tmp_path / "model.skops").read_bytes()
    (tmp_path / "model.skops").write_bytes(data[: len(data) - 100])
    with pytest.raises(ArtifactError, match=r"model\.skops.*truncated or modified"):
        load_model(tmp_path, manifest)


def test_a_missing_file_is_refused(fitted, tmp_path):
    _, _, manifest = saved(fitted, "lightgbm", 3, tmp_path)
    (tmp_path / "model.lgb.txt").unlink()
    with pytest.raises(ArtifactError, match=r"'model\.lgb\.txt' is missing"):
        load_model(tmp_path, manifest)


def test_every_manifest_file_is_checked_not_only_the_model(fitted, tmp_path):
    _, _, manifest = saved(fitted, "lightgbm", 2, tmp_path)
    manifest["evaluation.json"] = write_json(tmp_path / "evaluation.json", {"auc": 0.9})
    (tmp_path / "evaluation.json").write_text('{"auc": 0.99}\n')
    with pytest.raises(ArtifactError, match=r"evaluation\.json.*hash mismatch"):
        load_model(tmp_path, manifest)


def test_a_symlink_in_place_of_a_file_is_refused(fitted, tmp_path):
    _, _, manifest = saved(fitted, "lightgbm", 2, tmp_path / "v1")
    target = tmp_path / "elsewhere.txt"
    (tmp_path / "v1" / "model.lgb.txt").rename(target)
    (tmp_path / "v1" / "model.lgb.txt").symlink_to(target)
    with pytest.raises(ArtifactError, match="not a regular file"):
        load_model(tmp_path / "v1", manifest)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: {k: v for k, v in m.items() if k != "model.json"},
        lambda m: {**m, "model.skops": m["model.lgb.txt"]},
        lambda m: {**m, "../model.json": m["model.json"]},
        lambda m: {**m, "model.json": "not-a-hash"},
        lambda m: {},
    ],
    ids=["no model.json", "two model files", "path traversal", "bad digest", "empty"],
)
def test_a_malformed_manifest_is_refused(fitted, tmp_path, change):
    _, _, manifest = saved(fitted, "lightgbm", 2, tmp_path)
    with pytest.raises(ArtifactError):
        load_model(tmp_path, change(manifest))


def test_an_unlisted_model_file_in_the_directory_is_never_used(fitted, tmp_path):
    _, X, manifest = saved(fitted, "lightgbm", 2, tmp_path)
    (tmp_path / "model.skops").write_bytes(b"not listed, never read")
    assert load_model(tmp_path, manifest).predict_proba(X[:2]).shape == (2, 2)


def test_a_version_mismatch_warns(fitted, tmp_path):
    _, _, manifest = saved(fitted, "lightgbm", 2, tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["versions"]["lightgbm"] = "3.3.5"
    manifest["model.json"] = write_json(tmp_path / "model.json", meta)
    with pytest.warns(ArtifactVersionWarning, match="lightgbm 3.3.5"):
        load_model(tmp_path, manifest)


def test_a_garbage_lightgbm_model_with_a_matching_hash_is_refused(fitted, tmp_path):
    _, _, manifest = saved(fitted, "lightgbm", 2, tmp_path)
    manifest = rewrite(tmp_path, manifest, "model.lgb.txt", b"\xff\xfe not a model")
    with pytest.raises(ArtifactError, match=r"model\.lgb\.txt is not a LightGBM text model .*: not UTF-8"):
        load_model(tmp_path, manifest)


# --------------------------------------------------------------------------- no code at load


class Payload:
    """A class skops would rebuild by calling __setstate__: code from the artifact's author."""

    def __init__(self) -> None:
        self.note = "skops calls __setstate__ only for a non-empty state"

    def __setstate__(self, state: dict) -> None:
        RAN.append("Payload.__setstate__")
        self.__dict__.update(state)


def mark(tag: str) -> str:
    RAN.append(tag)
    return tag


class PicklePayload:
    def __reduce__(self):
        return (mark, ("unpickled",))


@pytest.fixture
def ran():
    RAN.clear()
    yield RAN
    RAN.clear()


def test_a_skops_file_with_a_custom_class_is_refused_without_running_it(fitted, tmp_path, ran):
    _, _, manifest = saved(fitted, "lr", 2, tmp_path)
    data = skops.io.dumps(Payload())
    # The payload is live: trusting its type makes skops run it.
    skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    assert ran == ["Payload.__setstate__"]
    ran.clear()

    manifest = rewrite(tmp_path, manifest, "model.skops", data)
    with pytest.raises(ArtifactError, match=r"untrusted types.*Payload"):
        load_model(tmp_path, manifest)
    assert ran == []


def test_a_skops_pipeline_calling_os_system_is_refused(fitted, tmp_path):
    _, _, manifest = saved(fitted, "lr", 2, tmp_path)
    evil = Pipeline([("run", FunctionTransformer(func=os.system)), ("model", LogisticRegression())])
    manifest = rewrite(tmp_path, manifest, "model.skops", skops.io.dumps(evil))
    with pytest.raises(ArtifactError, match=r"untrusted types.*(posix|os)\.system"):
        load_model(tmp_path, manifest)


def double(X: np.ndarray) -> np.ndarray:
    return X * 2


def test_save_refuses_an_estimator_it_could_not_load_back(tmp_path):
    X, y = make_data(2)
    custom = Pipeline([("double", FunctionTransformer(func=double)), ("model", LogisticRegression())])
    custom.fit(np.nan_to_num(X), y)
    with pytest.raises(ArtifactError, match=r"untrusted types.*\.double"):
        save_model(custom, tmp_path)
    assert not (tmp_path / "model.skops").exists()


def test_a_pickle_renamed_model_skops_is_refused_without_unpickling(fitted, tmp_path, ran):
    _, _, manifest = saved(fitted, "rf", 2, tmp_path)
    data = pickle.dumps(PicklePayload())
    assert pickle.loads(data) == "unpickled" and ran == ["unpickled"]  # the payload is live
    ran.clear()

    manifest = rewrite(tmp_path, manifest, "model.skops", data)
    with pytest.raises(ArtifactError, match=r"model\.skops is not a skops file"):
        load_model(tmp_path, manifest)
    assert ran == []


def test_the_allowlist_is_exactly_what_the_four_kinds_need(fitted):
    needed = set()
    for (kind, _), (estimator, _, _) in fitted.items():
        if kind != "lightgbm":
            needed |= set(skops.io.get_untrusted_types(data=skops.io.dumps(estimator)))
    assert needed == artifacts.SKOPS_TRUSTED_TYPES


# --------------------------------------------------------------------------- save refusals


def test_save_refuses_class_labels_that_are_not_indices(tmp_path):
    X, y = make_data(2)
    model = RandomForestClassifier(n_estimators=3).fit(X, y + 1)
    with pytest.raises(ValueError, match=r"0\.\.k-1"):
        save_model(model, tmp_path, reference=make_reference(X))


def test_save_needs_a_reference_for_occlusion_models(fitted, tmp_path):
    with pytest.raises(ValueError, match="needs a reference row"):
        save_model(fitted["hgb", 2][0], tmp_path)
    with pytest.raises(ValueError, match="reference must be 5"):
        save_model(fitted["hgb", 2][0], tmp_path, reference=np.zeros(4))


def test_save_refuses_unsupported_estimators(tmp_path):
    with pytest.raises(ValueError, match="save_model supports"):
        save_model(StandardScaler(), tmp_path)


def test_a_reference_with_nan_round_trips(fitted, tmp_path):
    estimator, X, _ = fitted["rf", 2]
    reference = make_reference(X)
    reference[4] = np.nan
    predictor = load_model(tmp_path, save_model(estimator, tmp_path, reference=reference))
    assert isinstance(predictor, SklearnPredictor)
    np.testing.assert_array_equal(predictor.reference, reference)


# --------------------------------------------------------------------------- JSON helpers


def test_write_json_is_sorted_strict_and_hashed(tmp_path):
    digest = write_json(tmp_path / "e.json", {"b": np.float64(0.5), "a": np.arange(2), "c": [np.int64(3)]})
    assert digest == sha256_file(tmp_path / "e.json")
    text = (tmp_path / "e.json").read_text()
    assert text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [0, 1], "b": 0.5, "c": [3]}
    with pytest.raises(ValueError):
        write_json(tmp_path / "nan.json", {"auc": float("nan")})
    assert not (tmp_path / "nan.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["e.json"]  # no temp file left behind


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1.0, 2.0, float("inf")]},
        {"a": {"b": [0.5, {"c": float("-inf")}]}},
        {"a": np.array([0.1, np.nan])},
        {"a": (1, np.float32("nan"))},
        [1e308, 1e308, float("nan")],
    ],
)
def test_json_refuses_nan_and_infinities_anywhere(value):
    for compact in (False, True):
        with pytest.raises(ValueError, match="not JSON compliant"):
            json_bytes(value, compact=compact)


def test_json_writes_what_the_stdlib_reads_back_equal():
    value = {
        "tables": {"t": [0.0, 4.999999999999449e-05, 1e-07, 1e308, 1e308, -0.0]},
        "big": 2**70,
        "é": "\u2028",
    }
    assert json.loads(json_bytes(value)) == value
    assert json_bytes(value).endswith(b"}\n") and b'\n  "big": ' in json_bytes(value)  # sorted, indented
    for small in ({**value, "big": 2**60}, value):  # orjson, then the stdlib's fallback
        compact = json_bytes(small, compact=True)
        assert json.loads(compact) == small
        assert compact.startswith(b'{"big":') and b" " not in compact and b"\n" not in compact
    with pytest.raises(TypeError):
        json_bytes({"when": datetime.now(UTC)})  # no JSON form: refused, not written as text
