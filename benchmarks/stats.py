"""Statistics of benchmark results: IQM, stratified-bootstrap intervals, probability of improvement.

The resampling is scipy's (:func:`scipy.stats.bootstrap`), not hand-written.
Passing several samples to it resamples each one independently with its own
size kept: that is exactly the *stratified* bootstrap of Agarwal et al. (2021,
"Deep RL at the edge of the statistical precipice", the ``rliable`` library),
where each stratum is one task (here: one dataset or instance family) and the
runs of a stratum are resampled among themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# scipy is imported inside the functions: modules that only need Interval (the
# benchmark workers) start without it.

__all__ = ["Interval", "iqm", "mean", "stratified_bootstrap_ci", "probability_of_improvement", "describe"]

Statistic = Callable[[np.ndarray], float]


def iqm(values: ArrayLike, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end, scipy's ``trim_mean``)."""
    from scipy import stats

    return np.asarray(stats.trim_mean(np.asarray(values, dtype=np.float64), 0.25, axis=axis))


def mean(values: ArrayLike, axis: int = -1) -> np.ndarray:
    """The arithmetic mean along ``axis``."""
    return np.asarray(np.mean(np.asarray(values, dtype=np.float64), axis=axis))


STATISTICS: dict[str, Callable[..., np.ndarray]] = {"iqm": iqm, "mean": mean}


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval (``low <= high``; NaN when undefined)."""

    estimate: float
    low: float
    high: float

    def format(self, digits: int = 1, scale: float = 100.0) -> str:
        """``"87.3 [85.1, 89.0]"`` (percent by default); ``"-"`` for a missing estimate."""
        if not np.isfinite(self.estimate):
            return "-"
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return f"{self.estimate * scale:.{digits}f}"
        return f"{self.estimate * scale:.{digits}f} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"


def _as_strata(strata: Sequence[Sequence[float] | np.ndarray], where: str) -> list[np.ndarray]:
    out = [np.asarray(s, dtype=np.float64).ravel() for s in strata]
    if not out or any(len(s) == 0 for s in out):
        raise ValueError(f"{where}: every stratum needs at least one value, got sizes {[len(s) for s in out]}")
    bad = [v for s in out for v in s if not np.isfinite(v)]
    if bad:
        raise ValueError(f"{where}: values must be finite, got {bad[0]!r}")
    return out


def stratified_bootstrap_ci(
    strata: Sequence[Sequence[float] | np.ndarray],
    statistic: str = "iqm",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """The statistic of the pooled values and its stratified-bootstrap percentile interval.

    Args:
        strata: one sequence of values per stratum (a task, a family); a cell
            of the benchmark grid is a single stratum ``[values]``.
        statistic: ``"iqm"`` or ``"mean"``, computed over all strata pooled.
        confidence: level of the two-sided interval, in (0, 1).
        n_resamples: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        The statistic of the data and its interval. With fewer than two values
        in every stratum there is nothing to resample: the interval is NaN.
    """
    from scipy import stats

    where = "stratified_bootstrap_ci"
    if statistic not in STATISTICS:
        raise ValueError(f"{where}: unknown statistic {statistic!r}; valid: {sorted(STATISTICS)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"{where}: confidence must lie in (0, 1), got {confidence}")
    samples = _as_strata(strata, where)
    fn = STATISTICS[statistic]
    estimate = float(fn(np.concatenate(samples)))
    if all(len(s) < 2 for s in samples):
        return Interval(estimate, float("nan"), float("nan"))
    if all(np.all(s == s[0]) for s in samples):
        # Every resample equals the data: the interval is the single value (scipy would warn).
        boot = float(fn(np.concatenate([np.full_like(s, s[0]) for s in samples])))
        return Interval(estimate, boot, boot)

    def pooled(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return fn(np.concatenate(resampled, axis=axis), axis=axis)

    res = stats.bootstrap(
        tuple(samples),
        pooled,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        paired=False,
        rng=np.random.default_rng(seed),
    )
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high))


def probability_of_improvement(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """``P(X > Y) + P(X = Y) / 2`` for a run X of one policy and a run Y of the reference.

    Estimated by the Mann-Whitney U statistic divided by ``len(x) * len(y)``
    (scipy's :func:`~scipy.stats.mannwhitneyu`), with a bootstrap percentile
    interval resampling ``x`` and ``y`` independently. 0.5 means no
    difference; 1 means every run of X beats every run of Y.
    """
    from scipy import stats

    xs, ys = _as_strata([x, y], "probability_of_improvement")

    def poi(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        u = stats.mannwhitneyu(a, b, axis=axis, method="asymptotic").statistic
        return np.asarray(u) / (a.shape[axis] * b.shape[axis])

    estimate = float(poi(xs, ys))
    if len(xs) < 2 or len(ys) < 2:
        return Interval(estimate, float("nan"), float("nan"))
    if np.all(xs == xs[0]) and np.all(ys == ys[0]):
        return Interval(estimate, estimate, estimate)
    res = stats.bootstrap(
        (xs, ys), poi, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
        vectorized=True, paired=False, rng=np.random.default_rng(seed),
    )
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high))


def describe(values: Sequence[float] | np.ndarray, seed: int = 0) -> dict[str, float]:
    """``n``, ``mean``, ``iqm`` and the 95% bootstrap interval of the IQM of one cell's values."""
    v = np.asarray(values, dtype=np.float64)
    ci = stratified_bootstrap_ci([v], "iqm", seed=seed)
    return {"n": float(len(v)), "mean": float(v.mean()), "iqm": ci.estimate, "iqm_low": ci.low, "iqm_high": ci.high}
