"""From an action to integer per-modality quantities (docs/method.md section 3).

An action says, per modality, a *weight* ``w_j`` in ``[1/max_ratio,
max_ratio]`` (discrete level ``l`` of ``L``: ``w = max_ratio ** (2 l / (L - 1)
- 1)``; continuous ``a`` in [-1, 1]: ``w = max_ratio ** a``; the middle level
and ``a = 0`` are ``w = 1``).

- **fixed budget** (default): the weights are shares of the total ``M * B``;
  only their ratios matter, and the counts always sum to exactly ``M * B``.
- **free budget**: ``n_j = B * w_j`` independently (the env charges a cost
  per extra sample).

Either way each ``n_j`` lies in ``[n_min, n_max]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["allocate", "default_n_max", "QuantityRule", "BUDGET_MODES", "ACTION_TYPES"]

BUDGET_MODES = ("fixed", "free")
ACTION_TYPES = ("discrete", "continuous")


def default_n_max(base_batch: int) -> int:
    """The default upper bound on a modality's count per iteration: ``3 * B`` (docs/method.md section 3)."""
    return 3 * base_batch


def allocate(desired: Sequence[float] | np.ndarray, total: int, n_min: int, n_max: int) -> np.ndarray:
    """Integer counts with an exact total, proportional to ``desired``, within bounds.

    Scale ``desired`` to ``total``; clip to ``[n_min, n_max]``; hand what is left
    over or missing to the modalities not at a bound, in proportion to their
    desired amount, until no bound is broken (water-filling); round by
    largest remainder so that the counts sum to ``total`` exactly.

    Args:
        desired: shape ``(M,)``, non-negative, not all zero.
        total: the exact sum of the result, ``M * n_min <= total <= M * n_max``.

    Returns:
        int64 array of shape ``(M,)`` summing to ``total``.
    """
    d = np.asarray(desired, dtype=np.float64)
    m = len(d)
    if d.ndim != 1 or m == 0 or not np.all(np.isfinite(d)) or np.any(d < 0) or d.sum() <= 0:
        raise ValueError(f"allocate: desired must be non-negative finite numbers, not all zero; got {d.tolist()}")
    if not 1 <= n_min <= n_max:
        raise ValueError(f"allocate: need 1 <= n_min <= n_max, got n_min={n_min}, n_max={n_max}")
    if not m * n_min <= total <= m * n_max:
        raise ValueError(f"allocate: total {total} cannot be split into {m} counts in [{n_min}, {n_max}]")
    # Water-filling: find the scale lam with sum_j clip(lam * d_j, n_min, n_max)
    # == total (the sum is continuous and non-decreasing in lam), then spread
    # the exact remainder over the modalities strictly inside the bounds.
    lo, hi = 0.0, n_max / d[d > 0].min()
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.clip(mid * d, n_min, n_max).sum() < total else (lo, mid)
    x = np.clip(hi * d, n_min, n_max)
    inside = (x > n_min) & (x < n_max)
    if inside.any():
        x[inside] = (total - x[~inside].sum()) * d[inside] / d[inside].sum()
        x = np.clip(x, n_min, n_max)
    counts = np.floor(x + 1e-9).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        room = counts < n_max
        order = np.argsort(-(x - counts) + np.where(room, 0.0, np.inf), kind="stable")
        counts[order[:short]] += 1
    return counts


@dataclass(frozen=True)
class QuantityRule:
    """Maps actions to per-modality quantities (and back, for built-in policies).

    Attributes:
        num_modalities: M.
        base_batch: B, examples per modality per iteration under uniform sampling.
        budget: ``"fixed"`` (sum of counts = M * B) or ``"free"``.
        action_type: ``"discrete"`` (``MultiDiscrete([levels] * M)``) or
            ``"continuous"`` (``Box(-1, 1, (M,))``).
        levels: number of discrete levels (odd, so that uniform is a level).
        max_ratio: the largest weight; the smallest is its inverse.
        n_min, n_max: bounds on each count.
    """

    num_modalities: int
    base_batch: int
    budget: str = "fixed"
    action_type: str = "discrete"
    levels: int = 9
    max_ratio: float = 4.0
    n_min: int = 1
    n_max: int = 0
    """0 (or None): :func:`default_n_max`, 3B"""

    def __post_init__(self) -> None:
        if self.budget not in BUDGET_MODES:
            raise ValueError(f"unknown budget mode {self.budget!r}; valid modes: {list(BUDGET_MODES)}")
        if self.action_type not in ACTION_TYPES:
            raise ValueError(f"unknown action type {self.action_type!r}; valid types: {list(ACTION_TYPES)}")
        if self.levels < 3 or self.levels % 2 == 0:
            raise ValueError(f"levels must be odd and >= 3 (so that uniform is a level), got {self.levels}")
        if self.max_ratio <= 1:
            raise ValueError(f"max_ratio must be > 1, got {self.max_ratio}")
        if self.base_batch < 1:
            raise ValueError(f"base_batch must be >= 1, got {self.base_batch}")
        if not self.n_max:
            object.__setattr__(self, "n_max", default_n_max(self.base_batch))
        if not 1 <= self.n_min <= self.base_batch <= self.n_max:
            raise ValueError(
                f"need 1 <= n_min <= base_batch <= n_max, got n_min={self.n_min}, "
                f"base_batch={self.base_batch}, n_max={self.n_max}"
            )

    @property
    def total(self) -> int:
        """M * B: the fixed budget per iteration."""
        return self.num_modalities * self.base_batch

    @property
    def uniform_action(self) -> np.ndarray:
        return self.action_for_weights(np.ones(self.num_modalities))

    def weights(self, action: np.ndarray) -> np.ndarray:
        """Per-modality weights in ``[1/max_ratio, max_ratio]`` of a valid action."""
        a = np.asarray(action, dtype=np.float64)
        exponent = 2.0 * a / (self.levels - 1) - 1.0 if self.action_type == "discrete" else a
        return self.max_ratio ** exponent

    def quantities(self, action: np.ndarray) -> np.ndarray:
        """The integer counts ``n_j`` (int64, shape ``(M,)``) of a valid action.

        Discrete actions are few (``levels ** M``) and the water-filling search
        costs about 2% of a digits step: their counts are computed once each.
        """
        if self.action_type != "discrete":
            return self.quantities_for_weights(self.weights(action))
        key = tuple(int(a) for a in np.asarray(action).ravel())
        cache: dict[tuple[int, ...], np.ndarray] = self.__dict__.setdefault("_counts_cache", {})
        if key not in cache:
            cache[key] = self.quantities_for_weights(self.weights(action))
        return cache[key].copy()

    def quantities_for_weights(self, weights: np.ndarray) -> np.ndarray:
        if self.budget == "fixed":
            return allocate(weights, self.total, self.n_min, self.n_max)
        return np.clip(np.rint(self.base_batch * np.asarray(weights)), self.n_min, self.n_max).astype(np.int64)

    def action_for_weights(self, weights: Sequence[float] | np.ndarray) -> np.ndarray:
        """The action whose weights are nearest (in log scale) to ``weights``.

        With a fixed budget only ratios matter, so the weights are first
        centred on 1 in log scale (geometric mean 1), which keeps the nearest
        representable ratio.
        """
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.num_modalities,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"weights must be {self.num_modalities} positive finite numbers, got {w.tolist()}")
        log_w = np.log(w) / np.log(self.max_ratio)
        if self.budget == "fixed":
            log_w -= log_w.mean()
        a = np.clip(log_w, -1.0, 1.0)
        if self.action_type == "continuous":
            return a.astype(np.float32)
        target = (a + 1.0) * (self.levels - 1) / 2.0  # fractional levels
        if self.budget == "free":
            return np.rint(target).astype(np.int64)
        # Only differences of levels matter: shift the grid so that rounding
        # keeps the ratios best (rounding each level alone can lose a whole ratio step).
        best, best_err = None, np.inf
        for shift in np.linspace(-0.5, 0.5, 21):
            levels = np.clip(np.rint(target + shift), 0, self.levels - 1)
            err = float(np.sum(((levels - levels.mean()) - (target - target.mean())) ** 2)) + 1e-6 * abs(shift)
            if err < best_err:
                best, best_err = levels, err
        assert best is not None
        return best.astype(np.int64)
