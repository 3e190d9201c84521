"""Alternating unimodal adaptation, MLA (Zhang et al., CVPR 2024; docs/method.md section 5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dus_gym.methods.base import Batch, IterationResult, Method, TrainContext, normalised_loss

__all__ = ["MLAMethod"]


class MLAMethod(Method):
    """One head ``h`` shared by all modalities, trained on one modality at a time.

    Each iteration visits the modalities in turn; modality j draws its own
    batch of ``n_j`` examples and takes an optimizer step on the
    cross-entropy of ``h(phi_j(x_j))`` (sum / B), updating ``phi_j`` and ``h``.

    At test time the branches fuse with per-example weights that favour the
    modality whose prediction has lower entropy: ``w_j = softmax_j(-H_j)``,
    fused logits ``sum_j w_j * logits_j``.

    **Gradient projection** (``projection=True``; off by default). MLA
    protects what the shared head learned from the other modalities with an
    orthogonal-weight-modification (OWM) projection of the head's gradient.
    Here the head ``h(x) = W x + b`` is read as ``W~ x~`` with the augmented
    feature ``x~ = [x, 1]`` (so the bias is protected too). For each modality
    k the method keeps a running estimate of the correlation of its augmented
    features, ``R_k <- beta R_k + (1 - beta) X~_k^T X~_k / n_k`` (the first
    batch sets it), from the features of k's own training batches. When the
    head is updated on modality j, its gradient ``G~ = [dW, db]`` (shape
    ``(C, D + 1)``) becomes ``G~ P_j`` with

        R = sum_{k != j, already visited} R_k
        P_j = a (a I + R)^{-1},    a = projection_alpha * trace(R) / (D + 1)

    ``P_j`` shrinks every direction of the other modalities' features by
    ``a / (a + lambda)`` (``lambda`` the direction's eigenvalue of R) and
    leaves directions they never use alone, so an update on modality j barely
    changes the head's response ``W~ x~`` to the other modalities' features.
    ``a`` is relative to R's mean eigenvalue, so it does not depend on the
    features' scale. The preservation is exact (up to ``a``) with plain SGD;
    momentum, Adam's per-coordinate scaling and weight decay act after the
    projection and weaken it, as in the original. The modality visited first
    in the very first iteration has nothing to protect (``P = I``); from then
    on "earlier" modalities are all the others, since they take turns.

    Args:
        projection: project the head's gradient (see above).
        projection_alpha: relative regulariser ``> 0`` of the projection;
            smaller protects more strongly (and leaves the head less room).
        projection_beta: decay in [0, 1) of the running feature correlations;
            features drift as the encoders train, so old batches are forgotten.
    """

    name = "mla"
    shared_head = True

    def __init__(self, projection: bool = False, projection_alpha: float = 1e-3, projection_beta: float = 0.9) -> None:
        if not projection_alpha > 0.0:
            raise ValueError(f"mla: projection_alpha must be > 0, got {projection_alpha}")
        if not 0.0 <= projection_beta < 1.0:
            raise ValueError(f"mla: projection_beta must lie in [0, 1), got {projection_beta}")
        self.projection = bool(projection)
        self.projection_alpha = float(projection_alpha)
        self.projection_beta = float(projection_beta)
        self.feature_correlation: dict[int, torch.Tensor] = {}
        """``R_k``, ``(D + 1, D + 1)`` device tensors, for the modalities visited so far"""

    def train_iteration(self, ctx: TrainContext, counts: Sequence[int]) -> IterationResult:
        batches: list[Batch] = []
        total = torch.zeros((), device=ctx.labels.device)
        for j, n in enumerate(counts):
            idx = ctx.draw(n)
            y = ctx.labels[idx]
            head = ctx.model.head(j)
            features = ctx.model.features(j, ctx.inputs[j][idx])
            logits = head(features)
            loss = normalised_loss(logits, y, ctx.base_batch)
            ctx.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.projection:
                self._project_head_gradient(head, j)
                self._record_features(j, features.detach())
            ctx.optimizer.step()
            total = total + loss.detach()
            batches.append(Batch(logits.detach(), y))
        return IterationResult(total, batches)

    def projector(self, j: int) -> torch.Tensor | None:
        """``P_j`` of the class docstring, ``(D + 1, D + 1)``; None before any other modality was seen."""
        others = [r for k, r in self.feature_correlation.items() if k != j]
        if not others:
            return None
        R = torch.stack(others).sum(dim=0)
        eye = torch.eye(R.shape[0], device=R.device, dtype=R.dtype)
        a = self.projection_alpha * R.diagonal().mean()
        # solve_ex: no error check, hence no host synchronisation; a I + R is
        # symmetric positive definite (a > 0: the bias entry of R is >= 1).
        P, _ = torch.linalg.solve_ex(a * eye + R, a * eye)
        return P

    def _project_head_gradient(self, head: nn.Module, j: int) -> None:
        if not isinstance(head, nn.Linear) or head.bias is None:
            raise TypeError(f"mla projection needs a linear head with a bias, got {head}")
        P = self.projector(j)
        if P is None or head.weight.grad is None or head.bias.grad is None:
            return
        grad = torch.cat([head.weight.grad, head.bias.grad[:, None]], dim=1) @ P
        head.weight.grad.copy_(grad[:, :-1])
        head.bias.grad.copy_(grad[:, -1])

    def _record_features(self, j: int, features: torch.Tensor) -> None:
        x = torch.cat([features.float(), torch.ones(features.shape[0], 1, device=features.device)], dim=1)
        corr = x.T @ x / x.shape[0]
        if j in self.feature_correlation:
            beta = self.projection_beta
            corr = beta * self.feature_correlation[j] + (1.0 - beta) * corr
        self.feature_correlation[j] = corr

    def fuse(self, branch_logits: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(branch_logits, dim=-1)
        entropy = -(log_p.exp() * log_p).sum(dim=-1)  # (..., M, n)
        weights = torch.softmax(-entropy, dim=-2)  # over modalities, per example
        return (weights[..., None] * branch_logits).sum(dim=-3)
