"""The heuristic sampler DUS-H (docs/method.md section 4), free of Gymnasium.

From the cumulative scores ``S_t`` of the monitor, a lagging modality gets
more examples in proportion to how far it lags:

    n_j = B * (1 - lam * d_t(j) / mean_k S_t(k)),   d_t(j) = S_t(j) - mean_k S_t(k)

clipped to ``[n_min, n_max]`` and rounded so that the counts sum to exactly
``M * B`` (:func:`~dus_gym.budget.allocate`). ``lam = 0`` is uniform sampling.
:func:`dus_h_quantities` gives the counts for a plain training loop
(:meth:`dus_gym.run.TrainingRun.step`); the env policy ``dus_h`` of
:mod:`dus_gym.policies` picks the action nearest to the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dus_gym.budget import QuantityRule, allocate, default_n_max

__all__ = ["dus_h_quantities", "dus_h_weights", "gap_weights"]


def dus_h_weights(scores: Sequence[float] | np.ndarray, lam: float = 1.0) -> np.ndarray:
    """The unnormalised DUS-H shares ``1 - lam * d / mean(S)``, shape ``(..., M)``.

    Args:
        scores: cumulative scores ``S_t``, shape ``(..., M)``, in [0, 1].
        lam: strength >= 0.

    Returns:
        float64 weights, floored at 1e-3 (a modality far ahead still gets its
        ``n_min``); all ones while every score is zero (before any training).
    """
    if lam < 0:
        raise ValueError(f"dus_h: lam must be >= 0, got {lam}")
    S = np.asarray(scores, dtype=np.float64)
    mean = S.mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(mean > 0, 1.0 - lam * (S - mean) / mean, 1.0)
    return np.maximum(w, 1e-3)


def dus_h_quantities(
    scores: Sequence[float] | np.ndarray, base_batch: int, lam: float = 1.0, n_min: int = QuantityRule.n_min,
    n_max: int | None = None,
) -> np.ndarray:
    """The DUS-H counts (fixed budget) of the cumulative scores ``S_t``.

    Args:
        scores: ``S_t``, shape ``(M,)``, in [0, 1] (``StepReport.scores`` or
            ``run.monitor.cumulative``).
        base_batch: B.
        lam: strength >= 0; 0 is uniform.
        n_min, n_max: bounds on each count (default 1 and
            :func:`~dus_gym.budget.default_n_max`, 3B).

    Returns:
        int64 counts of shape ``(M,)`` summing to ``M * B``; uniform before any
        score exists (all zero).
    """
    S = np.asarray(scores, dtype=np.float64)
    if S.ndim != 1 or not np.all(np.isfinite(S)):
        raise ValueError(f"dus_h: scores must be a finite vector (M,), got {S.tolist()}")
    n_max = default_n_max(base_batch) if n_max is None else n_max
    return allocate(dus_h_weights(S, lam), len(S) * base_batch, n_min, n_max)


def gap_weights(
    train_loss: Sequence[float] | np.ndarray,
    val_branch_accuracy: Sequence[float] | np.ndarray,
    margin: float = 0.15,
    width: float = 0.2,
) -> np.ndarray:
    """The generalisation-gap rule: halve the share of a modality that fits its training data far
    better than it generalises (a shortcut, or memorised noise), leave the others alone.

    The gap of modality j is its training fit minus its held-out fit,
    ``g_j = exp(-train_loss_j) - val_branch_accuracy_j`` (the geometric-mean true-class probability
    over the last step's training batches against its branch's validation accuracy, both in [0, 1]).
    Only the excess over the smallest gap matters, ``e_j = g_j - min_k g_k``: a modality ``margin``
    ahead of the others starts losing weight, and ``margin + width`` ahead it has half:
    ``w_j = 2 ** -clip((e_j - margin) / width, 0, 1)``. Unlike DUS-H it does nothing when one modality
    merely learns faster or carries more information, which is where rebalancing costs accuracy.

    Args:
        train_loss: per-modality training cross-entropy in nats, shape ``(..., M)``, >= 0.
        val_branch_accuracy: per-modality validation accuracy of each branch, shape ``(..., M)``, in [0, 1].
        margin, width: in accuracy units (> 0).

    Returns:
        float64 weights in [0.5, 1], shape ``(..., M)``; all ones while the gaps are within ``margin``.
    """
    if not (margin >= 0 and width > 0):
        raise ValueError(f"gap: margin must be >= 0 and width > 0, got margin={margin}, width={width}")
    gap = np.exp(-np.asarray(train_loss, dtype=np.float64)) - np.asarray(val_branch_accuracy, dtype=np.float64)
    excess = gap - gap.min(axis=-1, keepdims=True)
    return 2.0 ** -np.clip((excess - margin) / width, 0.0, 1.0)
