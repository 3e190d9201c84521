"""What every method shares: the per-iteration context, its result, the interface.

A method trains the model for one iteration given per-modality quantities
``n_j`` and says how branch logits fuse at test time. The loop around it
(sampling, the monitor, evaluation) lives once, in :mod:`dus_gym.run`.

Every training loss is a *sum* over the examples drawn divided by the base
batch size B (docs/method.md section 3): with ``n_j = B`` it is the ordinary mean.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F

from dus_gym.models import MultimodalModel
from dus_gym.monitor import loss_and_score

__all__ = [
    "Batch", "IterationResult", "Method", "TrainContext", "branch_stats", "normalised_loss", "stacked_branch_stats",
]


@dataclass
class TrainContext:
    """What a method needs to run one iteration.

    Attributes:
        model: the multimodal model.
        optimizer: its optimizer.
        inputs: per-modality input tensors of the whole dataset, on the device.
        labels: int64 labels of the whole dataset, on the device.
        draw: ``draw(n)`` returns ``n`` dataset indices of training examples.
        generator: the generator for any other randomness (on the device).
        base_batch: B.
    """

    model: MultimodalModel
    optimizer: torch.optim.Optimizer
    inputs: Sequence[torch.Tensor]
    labels: torch.Tensor
    draw: Callable[[int], torch.Tensor]
    generator: torch.Generator
    base_batch: int


@dataclass
class Batch:
    """Rows of one modality's branch in an iteration (for its score and loss)."""

    logits: torch.Tensor  # (n_j, C)
    labels: torch.Tensor  # (n_j,)


@dataclass
class IterationResult:
    """Device tensors (no host synchronisation) describing one iteration.

    Attributes:
        loss: 0-d, the optimised training loss (sum over the drawn examples / B).
        batches: each modality's detached branch logits and labels; the
            per-modality loss and score ``s_t(j)`` derive from them, computed
            for many iterations at once by :func:`stacked_branch_stats` (on
            small models one batched pass per step is measurably cheaper than
            one per iteration).
    """

    loss: torch.Tensor
    batches: list[Batch]

    @property
    def branch_loss(self) -> torch.Tensor:
        """``(M,)``, mean cross-entropy of each modality's own logits on its examples."""
        return branch_stats(self.batches)[0]

    @property
    def score(self) -> torch.Tensor:
        """``(M,)``, ``s_t(j)`` of docs/method.md section 2, in [0, 1]."""
        return branch_stats(self.batches)[1]


def normalised_loss(
    logits: torch.Tensor, labels: torch.Tensor, base_batch: int, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """The training loss of docs/method.md section 3: summed cross-entropy over the drawn examples / B.

    Args:
        logits: ``(..., P, C)``; a leading axis holds the runs of a batch.
        labels: int64 ``(..., P)``.
        base_batch: B.
        valid: optional bool ``(..., P)``, the rows that are drawn examples
            (False: padding of a run with fewer rows than the batch's P).

    Returns:
        ``(...)``, the loss in nats; with ``P = B`` drawn rows it is the mean
        cross-entropy. Padding rows add exactly zero, whatever their logits.
    """
    if valid is None and logits.ndim == 2:
        # One run, every row drawn: cross_entropy's own reduction. reduction="none" and a
        # sum cost 40 us more per iteration on the digits MLPs (4% of a step).
        if len(labels) == base_batch:
            return F.cross_entropy(logits, labels)  # the mean, which is this sum / B bit for bit
        summed = F.cross_entropy(logits, labels, reduction="sum")
    else:
        ce = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none").view(labels.shape)
        if valid is not None:
            ce = torch.where(valid, ce, 0.0)  # where(), not a product: a padded row's logits may be NaN
        summed = ce.sum(dim=-1)
    return summed / base_batch


def stacked_branch_stats(iterations: Sequence[Sequence[Batch]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-iteration, per-modality mean cross-entropy and score ``s_t(j)``.

    Args:
        iterations: K iterations' batches, M per iteration; modality j has the
            same number of rows in every iteration (the counts of one step).

    Returns:
        ``(loss, score)``, each ``(K, M)``, from
        :func:`~dus_gym.monitor.loss_and_score` on each modality's ``(K, n_j, C)``
        stack: one pass per modality for all K iterations.
    """
    losses, scores = [], []
    for j in range(len(iterations[0])):
        logits = torch.stack([it[j].logits for it in iterations])  # (K, n_j, C)
        labels = torch.stack([it[j].labels for it in iterations])  # (K, n_j)
        loss, score = loss_and_score(logits, labels)
        losses.append(loss)
        scores.append(score)
    return torch.stack(losses, dim=1), torch.stack(scores, dim=1)


def branch_stats(batches: Sequence[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-modality mean cross-entropy and score of one iteration, each ``(M,)``."""
    loss, score = stacked_branch_stats([batches])
    return loss[0], score[0]


class Method(ABC):
    """One multimodal training method. Subclasses set ``name`` and ``shared_head``."""

    name: ClassVar[str]
    shared_head: ClassVar[bool] = False

    @abstractmethod
    def train_iteration(self, ctx: TrainContext, counts: Sequence[int]) -> IterationResult:
        """Train one iteration with ``counts[j]`` examples of modality j."""

    @abstractmethod
    def fuse(self, branch_logits: torch.Tensor) -> torch.Tensor:
        """Fused logits ``(..., n, C)`` from stacked branch logits ``(..., M, n, C)``
        (any leading axes, e.g. the runs of a batch)."""
