"""Joint training with late fusion, the baseline (docs/method.md section 5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dus_gym.methods.base import Batch, IterationResult, Method, TrainContext, normalised_loss

__all__ = ["JointMethod"]


class JointMethod(Method):
    """Fused logits ``sum_j h_j(phi_j(x_j))``, cross-entropy of the fused logits.

    With quantities n: draw ``P = max_j n_j`` paired examples; modality j is
    present on a random ``n_j`` of them, and an absent modality adds zero
    logits. The modality with the largest count is present on every example,
    so no example is empty. With every ``n_j = B`` this is ordinary joint
    training with a mean-reduced loss.

    Subclasses (``ogm_ge``) change the gradients between backward and step
    by overriding :meth:`modulate_gradients`.
    """

    name = "joint"

    def train_iteration(self, ctx: TrainContext, counts: Sequence[int]) -> IterationResult:
        P = max(counts)
        idx = ctx.draw(P)
        y = ctx.labels[idx]
        fused: torch.Tensor | None = None
        batches: list[Batch] = []  # detached: the hook and the scores only read them
        for j, n in enumerate(counts):
            if n == P:
                rows, rows_idx, rows_y = None, idx, y
            else:
                rows = torch.randperm(P, generator=ctx.generator, device=idx.device)[:n]
                rows_idx, rows_y = idx[rows], y[rows]
            logits = ctx.model.branch_logits(j, ctx.inputs[j][rows_idx])
            batches.append(Batch(logits.detach(), rows_y))
            if rows is None:
                fused = logits if fused is None else fused + logits
            else:
                base = torch.zeros(P, logits.shape[1], device=logits.device) if fused is None else fused
                fused = base.index_add(0, rows, logits)
        assert fused is not None
        loss = normalised_loss(fused, y, ctx.base_batch)
        ctx.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.modulate_gradients(ctx, batches)
        ctx.optimizer.step()
        return IterationResult(loss.detach(), batches)

    def modulate_gradients(
        self, ctx: TrainContext, batches: Sequence[Batch], score: torch.Tensor | None = None
    ) -> None:
        """Hook between backward and the optimizer step; joint leaves gradients alone.

        ``score``: the iteration's ``s_t`` ``(M,)`` if the caller has it; a
        method that needs it computes it from ``batches`` otherwise.
        """

    def fuse(self, branch_logits: torch.Tensor) -> torch.Tensor:
        return branch_logits.sum(dim=-3)
