from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional as F

from dus_gym.data import make_synthetic
from dus_gym.methods import MLAMethod, make_method
from dus_gym.models import build_model
from dus_gym.run import RunConfig, TrainingRun


def _run(method: str = "joint", **kw) -> TrainingRun:
    cfg = RunConfig(method=method, base_batch=8, device="cpu", **kw)
    return TrainingRun(make_synthetic("tiny", seed=0), cfg, split_seed=0, init_seed=1, sample_seed=2)


def test_uniform_joint_is_ordinary_joint_training() -> None:
    """Same model, same batches: the run's losses equal a plain late-fusion loop's."""
    run = _run()
    B, iters = 8, 5
    plain = build_model(
        [tuple(x.shape[1:]) for x in run.inputs], 4, torch.Generator().manual_seed(1), "cpu"
    )
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), run.model.parameters()))
    opt = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(2)  # the run's batch generator, replayed
    train = run.splits.train
    expected = []
    for _ in range(iters):
        idx = train[torch.randint(len(train), (B,), generator=gen)]
        logits = sum((plain.branch_logits(j, x[idx]) for j, x in enumerate(run.inputs)), torch.tensor(0.0))
        loss = F.cross_entropy(logits, run.labels[idx])  # the ordinary mean loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        expected.append(loss.item())
    got = [run.method.train_iteration(run._ctx, [B, B]).loss.item() for _ in range(iters)]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert all(torch.allclose(p, q) for p, q in zip(plain.parameters(), run.model.parameters()))


def test_joint_quantities_reach_the_branches() -> None:
    run = _run()
    calls: list[tuple[int, int]] = []
    for j, enc in enumerate(run.model.encoders):
        enc.register_forward_hook(lambda m, inp, out, j=j: calls.append((j, inp[0].shape[0])))
    run.train([3, 13], iterations=1)
    assert calls == [(0, 3), (1, 13)]
    assert run.examples_seen.tolist() == [3, 13]


def test_mla_alternates_with_a_shared_head(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run("mla")
    assert run.model.shared_head and len(run.model.heads) == 1
    steps: list[int] = []
    original = run.optimizer.step

    def counted_step(*a: Any, **k: Any) -> Any:
        steps.append(1)
        return original(*a, **k)

    monkeypatch.setattr(run.optimizer, "step", counted_step)
    stats = run.train([4, 12], iterations=2)
    assert len(steps) == 4  # one optimizer step per modality per iteration
    assert bool(stats.finite) and stats.branch_loss.shape == (2,)


def test_mla_fusion_weights_low_entropy_branches() -> None:
    confident = torch.tensor([[10.0, 0.0, 0.0]])
    unsure = torch.tensor([[0.0, 0.1, 0.0]])
    fused = MLAMethod().fuse(torch.stack([confident, unsure]))
    h = lambda lg: -(lg.softmax(-1) * lg.log_softmax(-1)).sum()  # noqa: E731
    w = torch.softmax(-torch.stack([h(confident), h(unsure)]), 0)
    assert torch.allclose(fused, w[0] * confident + w[1] * unsure)
    assert w[0] > 0.7


def test_evaluate_reports_consistent_metrics() -> None:
    run = _run()
    run.train([8, 8], iterations=10)
    ev = run.evaluate("val")
    assert 0 <= ev.accuracy <= 1 and 0 <= ev.macro_f1 <= 1 and ev.loss > 0
    logits = run.branch_logits(run.splits.val)
    y = run.labels[run.splits.val]
    assert ev.accuracy == pytest.approx(float((logits.sum(0).argmax(1) == y).float().mean()))
    assert ev.branch_accuracy[1] == pytest.approx(float((logits[1].argmax(1) == y).float().mean()))
    probe = run.probe("test")
    assert len(probe) == 2 and all(0 <= p <= 1 for p in probe)


def test_unknown_method_lists_valid() -> None:
    with pytest.raises(ValueError, match=r"unknown method 'sgd'.*'joint'"):
        make_method("sgd")
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        _run(optimizer="lion")
