"""Benchmark statistics on inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.stats import describe, iqm, probability_of_improvement, stratified_bootstrap_ci


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    # Outliers in the outer quartiles do not move it.
    assert iqm([-1000, 2, 3, 4, 5, 6, 7, 1000]) == pytest.approx(4.5)
    assert iqm([[1, 2, 3, 4], [10, 20, 30, 40]], axis=1) == pytest.approx([2.5, 25.0])


def test_mean_interval_matches_the_normal_theory_interval() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 1.0, size=400)
    ci = stratified_bootstrap_ci([x], "mean", n_resamples=4000, seed=0)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert ci.estimate == pytest.approx(x.mean())
    assert ci.low == pytest.approx(x.mean() - half, abs=0.02)
    assert ci.high == pytest.approx(x.mean() + half, abs=0.02)


def test_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(2)
    covered = 0
    trials = 200
    for t in range(trials):
        x = rng.exponential(1.0, size=40)  # skewed; true mean 1
        ci = stratified_bootstrap_ci([x], "mean", n_resamples=500, seed=t)
        covered += ci.low <= 1.0 <= ci.high
    assert 0.88 <= covered / trials <= 0.99


def test_stratified_resampling_keeps_each_stratum_whole() -> None:
    # Two strata of 10: all zeros, and ones (with one tiny wiggle so resampling has something to vary).
    zeros = np.zeros(10)
    ones = np.ones(10)
    ones[-1] = 1.001
    stratified = stratified_bootstrap_ci([zeros, ones], "mean", seed=0)
    # Each resample keeps 10 zeros and 10 ones-ish: the pooled mean stays at 0.5 (up to the wiggle).
    assert stratified.low >= 0.5 and stratified.high <= 0.5 + 0.001 / 2
    # Pooled into one stratum, resamples mix the two groups freely: a wide interval.
    pooled = stratified_bootstrap_ci([np.concatenate([zeros, ones])], "mean", seed=0)
    assert pooled.high - pooled.low > 0.3


def test_degenerate_inputs() -> None:
    constant = stratified_bootstrap_ci([[0.7] * 5], "iqm")
    assert (constant.estimate, constant.low, constant.high) == pytest.approx((0.7, 0.7, 0.7))
    single = stratified_bootstrap_ci([[0.4]], "mean")
    assert single.estimate == 0.4 and np.isnan(single.low) and np.isnan(single.high)
    assert single.format() == "40.0"
    with pytest.raises(ValueError, match="unknown statistic 'median'"):
        stratified_bootstrap_ci([[1.0, 2.0]], "median")
    with pytest.raises(ValueError, match="at least one value"):
        stratified_bootstrap_ci([[1.0], []], "mean")
    with pytest.raises(ValueError, match="finite"):
        stratified_bootstrap_ci([[1.0, float("nan")]], "mean")


def test_probability_of_improvement_known_answers() -> None:
    assert probability_of_improvement([5, 6, 7], [1, 2, 3]).estimate == 1.0
    assert probability_of_improvement([1, 2, 3], [5, 6, 7]).estimate == 0.0
    assert probability_of_improvement([1, 2, 3], [1, 2, 3]).estimate == pytest.approx(0.5)
    # x = [1, 3] vs y = [2]: one win, one loss -> 0.5; x = [2, 3] vs y = [2]: one tie, one win -> 0.75.
    assert probability_of_improvement([1, 3], [2]).estimate == pytest.approx(0.5)
    assert probability_of_improvement([2, 3], [2]).estimate == pytest.approx(0.75)
    ci = probability_of_improvement(np.arange(10) + 0.5, np.arange(10), seed=0)
    assert ci.estimate == pytest.approx(0.55)  # 55 of 100 pairs won
    assert ci.low < 0.55 < ci.high


def test_describe_reports_mean_and_iqm() -> None:
    d = describe([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 10.0])
    assert d["n"] == 8
    assert d["mean"] == pytest.approx(12.8 / 8)
    assert d["iqm"] == pytest.approx(0.45)
    assert d["iqm_low"] <= d["iqm"] <= d["iqm_high"]


def test_the_statistics_agree_with_rliable_on_one_table() -> None:
    # rliable (Agarwal et al. 2021) is the field's library for these; benchmarks/stats.py is kept (scipy only,
    # where rliable would need the clients extra and pandas < 3) and held to it here: the same IQM and
    # probability of improvement, and stratified-bootstrap percentile bounds that differ only by resampling
    # noise (5000 resamples each: about 2% of the interval's width; measured 0.002 of 0.115).
    pytest.importorskip("rliable")
    from rliable import library as rly
    from rliable import metrics
    rng = np.random.default_rng(0)
    scores = rng.beta(5, 2, size=(10, 4))  # runs x tasks, as rliable takes a table
    estimate, bounds = rly.get_interval_estimates(
        {"p": scores}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=5000
    )
    ours = stratified_bootstrap_ci([scores[:, j] for j in range(4)], "iqm", n_resamples=5000)
    assert ours.estimate == pytest.approx(float(estimate["p"][0]), abs=1e-12)
    low, high = bounds["p"].ravel()
    width = high - low
    assert abs(ours.low - low) < 0.05 * width and abs(ours.high - high) < 0.05 * width
    x, y = rng.beta(5, 2, size=10), rng.beta(2, 2, size=12)
    theirs = float(metrics.probability_of_improvement(x[:, None], y[:, None]))
    assert probability_of_improvement(x, y).estimate == pytest.approx(theirs)
