"""docs/method.md's formulas by hand, through both paths: a single run and a run of a batch.

The single run (:class:`~dus_gym.run.TrainingRun`) and the batch
(:class:`~dus_gym.batched.BatchedTrainingRun`) share one implementation of
each formula, so a test that compares them cannot see a wrong formula. Here
each path is held to a hand computation from the initial model, the data and
the seeds alone (standardisation, s_t, S_t and d_t, the loss over B, OGM-GE's
coefficients, evaluation and fusion, the report): a mutation of a formula
fails both parametrisations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dus_gym import RunConfig, TrainingRun, make_synthetic
from dus_gym.batched import BatchedTrainingRun
from dus_gym.data import MultimodalDataset

PATHS = ["single", "batch"]
SEEDS = {"split_seed": 1, "init_seed": 7, "sample_seed": 11}
OTHER = {"split_seed": 2, "init_seed": 3, "sample_seed": 5}  # the batch's other run
B = 8
COUNTS = [12, 12]  # equal counts (no presence draw), P = 12 != B: the loss is a sum over B, not a mean


def _config(**kwargs: Any) -> RunConfig:
    return RunConfig(base_batch=B, device="cpu", lr=0.1, momentum=0.0, weight_decay=0.0, **kwargs)


class Path:
    """One run of either path, as the tests read it: step, evaluate, report, encoder parameters."""

    def __init__(self, path: str, dataset: MultimodalDataset, config: RunConfig) -> None:
        self.path = path
        if path == "single":
            self.run: Any = TrainingRun(dataset, config, **SEEDS)
        else:
            self.run = BatchedTrainingRun([dataset, dataset], config, [OTHER, SEEDS])

    def step(self, counts: list[int], iterations: int = 1) -> Any:
        if self.path == "single":
            return self.run.step(counts, iterations)
        return self.run.step(np.array([[4, 20], counts]), iterations)[1]

    def evaluate(self, split: str) -> Any:
        return self.run.evaluate(split) if self.path == "single" else self.run.evaluate(split)[1]

    def report(self, split: str) -> dict[str, Any]:
        return self.run.report(split, probe=False) if self.path == "single" else self.run.report(1, split, False)

    def encoder_params(self, j: int) -> list[torch.Tensor]:
        if self.path == "single":
            return [p.detach().clone() for p in self.run.model.encoders[j].parameters()]
        prefix = f"encoders.{j}."
        return [p[1].detach().clone() for k, p in self.run.params.items() if k.startswith(prefix)]


def standardised_by_hand(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """(x - mean) / max(std, 1e-6) per feature, with training-row statistics (float64)."""
    ref = x[train].double()
    return ((x.double() - ref.mean(0)) / ref.std(0).clamp(min=1e-6)).float()


def reference(dataset: MultimodalDataset, config: RunConfig) -> tuple[TrainingRun, list[torch.Tensor]]:
    """The initial model and splits of the run seeded SEEDS, and its inputs standardised by hand."""
    ref = TrainingRun(dataset, config, **SEEDS)
    return ref, [standardised_by_hand(x, ref.splits.train) for x in dataset.modalities.values()]


def first_iteration_by_hand(dataset: MultimodalDataset, config: RunConfig) -> dict[str, np.ndarray]:
    """s_1, the branch losses and the optimised loss of a joint iteration with COUNTS, by hand."""
    ref, inputs = reference(dataset, config)
    train = ref.splits.train
    P = max(COUNTS)
    idx = train[torch.randint(len(train), (P,), generator=torch.Generator().manual_seed(SEEDS["sample_seed"]))]
    y = dataset.labels[idx]
    with torch.no_grad():
        logits = [ref.model.branch_logits(j, x[idx]).double() for j, x in enumerate(inputs)]
    p_true = [torch.softmax(lg, 1).gather(1, y[:, None]).squeeze(1) for lg in logits]
    return {
        "s": np.array([float(p.mean()) for p in p_true]),
        "branch_loss": np.array([float(-p.log().mean()) for p in p_true]),
        "loss": np.array(float(F.cross_entropy(torch.stack(logits).sum(0), y, reduction="sum")) / B),
    }


@pytest.fixture(scope="module")
def tiny() -> MultimodalDataset:
    return make_synthetic("tiny", seed=0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["joint", "ogm_ge"])
def test_first_scores_and_loss_by_hand(path: str, method: str, tiny: MultimodalDataset) -> None:
    config = _config(method=method)
    expected = first_iteration_by_hand(tiny, config)
    report = Path(path, tiny, config).step(COUNTS)
    np.testing.assert_allclose(report.last_scores, expected["s"], rtol=1e-5)
    np.testing.assert_allclose(report.scores, expected["s"], rtol=1e-5)  # S_1 = s_1
    np.testing.assert_allclose(report.discrepancy, expected["s"] - expected["s"].mean(), atol=1e-6)
    np.testing.assert_allclose(report.branch_loss, expected["branch_loss"], rtol=1e-5)
    assert report.train_loss == pytest.approx(float(expected["loss"]), rel=1e-5)  # summed CE / B, not the mean


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("mode", "beta"), [("mean", 0.9), ("ema", 0.7)])
def test_cumulative_scores_follow_the_recursion(path: str, mode: str, beta: float, tiny: MultimodalDataset) -> None:
    run = Path(path, tiny, _config(monitor=mode, monitor_beta=beta))
    S: np.ndarray | None = None
    for t, counts in enumerate([[8, 8], [3, 13], [13, 3], [10, 6]], start=1):
        report = run.step(counts, iterations=1)
        s = report.last_scores
        if S is None:
            S = s.copy()
        elif mode == "mean":
            S = (t - 1) / t * S + s / t
        else:
            S = beta * S + (1 - beta) * s
        np.testing.assert_allclose(report.scores, S, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(report.discrepancy, S - S.mean(), atol=1e-6)


def macro_f1_by_hand(pred: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    f1 = []
    for c in range(num_classes):
        tp, fp, fn = np.sum((pred == c) & (y == c)), np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
        f1.append(0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["joint", "mla"])
def test_evaluation_fusion_and_report_by_hand(path: str, method: str, tiny: MultimodalDataset) -> None:
    config = _config(method=method)
    ref, inputs = reference(tiny, config)
    idx = ref.splits.val
    y = tiny.labels[idx]
    with torch.no_grad():
        logits = torch.stack([ref.model.branch_logits(j, x[idx]) for j, x in enumerate(inputs)]).double()
    if method == "mla":  # per example, w_j = softmax_j(-entropy_j)
        log_p = torch.log_softmax(logits, -1)
        w = torch.softmax((log_p.exp() * log_p).sum(-1), dim=0)
        fused = (w[..., None] * logits).sum(0)
    else:
        fused = logits.sum(0)
    pred = fused.argmax(1)
    branch_acc = [float((lg.argmax(1) == y).double().mean()) for lg in logits]
    run = Path(path, tiny, config)
    ev = run.evaluate("val")
    assert ev.accuracy == pytest.approx(float((pred == y).double().mean()), abs=1e-6)
    assert ev.macro_f1 == pytest.approx(macro_f1_by_hand(pred.numpy(), y.numpy(), tiny.num_classes), abs=1e-6)
    assert ev.loss == pytest.approx(float(F.cross_entropy(fused, y)), rel=1e-5)
    assert ev.branch_accuracy == pytest.approx(branch_acc, abs=1e-6)
    assert ev.branch_loss == pytest.approx([float(F.cross_entropy(lg, y)) for lg in logits], rel=1e-5)
    report = run.report("val")
    assert report["accuracy"] == pytest.approx(ev.accuracy) and report["loss"] == pytest.approx(ev.loss)
    assert report["branch_accuracy"] == pytest.approx(dict(zip(tiny.modality_names, branch_acc)), abs=1e-6)
    assert report["imbalance_gap"] == pytest.approx(max(branch_acc) - min(branch_acc), abs=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_standardisation_by_hand_with_a_nearly_constant_feature(path: str) -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    a = torch.randn(90, 4, generator=g) + labels[:, None]
    a[:, 0] = 1e-8 * torch.randn(90, generator=g)  # std far below the floor: divided by 1e-6, not by itself
    b = torch.randn(90, 3, generator=g) * 40.0 + 7.0
    data = MultimodalDataset({"a": a, "b": b}, labels, ["0", "1", "2"], "nearly-constant")
    run = Path(path, data, _config())
    train = run.run.splits.train if path == "single" else run.run.data.splits["train"][1]
    for j, x in enumerate([a, b]):
        want = standardised_by_hand(x, train)
        if path == "single":
            got = run.run.inputs[j]
        else:
            got = run.run.data.gather(j, torch.arange(90).expand(2, -1))[1]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path", PATHS)
def test_ogm_ge_scales_each_encoder_step_by_its_hand_coefficient(path: str, tiny: MultimodalDataset) -> None:
    """With plain SGD, OGM (no noise) moves encoder j by k_j times joint's step; the heads alike."""
    alpha = 0.5
    steps = {}
    for method, kwargs in [("joint", {}), ("ogm_ge", {"alpha": alpha, "noise": False})]:
        run = Path(path, tiny, _config(method=method, method_kwargs=kwargs))
        before = [run.encoder_params(j) for j in range(2)]
        report = run.step(COUNTS)
        steps[method] = [[a - b for a, b in zip(run.encoder_params(j), before[j])] for j in range(2)]
    s = report.last_scores  # the same first draws in both runs: the scores before the modulation
    for j in range(2):
        ratio = s[j] / s[1 - j]
        k = 1.0 - np.tanh(alpha * (ratio - 1.0)) if ratio > 1.0 else 1.0
        for d_ogm, d_joint in zip(steps["ogm_ge"][j], steps["joint"][j]):
            torch.testing.assert_close(d_ogm, k * d_joint, rtol=1e-4, atol=1e-7)
    assert min(s[0] / s[1], s[1] / s[0]) < 1.0 < max(s[0] / s[1], s[1] / s[0])  # one modality damped
