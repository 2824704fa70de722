"""assay.modelling.significance against scikit-learn, SciPy and brute force: the weighted statistics
equal scikit-learn's on the resampled rows, the bootstrap equals resampling by hand, McNemar equals the
binomial tail, and the corrected t-test is the paired t-test when the correction is zero."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from assay.modelling import significance
from assay.modelling.significance import (
    bootstrap_difference,
    corrected_t_test,
    macro,
    mcnemar,
    resample_weights,
    weighted_average_precision,
    weighted_roc_auc,
)


def _scores(n: int, seed: int, *, ties: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.2
    a = y * 0.8 + rng.normal(0, 1, n)
    b = y * 1.2 + rng.normal(0, 1, n)
    if ties:  # scores on a coarse grid, as trees give
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_statistics_equal_scikit_learn_on_resampled_rows(ties: bool) -> None:
    y, a, _ = _scores(500, 1, ties=ties)
    weights = resample_weights(len(y), 5, np.random.default_rng(7))
    aucs = weighted_roc_auc(y, a, weights)
    aps = weighted_average_precision(y, a, weights)
    for row, auc, ap in zip(weights, aucs, aps, strict=True):
        rows = np.repeat(np.arange(len(y)), row.astype(int))
        assert auc == pytest.approx(roc_auc_score(y[rows], a[rows]), abs=1e-12)
        assert ap == pytest.approx(average_precision_score(y[rows], a[rows]), abs=1e-12)
        # and as scikit-learn's own weights
        assert auc == pytest.approx(roc_auc_score(y, a, sample_weight=row), abs=1e-12)


def test_statistics_are_undefined_without_both_classes() -> None:
    y = np.array([True, True, True])
    assert np.isnan(weighted_roc_auc(y, np.array([0.1, 0.2, 0.3]), np.ones((1, 3)))[0])
    assert np.isnan(weighted_average_precision(~y, np.array([0.1, 0.2, 0.3]), np.ones((1, 3)))[0])


def test_macro_equals_scikit_learn_one_vs_rest() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 400)
    logits = rng.normal(0, 1, (400, 3)) + np.eye(3)[y] * 1.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    auc = macro(weighted_roc_auc)(y, proba, np.ones((1, 400)))[0]
    assert auc == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-12)


@pytest.mark.parametrize("batch_cells", [10_000_000, 300 * 7])  # all resamples at once, or 7 at a time
def test_bootstrap_equals_resampling_by_hand(batch_cells: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(significance, "_BATCH_CELLS", batch_cells)
    y, a, b = _scores(300, 2, ties=True)
    result = bootstrap_difference(weighted_roc_auc, y, a, b, resamples=200, seed=11)
    weights = resample_weights(len(y), 200, np.random.default_rng(11))
    by_hand = []
    for row in weights:
        rows = np.repeat(np.arange(len(y)), row.astype(int))
        by_hand.append(roc_auc_score(y[rows], b[rows]) - roc_auc_score(y[rows], a[rows]))
    low, high = np.quantile(by_hand, [0.025, 0.975])
    assert result.low == pytest.approx(low, abs=1e-12) and result.high == pytest.approx(high, abs=1e-12)
    assert result.difference == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))
    assert result.resamples == 200


def test_bootstrap_finds_a_real_difference_and_not_a_null_one() -> None:
    y, a, b = _scores(3000, 4, ties=False)
    real = bootstrap_difference(weighted_roc_auc, y, a, b, resamples=500)
    assert real.significant and real.low > 0 and real.p_value < 0.01
    same = bootstrap_difference(weighted_average_precision, y, a, a, resamples=200)
    assert not same.significant and same.difference == 0


def test_bootstrap_of_rows_with_a_single_class_is_undefined_not_an_error() -> None:
    y = np.zeros(20, dtype=bool)
    result = bootstrap_difference(weighted_roc_auc, y, np.arange(20.0), np.arange(20.0), resamples=50)
    assert np.isnan(result.difference) and result.resamples == 0 and not result.significant


def test_mcnemar_is_the_exact_binomial_tail_of_the_discordant_rows() -> None:
    rng = np.random.default_rng(5)
    right_a = rng.random(200) < 0.7
    right_b = rng.random(200) < 0.8
    result = mcnemar(right_a, right_b)
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    assert (result.only_a, result.only_b) == (b, c)
    assert result.p_value == pytest.approx(min(1.0, 2 * stats.binom.cdf(min(b, c), b + c, 0.5)))
    assert mcnemar(right_a, right_a).p_value == 1.0


def test_corrected_t_test_is_the_paired_t_test_without_correction_and_wider_with_it() -> None:
    rng = np.random.default_rng(6)
    a = 0.80 + rng.normal(0, 0.01, 10)
    b = a + 0.005 + rng.normal(0, 0.004, 10)
    plain = corrected_t_test(a, b, 0.0)
    reference = stats.ttest_rel(b, a)
    assert plain.t == pytest.approx(reference.statistic) and plain.p_value == pytest.approx(reference.pvalue)
    corrected = corrected_t_test(a, b, 1 / 4)  # 5-fold: n_test / n_train = 1/4
    d = b - a
    expected_t = d.mean() / np.sqrt((1 / 10 + 1 / 4) * d.var(ddof=1))
    assert corrected.t == pytest.approx(expected_t)
    assert corrected.p_value == pytest.approx(2 * stats.t.sf(abs(expected_t), 9))
    assert corrected.p_value > plain.p_value
    with pytest.raises(ValueError):
        corrected_t_test(a[:1], b[:1], 0.25)
