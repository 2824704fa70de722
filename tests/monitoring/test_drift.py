"""Reference profiles and drift tests: the profile reproduces scipy on the raw data, the default rule
picks Evidently's tests, drifted columns are flagged and undrifted ones are not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from assay.errors import ArtifactError, SpecError
from assay.modelling.profile import (
    MAX_EXACT_VALUES,
    Profile,
    build_profile,
    check_profile,
    column_profile,
)
from assay.modelling.spec import FeatureMonitorSpec
from assay.monitoring import drift
from assay.registry.schema import Feature, FeatureSchema


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- profiles -------------------------------------------------------------------------------


def test_an_exact_profile_is_the_column_itself() -> None:
    column = rng().poisson(3.0, 800).astype(float)
    column[::50] = np.nan
    p = column_profile("x", "numeric", column)
    present = column[np.isfinite(column)]
    assert p.exact and p.n == len(present) and p.missing == 16
    assert np.array_equal(np.sort(p.samples), np.sort(present))
    assert p.mean == pytest.approx(present.mean()) and p.std == pytest.approx(present.std())


def test_a_sketch_keeps_the_mean_and_approximates_distances() -> None:
    column = rng(1).pareto(1.5, 30_000)  # heavy-tailed: the tail is what quantiles would lose
    p = column_profile("x", "numeric", column)
    assert not p.exact and len(p.values) <= MAX_EXACT_VALUES
    assert float(np.average(p.values, weights=p.counts)) == pytest.approx(column.mean(), rel=1e-9)
    current = rng(2).pareto(1.5, 3000) * 1.2
    exact = stats.wasserstein_distance(column, current) / column.std()
    assert drift.statistic("wasserstein", p, drift.Current.of(current)) == pytest.approx(exact, rel=0.02)


def test_profiles_are_checked_when_read() -> None:
    schema = FeatureSchema([Feature("a", "numeric"), Feature("b", "categorical", ["x", "y"])])
    X = np.column_stack([rng().normal(size=200), rng().integers(0, 2, 200)]).astype(float)
    proba = np.column_stack([1 - (p := rng().random(100)), p])
    y = np.where(rng().random(100) < p, "yes", "no")
    profile = build_profile(schema, X, proba, y, ["no", "yes"], "yes", decision_threshold=0.5)
    assert Profile.from_dict(profile).features[1].labels == ["x", "y"]
    broken = {
        **profile,
        "features": [{**profile["features"][0], "counts": [-1] * len(profile["features"][0]["values"])}],
    }
    with pytest.raises(ArtifactError, match=r"features\[0\]"):
        check_profile(broken)
    with pytest.raises(ArtifactError, match="format"):
        check_profile({**profile, "format": 99})
    with pytest.raises(SpecError, match=r"monitoring\.features\.nope"):
        build_profile(
            schema, X, proba, y, ["no", "yes"], "yes", decision_threshold=0.5, monitored={"nope": {}}
        )


# --- tests against scipy on raw data ------------------------------------------------------------


def test_statistics_equal_scipy_on_the_raw_columns() -> None:
    ref_raw = rng(3).normal(0, 1, 900)
    cur_raw = rng(4).normal(0.2, 1, 400)
    ref = column_profile("x", "numeric", ref_raw)
    cur = drift.Current.of(cur_raw)
    assert drift.statistic("ks", ref, cur) == pytest.approx(
        stats.ks_2samp(ref_raw, cur_raw).pvalue, rel=1e-12
    )
    assert drift.statistic("wasserstein", ref, cur) == pytest.approx(
        stats.wasserstein_distance(ref_raw, cur_raw) / ref_raw.std(), rel=1e-12
    )
    # Jensen-Shannon over Sturges bins of both columns together, as Evidently bins them.
    edges = np.histogram_bin_edges(np.r_[ref_raw, cur_raw], bins="sturges")
    r = np.histogram(ref_raw, edges)[0] / len(ref_raw)
    c = np.histogram(cur_raw, edges)[0] / len(cur_raw)
    assert drift.statistic("jensenshannon", ref, cur) == pytest.approx(
        distance.jensenshannon(r, c), rel=1e-12
    )

    cats_ref = rng(5).choice([0.0, 1.0, 2.0], 600, p=[0.5, 0.3, 0.2])
    cats_cur = rng(6).choice([0.0, 1.0, 2.0], 300, p=[0.4, 0.3, 0.3])
    ref_c = column_profile("c", "categorical", cats_ref)
    observed = np.array([np.sum(cats_cur == v) for v in (0, 1, 2)], float)
    expected = np.array([np.sum(cats_ref == v) for v in (0, 1, 2)], float) * 300 / 600
    assert drift.statistic("chisquare", ref_c, drift.Current.of(cats_cur)) == pytest.approx(
        stats.chisquare(observed, expected).pvalue, rel=1e-12
    )
    # The two-proportion z-test's p-value.
    b_ref, b_cur = (rng(7).random(700) < 0.3).astype(float), (rng(8).random(500) < 0.4).astype(float)
    p1, p2 = b_ref.mean(), b_cur.mean()
    pooled = (b_ref.sum() + b_cur.sum()) / 1200
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / 700 + 1 / 500))
    assert drift.statistic(
        "z", column_profile("b", "categorical", b_ref), drift.Current.of(b_cur)
    ) == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)


def test_psi_of_identical_columns_is_zero_and_grows_with_a_shift() -> None:
    ref = column_profile("x", "numeric", rng(9).normal(size=5000))
    assert drift.psi(ref, drift.Current.of(ref.samples)) == pytest.approx(0.0, abs=1e-12)
    small = drift.psi(ref, drift.Current.of(rng(10).normal(0.1, 1, 5000)))
    large = drift.psi(ref, drift.Current.of(rng(11).normal(1.0, 1, 5000)))
    assert 0 < small < 0.1 < large


# --- the default rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_ref", "kind", "values", "expected"),
    [
        (800, "numeric", 50, "ks"),
        (800, "numeric", 4, "chisquare"),
        (800, "numeric", 2, "z"),
        (800, "categorical", 3, "chisquare"),
        (800, "categorical", 2, "z"),
        (5000, "numeric", 50, "wasserstein"),
        (5000, "numeric", 4, "jensenshannon"),
        (5000, "categorical", 2, "jensenshannon"),
    ],
)
def test_the_default_test_is_evidentlys(n_ref: int, kind: str, values: int, expected: str) -> None:
    column = rng(12).integers(0, values, n_ref).astype(float)
    assert drift.default_test(column_profile("x", kind, column), drift.Current.of(column[:300])) == expected


def test_distinct_values_are_counted_over_reference_and_window_together() -> None:
    # 5 values in the reference, a 6th only in the window: more than 5 together, so KS.
    ref = column_profile("x", "numeric", rng(13).integers(0, 5, 500).astype(float))
    assert drift.default_test(ref, drift.Current.of(np.array([0.0, 1.0, 7.0]))) == "ks"
    assert drift.default_test(ref, drift.Current.of(np.array([0.0, 1.0, 2.0]))) == "chisquare"


def test_drift_is_flagged_in_shifted_columns_only() -> None:
    schema = FeatureSchema(
        [Feature("a", "numeric"), Feature("b", "numeric"), Feature("c", "boolean"), Feature("d", "numeric")]
    )
    n = 20_000

    def sample(n: int, seed: int, shift_a: float = 0.0, flip_c: float = 0.0) -> np.ndarray:
        g = rng(seed)
        return np.column_stack(
            [
                g.normal(shift_a, 1, n),
                g.exponential(1, n),
                (g.random(n) < 0.2 + flip_c).astype(float),
                g.poisson(5, n),
            ]
        ).astype(float)

    X = sample(n, 20)
    proba = np.column_stack([1 - (p := rng(21).random(500)), p])
    profile = Profile.from_dict(
        build_profile(schema, X, proba, np.where(p > 0.5, "y", "n"), ["n", "y"], "y", decision_threshold=0.5)
    )
    outputs = np.column_stack([p, (p >= 0.5).astype(float)])
    for seed in range(5):  # undrifted windows: nothing flagged
        w = drift.window_drift(profile, sample(2000, 100 + seed), outputs)
        assert w.judged and w.drifted_features == [] and w.dataset_drift is False
    w = drift.window_drift(profile, sample(2000, 200, shift_a=0.5, flip_c=0.3), outputs)
    assert w.drifted_features == ["a", "c"] and w.share == 0.5 and w.dataset_drift is True
    assert [c.test for c in w.features] == ["wasserstein", "wasserstein", "jensenshannon", "wasserstein"]
    # A spec's own test and threshold for one feature.
    w = drift.window_drift(
        profile, sample(2000, 201, shift_a=0.05), outputs, features={"a": FeatureMonitorSpec("psi", 0.001)}
    )
    assert w.features[0].test == "psi" and w.features[0].drift is True
    # Too few rows: reported, not judged.
    w = drift.window_drift(profile, sample(20, 202, shift_a=3.0), outputs, min_rows=100)
    assert not w.judged and w.dataset_drift is None and all(c.drift is None for c in w.features)


def test_the_multivariate_check_sees_a_broken_correlation_the_columns_do_not() -> None:
    schema = FeatureSchema([Feature("a", "numeric"), Feature("b", "numeric"), Feature("c", "numeric")])

    def sample(n: int, seed: int, sign: float) -> np.ndarray:
        g = rng(seed)
        a = g.normal(size=n)
        return np.column_stack([a, sign * a + 0.3 * g.normal(size=n), g.normal(size=n)])

    X = sample(20_000, 30, 1.0)
    proba = np.column_stack([1 - (p := rng(31).random(500)), p])
    profile = Profile.from_dict(
        build_profile(schema, X, proba, np.where(p > 0.5, "y", "n"), ["n", "y"], "y", decision_threshold=0.5)
    )
    outputs = np.column_stack([p[:200], (p[:200] >= 0.5).astype(float)])
    same = drift.window_drift(profile, sample(2000, 32, 1.0), outputs)
    assert same.multivariate is not None and same.multivariate["drift"] is False
    flipped = drift.window_drift(profile, sample(2000, 33, -1.0), outputs)
    assert flipped.drifted_features == []  # every column alone looks the same
    assert flipped.multivariate is not None and flipped.multivariate["drift"] is True
