"""On-the-fly gradient modulation with generalisation enhancement, OGM-GE
(Peng et al., CVPR 2022; docs/method.md section 5).

Joint training (:class:`~dus_gym.methods.joint.JointMethod`, whose sampling
of the DUS quantities it keeps unchanged) whose dominant modality's encoder
gradients are damped after the backward pass:

    ratio_j = s(j) / mean_{k != j} s(k)
    k_j     = 1 - tanh(alpha * (ratio_j - 1))   if ratio_j > 1, else 1
    g       <- k_j * g + N(0, std(g)^2)          for every encoder parameter of j

**Scores per example, not summed.** The paper compares the true-class
probabilities *summed* over the batch. Under DUS the modalities' batches
differ in size (``n_j`` examples of modality j), so a sum would call the
modality with more examples "dominant" merely because it was given more of
them, and OGM-GE would undo exactly what the sampler decided. The scores here
are the per-example means ``s(j)`` of docs/method.md section 2 (the same ``s_t``
the monitor sees); with equal counts the ratio of means equals the paper's
ratio of sums, so uniform sampling gives the paper's method.

**More than two modalities.** The paper has two, and its ratio is
``s(a) / s(b)``. Here each modality is compared with the mean of the others,
which for M = 2 is the paper's ratio; every modality whose ratio exceeds 1
(it scores above the mean of the rest) is damped, by its own coefficient.

**GE noise.** As in the authors' code, every encoder parameter tensor of
every modality (damped or not) receives zero-mean Gaussian noise whose
standard deviation is that of its own unmodulated gradient (a single-element
tensor, whose std is undefined, gets none). The noise is drawn from the
run's generator (``ctx.generator``), so runs stay reproducible. The heads are
left alone, as in the paper, which modulates the encoders only.

Everything stays on the device: no host synchronisation per iteration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dus_gym.methods.base import Batch, TrainContext, branch_stats
from dus_gym.methods.joint import JointMethod

__all__ = ["OGMGEMethod", "modulate_encoder_gradients", "ogm_coefficients"]


def ogm_coefficients(score: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-modality gradient coefficients ``k_j`` in (0, 1], shape ``(..., M)``.

    Args:
        score: ``(..., M)`` per-example mean true-class probabilities ``s(j)``
            in [0, 1], M >= 2 (a leading axis holds the runs of a batch).
        alpha: modulation strength >= 0; 0 leaves every gradient alone.

    ``ratio_j = s(j) / mean_{k != j} s(k)``; modalities with ``ratio_j > 1``
    get ``1 - tanh(alpha * (ratio_j - 1))``, the others 1.
    """
    m = score.shape[-1] if score.ndim else 0
    if score.ndim < 1 or m < 2:
        raise ValueError(f"ogm_coefficients: score must have shape (..., M) with M >= 2, got {tuple(score.shape)}")
    score = score.detach().float()
    others = (score.sum(dim=-1, keepdim=True) - score) / (m - 1)
    # A floor on the denominator: an untrained branch can give its true class
    # a probability that underflows to 0 in float32.
    ratio = score / others.clamp(min=1e-12)
    damped = 1.0 - torch.tanh(alpha * (ratio - 1.0))
    return torch.where(ratio > 1.0, damped, torch.ones_like(ratio))


def modulate_encoder_gradients(
    encoder_grads: Sequence[Sequence[torch.Tensor]],
    coeff: torch.Tensor,
    noise: bool,
    generators: Sequence[torch.Generator],
) -> None:
    """OGM-GE's modulation of the encoders' gradients, in place, for N runs (a single run: N = 1).

    Args:
        encoder_grads: per modality j, the gradients of encoder j's parameters
            in parameter order, each ``(N, ...)`` with a leading run axis (a
            single run passes views ``p.grad[None]``).
        coeff: ``(N, M)`` coefficients ``k_j`` of :func:`ogm_coefficients`.
        noise: add the GE noise ``N(0, std(g)^2)``, ``std`` of each run's
            unmodulated gradient (none for a one-element tensor).
        generators: one per run; run i's noise is drawn from its own, one
            parameter after the other, as a single run draws it.
    """
    n = coeff.shape[0]
    for j, grads in enumerate(encoder_grads):
        for g in grads:
            per_run = g.reshape(n, -1)
            std = per_run.std(dim=1) if noise and per_run.shape[1] > 1 else None
            g.mul_(coeff[:, j].to(g.dtype).view(-1, *([1] * (g.ndim - 1))))
            if std is not None:
                for i in range(n):
                    eps = torch.randn(g.shape[1:], generator=generators[i], device=g.device, dtype=g.dtype)
                    g[i].add_(eps * std[i])


class OGMGEMethod(JointMethod):
    """Joint training with OGM-GE gradient modulation (see the module docstring).

    Args:
        alpha: modulation strength >= 0 (the paper tunes it per dataset,
            0.1 to 0.8; default 0.5).
        noise: add the generalisation-enhancement noise (GE); False gives
            plain OGM.

    After each iteration ``last_coefficients`` holds the ``(M,)`` device
    tensor of coefficients applied (for diagnostics; reading it synchronises).
    """

    name = "ogm_ge"

    def __init__(self, alpha: float = 0.5, noise: bool = True) -> None:
        alpha = float(alpha)
        if not alpha >= 0.0:
            raise ValueError(f"ogm_ge: alpha must be a number >= 0, got {alpha}")
        self.alpha = alpha
        self.noise = bool(noise)
        self.last_coefficients: torch.Tensor | None = None

    def modulate_gradients(
        self, ctx: TrainContext, batches: Sequence[Batch], score: torch.Tensor | None = None
    ) -> None:
        if score is None:
            score = branch_stats(batches)[1]
        coeff = ogm_coefficients(score, self.alpha)
        self.last_coefficients = coeff
        grads = [[p.grad[None] for p in encoder.parameters() if p.grad is not None] for encoder in ctx.model.encoders]
        modulate_encoder_gradients(grads, coeff[None], self.noise, [ctx.generator])
