from __future__ import annotations

import numpy as np
import pytest

from dus_gym.budget import QuantityRule, allocate


@pytest.mark.parametrize(
    ("desired", "total", "n_min", "n_max", "expected"),
    [
        ([1, 1], 128, 1, 192, [64, 64]),
        ([1, 3], 128, 1, 192, [32, 96]),
        ([1, 1, 1], 100, 1, 300, [34, 33, 33]),  # largest remainder, ties to the first
        ([0.01, 1], 128, 1, 192, [1, 127]),  # clipped at n_min, rest to the other
        ([1, 100, 100], 60, 5, 40, [5, 28, 27]),  # water-filling after the clip
        ([1, 10], 64, 1, 40, [24, 40]),  # n_max binds, the gap goes back
    ],
)
def test_allocate_by_hand(desired, total, n_min, n_max, expected) -> None:
    assert allocate(desired, total, n_min, n_max).tolist() == expected


def test_allocate_keeps_total_and_bounds_on_random_inputs() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        m = int(rng.integers(2, 6))
        n_min = int(rng.integers(1, 5))
        n_max = int(rng.integers(n_min, 60))
        total = int(rng.integers(m * n_min, m * n_max + 1))
        desired = rng.exponential(size=m) ** 3
        counts = allocate(desired, total, n_min, n_max)
        assert counts.sum() == total
        assert counts.min() >= n_min and counts.max() <= n_max


def test_allocate_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match="total 10 cannot be split into 2 counts in"):
        allocate([1, 1], 10, 6, 8)
    with pytest.raises(ValueError, match="non-negative"):
        allocate([1, float("nan")], 10, 1, 8)


def test_rule_maps_levels_to_weights() -> None:
    rule = QuantityRule(2, 64)
    assert rule.n_max == 192 and rule.total == 128
    assert rule.weights(np.array([0, 4, 8])).tolist() == pytest.approx([0.25, 1.0, 4.0])
    assert rule.quantities(np.array([4, 4])).tolist() == [64, 64]
    assert rule.quantities(np.array([2, 6])).tolist() == [26, 102]  # shares 0.5 : 2
    assert rule.uniform_action.tolist() == [4, 4]


def test_rule_inverts_representable_weights() -> None:
    for action_type in ("discrete", "continuous"):
        rule = QuantityRule(3, 32, action_type=action_type)
        for weights in ([1, 1, 1], [1, 2, 1], [0.5, 1, 2]):
            action = rule.action_for_weights(np.array(weights, dtype=float))
            expected = allocate(weights, rule.total, rule.n_min, rule.n_max)
            assert rule.quantities(action).tolist() == expected.tolist()


def test_free_budget_scales_each_modality() -> None:
    rule = QuantityRule(2, 10, budget="free", action_type="continuous")
    assert rule.quantities(np.array([1.0, -1.0])).tolist() == [30, 2]  # 40 clipped to n_max = 30; 2.5 rounds to even
    assert rule.quantities(np.array([0.0, 0.5])).tolist() == [10, 20]


def test_rule_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown budget mode 'tight'"):
        QuantityRule(2, 8, budget="tight")
    with pytest.raises(ValueError, match="levels must be odd"):
        QuantityRule(2, 8, levels=4)
