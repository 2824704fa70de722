"""LightGBM's library called directly gives the lightgbm package's own numbers, bit for bit."""

from __future__ import annotations

import lightgbm
import numpy as np
import pytest

from assay.registry import lightgbm_lib
from assay.registry.lightgbm_lib import Booster, LightGBMError


def _text(n_classes: int) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(n_classes)
    X = rng.normal(size=(600, 5))
    X[rng.random(600) < 0.1, 0] = np.nan
    y = (np.nan_to_num(X[:, 0]) + X[:, 1] > 0).astype(int) + (n_classes == 3) * (X[:, 2] > 0.5)
    model = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=7, verbose=-1).fit(X[:400], y[:400])
    return model.booster_.model_to_string(), X[400:]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_predictions_raw_scores_and_contributions_are_the_packages(n_classes):
    text, X = _text(n_classes)
    ours, theirs = Booster(text), lightgbm.Booster(model_str=text)
    assert ours.current_iteration() == theirs.current_iteration() == 30
    for options in (
        {},
        {"raw_score": True},
        {"pred_contrib": True},
    ):
        mine, package = ours.predict(X, **options), theirs.predict(X, num_threads=1, **options)
        assert mine.shape == package.shape
        np.testing.assert_array_equal(mine, package)
    np.testing.assert_array_equal(ours.predict(X[:1]), theirs.predict(X[:1], num_threads=1))
    # A block of the model, read back as a model of its own, predicts what the block did.
    part = Booster(ours.model_to_string(start_iteration=10, num_iteration=5))
    np.testing.assert_array_equal(
        part.predict(X, raw_score=True),
        theirs.predict(X, raw_score=True, start_iteration=10, num_iteration=5),
    )


def test_a_text_the_library_refuses_raises_its_message():
    text, X = _text(2)
    # (Texts that are models in all but detail are refused before the library reads them:
    # ``lightgbm_text`` checks them, as the library aborts the process on some.)
    with pytest.raises(LightGBMError, match="number of classes"):
        Booster("not a model")
    with pytest.raises(LightGBMError, match=r"(?i)feature"):
        Booster(text).predict(X[:, :3])  # three columns for a five-feature model
    with pytest.raises(ValueError, match="one thread"):
        Booster(text).predict(X, num_threads=2)


def test_the_library_is_the_one_the_package_loads():
    from lightgbm.basic import _LIB

    assert lightgbm_lib.library()._name == _LIB._name
