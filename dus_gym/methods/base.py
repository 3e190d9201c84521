"""What every method shares: the per-iteration context, its result, the interface.

A method trains the model for one iteration given per-modality quantities
``n_j`` and says how branch logits fuse at test time. The loop around it
(sampling, the monitor, evaluation) lives once, in :mod:`dus_gym.run`.

Every training loss is a *sum* over the examples drawn divided by the base
batch size B (METHOD.md section 3): with ``n_j = B`` it is the ordinary mean.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from dus_gym.models import MultimodalModel

__all__ = ["Batch", "IterationResult", "Method", "TrainContext", "branch_stats"]


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
        branch_loss: ``(M,)``, mean cross-entropy of each modality's own logits
            on its examples.
        score: ``(M,)``, ``s_t(j)`` of METHOD.md section 2, in [0, 1].
    """

    loss: torch.Tensor
    branch_loss: torch.Tensor
    score: torch.Tensor


def branch_stats(batches: Sequence[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-modality mean cross-entropy and true-class score ``s_t(j)``, each shape ``(M,)``.

    Both come from one log-softmax per modality: the loss is ``-mean log p_y``
    and the score ``mean p_y`` (METHOD.md section 2), as in
    :func:`~dus_gym.monitor.true_class_score`.
    """
    if all(b.labels is batches[0].labels for b in batches):
        # Same examples in every branch (uniform joint training): one batched pass.
        logits = torch.stack([b.logits.detach() for b in batches])  # (M, n, C)
        labels = batches[0].labels.expand(len(batches), -1)[..., None]  # (M, n, 1)
        log_py = torch.log_softmax(logits, dim=2).gather(2, labels)
        return -log_py.mean(dim=(1, 2)), log_py.exp().mean(dim=(1, 2))
    log_pys = [torch.log_softmax(b.logits.detach(), dim=1).gather(1, b.labels[:, None]) for b in batches]
    return torch.stack([-lp.mean() for lp in log_pys]), torch.stack([lp.exp().mean() for lp in log_pys])


class Method(ABC):
    """One multimodal training method. Subclasses set ``name`` and ``shared_head``."""

    name: ClassVar[str]
    shared_head: ClassVar[bool] = False

    @abstractmethod
    def train_iteration(self, ctx: TrainContext, counts: Sequence[int]) -> IterationResult:
        """Train one iteration with ``counts[j]`` examples of modality j."""

    @abstractmethod
    def fuse(self, branch_logits: torch.Tensor) -> torch.Tensor:
        """Fused logits ``(N, C)`` from stacked branch logits ``(M, N, C)``."""
