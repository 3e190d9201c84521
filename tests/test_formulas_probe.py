"""The linear probe (docs/method.md, "Environment"; ``TrainingRun.probe``): per
modality, an L2-regularised (1e-3) multinomial logistic regression on the frozen
encoder's features of the TRAINING split, standardised with the training
split's mean and std, scored on the requested split.

The reference solves the same convex problem independently, in float64 to
convergence; its minimiser is unique. The probe stops after its L-BFGS steps
on float32 features, a little short of it (logits up to ~0.2 apart here), so
an evaluation example that close to the decision boundary could fall on the
other side on another machine, where float32 rounds otherwise: the two may
differ by one example in all (``flips``), and agree exactly on this machine.
The case is chosen so that each plausible change of the recipe (no
regulariser, 10x the regulariser, no standardisation, the eval split's
statistics, fitting on the eval split) moves at least two examples.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from dus_gym import RunConfig, TrainingRun, make_synthetic


def probe_by_hand(f_train, y_train, f_eval, y_eval, reg: float = 1e-3) -> float:
    f_train, f_eval = f_train.double(), f_eval.double()
    num_classes = int(max(y_train.max(), y_eval.max())) + 1
    w = torch.zeros(f_train.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=1000, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(f_train @ w + b, y_train) + reg * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((f_eval @ w + b).argmax(1) == y_eval).double().mean())


@pytest.fixture(scope="module")
def trained_run() -> TrainingRun:
    torch.set_num_threads(1)
    config = RunConfig(device="cpu", base_batch=8, feature_dim=8)
    run = TrainingRun(make_synthetic("tiny", seed=0), config, split_seed=0, init_seed=0, sample_seed=0)
    train = getattr(run, "step", None) or run.train
    train([3, 13], 5)
    return run


def flips(accuracies: list[float], expected: list[float], n_eval: int) -> int:
    """Examples classified otherwise, summed over the modalities (each accuracy is a count over ``n_eval``)."""
    return sum(round(abs(a - e) * n_eval) for a, e in zip(accuracies, expected, strict=True))


def features(run: TrainingRun, j: int, split: str) -> torch.Tensor:
    with torch.no_grad():
        return run.model.features(j, run.inputs[j][run.splits[split]])


@pytest.mark.parametrize("split", ["test", "val"])
def test_probe_is_the_l2_logistic_regression_on_standardised_training_features(trained_run, split) -> None:
    run = trained_run
    y_train, y_eval = run.labels[run.splits.train], run.labels[run.splits[split]]
    expected, variants = [], []
    for j in range(run.num_modalities):
        f_train, f_eval = features(run, j, "train"), features(run, j, split)
        mean, std = f_train.mean(0), f_train.std(0).clamp(min=1e-6)
        z_train, z_eval = (f_train - mean) / std, (f_eval - mean) / std
        expected.append(probe_by_hand(z_train, y_train, z_eval, y_eval))
        if split == "test":
            own = (f_eval - f_eval.mean(0)) / f_eval.std(0).clamp(min=1e-6)
            variants.append({
                "no regulariser": probe_by_hand(z_train, y_train, z_eval, y_eval, reg=0.0),
                "10x regulariser": probe_by_hand(z_train, y_train, z_eval, y_eval, reg=1e-2),
                "raw features": probe_by_hand(f_train, y_train, f_eval, y_eval),
                "eval statistics": probe_by_hand(z_train, y_train, own, y_eval),
                "fit on eval split": probe_by_hand(z_eval, y_eval, z_eval, y_eval),
            })
    assert flips(run.probe(split), expected, len(y_eval)) <= 1
    for name in variants[0] if variants else []:  # the case tells the recipe from each variant
        assert flips([v[name] for v in variants], expected, len(y_eval)) >= 2, name


def test_probe_on_the_training_split_scores_its_own_fit(trained_run) -> None:
    run = trained_run
    y = run.labels[run.splits.train]
    expected = []
    for j in range(run.num_modalities):
        f = features(run, j, "train")
        z = (f - f.mean(0)) / f.std(0).clamp(min=1e-6)
        expected.append(probe_by_hand(z, y, z, y))
    assert flips(run.probe("train"), expected, len(y)) <= 1
