"""The metrics of a split and the test report, written once over a leading run axis.

:class:`~dus_gym.run.TrainingRun` (one run: N = 1) and
:class:`~dus_gym.batched.BatchedTrainingRun` (N stacked runs) both evaluate
with :func:`split_metrics` and report with :func:`held_out_report`
(docs/method.md sections 7 and 8; docs/architecture.md lists where each
formula lives).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn import functional as F

__all__ = [
    "Evaluation", "ProbeSettings", "held_out_report", "macro_f1", "probe_accuracies", "split_metrics",
    "unpack_evaluation",
]


class ProbeSettings(Protocol):
    """What the probe reads of a run's settings (:class:`~dus_gym.run.RunConfig` has both)."""

    @property
    def eval_batch(self) -> int: ...

    @property
    def probe_steps(self) -> int: ...


STD_FLOOR_PROBE = 1e-6
"""the probe's feature standardisation divides by at least this (a constant feature stays 0)"""


@dataclass
class Evaluation:
    """Metrics of one split. Accuracies and F1 in [0, 1]; losses are mean cross-entropy (nats)."""

    accuracy: float
    macro_f1: float
    loss: float
    branch_accuracy: list[float]
    branch_loss: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


def macro_f1(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Unweighted mean over classes of ``2 TP / (2 TP + FP + FN)`` (0 for a class never seen nor predicted).

    ``pred`` and ``labels``: int64 ``(..., n)``; returns ``(...)`` (one F1 per
    leading index, e.g. per run of a batch), from one ``bincount``.
    """
    lead = pred.shape[:-1]
    c2 = num_classes**2
    offset = torch.arange(int(np.prod(lead)), device=pred.device).reshape(*lead, 1) * c2
    flat = (labels * num_classes + pred + offset).reshape(-1)
    confusion = torch.bincount(flat, minlength=c2 * int(np.prod(lead))).reshape(*lead, num_classes, num_classes)
    tp = confusion.diagonal(dim1=-2, dim2=-1).float()
    denom = confusion.sum(-2).float() + confusion.sum(-1).float()
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp)).mean(-1)


def split_metrics(
    logits: torch.Tensor, labels: torch.Tensor, fuse: Callable[[torch.Tensor], torch.Tensor], num_classes: int
) -> torch.Tensor:
    """Every run's metrics of a split as one tensor ``(N, 3 + 2M)``.

    Args:
        logits: branch logits ``(N, M, n, C)`` of N runs (a single run: N = 1).
        labels: int64 ``(N, n)``.
        fuse: the method's test-time fusion, ``(..., M, n, C) -> (..., n, C)``
            (:meth:`~dus_gym.methods.base.Method.fuse`).
        num_classes: C.

    Returns:
        Per run: fused accuracy, macro-F1, fused loss (mean cross-entropy,
        nats), then each branch's accuracy, then each branch's loss.
    """
    fused = fuse(logits)  # (N, n, C)
    pred = fused.argmax(dim=-1)
    accuracy = (pred == labels).float().mean(dim=-1)
    f1 = macro_f1(pred, labels, num_classes)
    # One mean-reduced cross_entropy per run and branch: the same bits for a run alone or in a batch.
    loss = torch.stack([F.cross_entropy(f, y) for f, y in zip(fused, labels)])
    branch_acc = (logits.argmax(dim=-1) == labels[:, None]).float().mean(dim=-1)
    branch_loss = torch.stack([torch.stack([F.cross_entropy(lg, y) for lg in run]) for run, y in zip(logits, labels)])
    return torch.cat([torch.stack([accuracy, f1, loss], dim=1), branch_acc, branch_loss], dim=1)


def unpack_evaluation(values: np.ndarray, num_modalities: int) -> Evaluation:
    """One run's row of :func:`split_metrics` as an :class:`Evaluation`."""
    m = num_modalities
    return Evaluation(
        accuracy=float(values[0]),
        macro_f1=float(values[1]),
        loss=float(values[2]),
        branch_accuracy=[float(v) for v in values[3 : 3 + m]],
        branch_loss=[float(v) for v in values[3 + m : 3 + 2 * m]],
    )


def _probe_accuracy(
    f_train: torch.Tensor, y_train: torch.Tensor, f_eval: torch.Tensor, y_eval: torch.Tensor, steps: int
) -> float:
    """Fit an L2-regularised (1e-3) multinomial logistic regression with full-batch
    L-BFGS on ``f_train`` ``(n, d)`` and return its accuracy on ``f_eval``."""
    num_classes = int(max(y_train.max(), y_eval.max())) + 1
    weight = torch.zeros(f_train.shape[1], num_classes, device=f_train.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=f_train.device, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(f_train @ weight + bias, y_train) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((f_eval @ weight + bias).argmax(1) == y_eval).float().mean())


def probe_accuracies(
    features: Callable[[int, torch.Tensor], torch.Tensor],
    inputs: Sequence[torch.Tensor],
    labels: torch.Tensor,
    train_idx: torch.Tensor,
    eval_idx: torch.Tensor,
    config: ProbeSettings,
) -> list[float]:
    """Linear-probe accuracy of each modality's encoder ``features(j, x)`` (docs/method.md section 8).

    Features of the training rows ``train_idx`` (in batches of
    ``config.eval_batch``) are standardised with their own statistics; an
    L2-regularised logistic regression fit on them with
    ``config.probe_steps`` L-BFGS iterations is scored on ``eval_idx``.
    Returns one accuracy in [0, 1] per modality (NaN for an encoder whose
    features are not finite: a diverged run).
    """
    results = []
    for j, x in enumerate(inputs):
        with torch.inference_mode():
            f_train = torch.cat([features(j, x[c]) for c in train_idx.split(config.eval_batch)])
            f_eval = torch.cat([features(j, x[c]) for c in eval_idx.split(config.eval_batch)])
        if not (torch.isfinite(f_train).all() and torch.isfinite(f_eval).all()):
            results.append(float("nan"))  # a diverged encoder: nothing to probe (L-BFGS would fail on it)
            continue
        mean, std = f_train.mean(0), f_train.std(0).clamp(min=STD_FLOOR_PROBE)
        f_train, f_eval = (f_train - mean) / std, (f_eval - mean) / std
        results.append(_probe_accuracy(f_train, labels[train_idx], f_eval, labels[eval_idx], config.probe_steps))
    return results


def held_out_report(
    evaluation: Evaluation, modality_names: Sequence[str], probe: Callable[[], list[float]] | None
) -> dict[str, Any]:
    """Held-out metrics of one run, JSON-ready (what ``info["test"]`` holds).

    Keys: ``accuracy``, ``macro_f1`` (in [0, 1]), ``loss`` (nats), per
    modality (by name) ``branch_accuracy`` and, when ``probe`` is given,
    ``probe_accuracy`` (its result, :func:`probe_accuracies`), and
    ``imbalance_gap``: the best minus the worst branch accuracy.
    """
    ev = evaluation
    out: dict[str, Any] = {
        "accuracy": ev.accuracy,
        "macro_f1": ev.macro_f1,
        "loss": ev.loss,
        "branch_accuracy": dict(zip(modality_names, ev.branch_accuracy)),
    }
    if probe is not None:
        out["probe_accuracy"] = dict(zip(modality_names, probe()))
    out["imbalance_gap"] = max(ev.branch_accuracy) - min(ev.branch_accuracy)
    return out

