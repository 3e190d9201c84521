"""Alternating unimodal adaptation, MLA (Zhang et al., CVPR 2024; METHOD.md section 5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from dus_gym.methods.base import Batch, IterationResult, Method, TrainContext, branch_stats

__all__ = ["MLAMethod"]


class MLAMethod(Method):
    """One head ``h`` shared by all modalities, trained on one modality at a time.

    Each iteration visits the modalities in turn; modality j draws its own
    batch of ``n_j`` examples and takes an optimizer step on the
    cross-entropy of ``h(phi_j(x_j))`` (sum / B), updating ``phi_j`` and ``h``.

    At test time the branches fuse with per-example weights that favour the
    modality whose prediction has lower entropy: ``w_j = softmax_j(-H_j)``,
    fused logits ``sum_j w_j * logits_j``.
    """

    name = "mla"
    shared_head = True

    def train_iteration(self, ctx: TrainContext, counts: Sequence[int]) -> IterationResult:
        batches: list[Batch] = []
        total = torch.zeros((), device=ctx.labels.device)
        for j, n in enumerate(counts):
            idx = ctx.draw(n)
            y = ctx.labels[idx]
            logits = ctx.model.branch_logits(j, ctx.inputs[j][idx])
            loss = F.cross_entropy(logits, y, reduction="sum") / ctx.base_batch
            ctx.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ctx.optimizer.step()
            total = total + loss.detach()
            batches.append(Batch(logits, y))
        branch_loss, score = branch_stats(batches)
        return IterationResult(total, branch_loss, score)

    def fuse(self, branch_logits: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(branch_logits, dim=-1)
        entropy = -(log_p.exp() * log_p).sum(dim=-1)  # (M, N)
        weights = torch.softmax(-entropy, dim=0)  # over modalities, per example
        return (weights[..., None] * branch_logits).sum(dim=0)
