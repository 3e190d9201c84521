from __future__ import annotations

import pytest
import torch

from dus_gym.monitor import DiscrepancyMonitor, true_class_score


def test_true_class_score_by_hand() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]))
    assert true_class_score(logits, torch.tensor([0, 2])).item() == pytest.approx((0.7 + 0.5) / 2)


def test_running_mean_and_discrepancy_by_hand() -> None:
    mon = DiscrepancyMonitor(2)
    for s in ([0.2, 0.6], [0.4, 0.6], [0.9, 0.3]):
        mon.update(torch.tensor(s))
    # S_3 = mean of the three scores: (0.5, 0.5); d = 0
    assert mon.t == 3
    assert mon.cumulative.tolist() == pytest.approx([0.5, 0.5])
    assert mon.last.tolist() == pytest.approx([0.9, 0.3])
    mon.update(torch.tensor([0.1, 0.9]))
    # S_4 = 3/4 * 0.5 + 1/4 * s_4 = (0.4, 0.6); mean 0.5; d = (-0.1, 0.1). Four float32 updates and a mean,
    # each rounding by up to half an ulp of ~0.6 (3e-8), with or without a fused multiply-add: 2.5e-7.
    assert mon.cumulative.tolist() == pytest.approx([0.4, 0.6], abs=2.5e-7)
    assert mon.discrepancy.tolist() == pytest.approx([-0.1, 0.1], abs=2.5e-7)


def test_ema_by_hand() -> None:
    mon = DiscrepancyMonitor(3, mode="ema", beta=0.5)
    mon.update(torch.tensor([0.2, 0.4, 0.6]))
    mon.update(torch.tensor([0.6, 0.4, 0.2]))
    assert mon.cumulative.tolist() == pytest.approx([0.4, 0.4, 0.4])
    assert mon.discrepancy.abs().max().item() == pytest.approx(0.0, abs=1e-7)


def test_state_roundtrip_and_bad_options() -> None:
    mon = DiscrepancyMonitor(2)
    mon.update(torch.tensor([0.3, 0.7]))
    other = DiscrepancyMonitor(2)
    other.load_state_dict(mon.state_dict())
    assert other.t == 1 and torch.equal(other.cumulative, mon.cumulative)
    with pytest.raises(ValueError, match="unknown monitor mode 'median'"):
        DiscrepancyMonitor(2, mode="median")
    with pytest.raises(ValueError, match="beta"):
        DiscrepancyMonitor(2, mode="ema", beta=1.0)


def test_batched_update_equals_one_update_per_iteration() -> None:
    scores = torch.rand(13, 3, generator=torch.Generator().manual_seed(0))
    for mode in ("mean", "ema"):
        one, many = DiscrepancyMonitor(3, mode=mode, beta=0.8), DiscrepancyMonitor(3, mode=mode, beta=0.8)
        for s in scores:
            one.update(s)
        many.update_many(scores[:1])  # the first score initialises S
        many.update_many(scores[1:6])
        many.update_many(scores[6:])
        assert many.t == one.t == 13
        assert torch.allclose(many.cumulative, one.cumulative, atol=1e-6)
        assert torch.equal(many.last, one.last)
