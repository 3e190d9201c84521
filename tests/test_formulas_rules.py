"""Monitor, budget rule and DUS-H by hand (docs/method.md, "Monitor",
"Quantities" and "The heuristic DUS-H"), with non-uniform values and
parameters chosen so that a changed constant, bound or operator changes the
answer (e.g. an EMA beta other than 0.5, more than two modalities, a count at
each bound, remainders that decide the rounding)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from dus_gym import DiscrepancyMonitor, QuantityRule, allocate, dus_h_quantities

# -- monitor: S_t (running mean, EMA), d_t --------------------------------------------------

SCORES = [[0.5, 0.1, 0.3], [0.0, 1.0, 0.2], [1.0, 0.5, 0.9]]


def close(values):
    """float32 state: equal to about 1e-7."""
    return pytest.approx(values, rel=1e-6, abs=1e-6)


def test_running_mean_by_hand_three_modalities() -> None:
    mon = DiscrepancyMonitor(3)
    assert mon.t == 0 and mon.cumulative.tolist() == [0.0, 0.0, 0.0]
    expected = [[0.5, 0.1, 0.3], [0.25, 0.55, 0.25], [0.5, 1.6 / 3, 1.4 / 3]]
    for t, (s, S) in enumerate(zip(SCORES, expected), start=1):
        mon.update(torch.tensor(s))
        assert mon.t == t
        assert mon.last.tolist() == close(s)
        assert mon.cumulative.tolist() == close(S)
        assert mon.discrepancy.tolist() == close([x - sum(S) / 3 for x in S])


def test_ema_by_hand_with_beta_other_than_a_half() -> None:
    # S_1 = s_1; S_2 = 0.8 S_1 + 0.2 s_2; S_3 = 0.8 S_2 + 0.2 s_3
    S1 = [0.5, 0.1, 0.3]
    S2 = [0.4, 0.28, 0.28]
    S3 = [0.52, 0.324, 0.404]
    for batched in (False, True):
        mon = DiscrepancyMonitor(3, mode="ema", beta=0.8)
        if batched:
            mon.update_many(torch.tensor(SCORES[:1]))
            assert mon.cumulative.tolist() == close(S1)
            mon.update_many(torch.tensor(SCORES[1:]))
        else:
            for s, S in zip(SCORES, [S1, S2, S3]):
                mon.update(torch.tensor(s))
                assert mon.cumulative.tolist() == close(S)
        assert mon.t == 3
        assert mon.cumulative.tolist() == close(S3)
        assert mon.last.tolist() == close(SCORES[-1])
        assert mon.discrepancy.tolist() == close([x - sum(S3) / 3 for x in S3])


@pytest.mark.parametrize("mode", ["mean", "ema"])
def test_batched_update_by_hand_from_scratch_and_midway(mode: str) -> None:
    """update_many's closed forms, by hand: all at once from t = 0, and 1 + 2 from t = 1."""
    beta = 0.6
    s = np.array(SCORES)
    if mode == "mean":
        expected = s.mean(0)
    else:
        expected = beta**2 * s[0] + (1 - beta) * (beta * s[1] + s[2])
    for splits in ([3], [1, 2], [2, 1]):
        mon = DiscrepancyMonitor(3, mode=mode, beta=beta)
        start = 0
        for k in splits:
            mon.update_many(torch.tensor(SCORES[start : start + k]))
            start += k
        assert mon.t == 3
        np.testing.assert_allclose(mon.cumulative.numpy(), expected, rtol=1e-6)
        np.testing.assert_allclose(mon.last.numpy(), s[-1], rtol=1e-6)
    mon = DiscrepancyMonitor(3, mode=mode, beta=beta)
    mon.update_many(torch.zeros(0, 3))  # nothing to add
    assert mon.t == 0 and mon.cumulative.tolist() == [0.0, 0.0, 0.0]


# -- budget rule: water-filling, bounds, largest remainder, free budget ---------------------


@pytest.mark.parametrize(
    ("desired", "total", "n_min", "n_max", "expected"),
    [
        ([1, 2, 4], 20, 1, 60, [3, 6, 11]),  # 20/7 * (1, 2, 4) = 2.86, 5.71, 11.43: the two largest remainders +1
        ([4, 2, 1], 20, 1, 60, [11, 6, 3]),  # order does not matter
        ([2, 3, 10], 31, 1, 14, [7, 10, 14]),  # n_max binds; 17 left split 2:3 = 6.8, 10.2
        ([0.001, 1, 1, 50], 40, 2, 20, [2, 9, 9, 20]),  # both bounds bind; 18 left split evenly
        ([1, 1, 1, 1], 10, 1, 30, [3, 3, 2, 2]),  # equal remainders: the first ones
        ([0, 1], 10, 1, 30, [1, 9]),  # a zero weight still gets n_min
        ([5, 5], 12, 6, 6, [6, 6]),  # n_min = n_max
        ([1, 2], 6, 1, 3, [3, 3]),  # total = M n_max
        ([3, 1], 2, 1, 5, [1, 1]),  # total = M n_min
        ([1, 1, 1], 100, 1, 300, [34, 33, 33]),
        ([0.1, 0.1, 10], 33, 1, 20, [7, 6, 20]),  # the top one binds; 13 split 6.5 / 6.5
    ],
)
def test_allocate_by_hand(desired, total, n_min, n_max, expected) -> None:
    counts = allocate(desired, total, n_min, n_max)
    assert counts.dtype == np.int64
    assert counts.tolist() == expected


def test_allocate_is_proportional_when_no_bound_binds() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        m = int(rng.integers(2, 6))
        desired = rng.uniform(0.5, 2.0, size=m)
        total = int(rng.integers(10 * m, 50 * m))
        counts = allocate(desired, total, 1, 10 * total)
        exact = total * desired / desired.sum()
        assert counts.sum() == total
        assert np.all(np.abs(counts - exact) < 1.0)
        # largest remainder: a modality rounded up never has a smaller remainder than one rounded down
        up = counts > np.floor(exact + 1e-9)
        frac = exact - np.floor(exact)
        if up.any() and (~up).any():
            assert frac[up].min() >= frac[~up].max() - 1e-9


@pytest.mark.parametrize(
    ("action_type", "action", "weights"),
    [
        ("discrete", [0, 1, 4, 7, 8], [0.25, 4 ** (-0.75), 1.0, 4**0.75, 4.0]),
        ("continuous", [-1.0, -0.3, 0.0, 0.6, 1.0], [0.25, 4 ** (-0.3), 1.0, 4**0.6, 4.0]),
    ],
)
def test_weights_of_actions(action_type, action, weights) -> None:
    rule = QuantityRule(5, 10, action_type=action_type)
    np.testing.assert_allclose(rule.weights(np.array(action)), weights, rtol=1e-12)


def test_weights_with_other_levels_and_ratio() -> None:
    rule = QuantityRule(3, 10, levels=5, max_ratio=9.0)
    np.testing.assert_allclose(rule.weights(np.array([0, 1, 2, 3, 4])), [1 / 9, 1 / 3, 1, 3, 9])


def test_fixed_budget_counts_by_hand() -> None:
    rule = QuantityRule(3, 10)  # total 30, n in [1, 30]
    assert rule.n_max == 30 and rule.total == 30
    # weights (0.25, 1, 4): 30 * w / 5.25 = 1.43, 5.71, 22.86
    assert rule.quantities(np.array([0, 4, 8])).tolist() == [1, 6, 23]
    rule = QuantityRule(2, 10, n_max=12)  # weights (4, 1): 16 wanted, n_max 12 binds, the rest to the other
    assert rule.quantities(np.array([8, 4])).tolist() == [12, 8]


def test_free_budget_counts_by_hand() -> None:
    rule = QuantityRule(3, 12, budget="free", action_type="continuous", n_min=2, n_max=40)
    # n = round(12 * 4 ** a), clipped to [2, 40]
    assert rule.quantities(np.array([1.0, -1.0, 0.5])).tolist() == [40, 3, 24]
    assert rule.quantities(np.array([0.0, 0.25, -0.75])).tolist() == [12, 17, 4]
    rule = QuantityRule(2, 8, budget="free", n_min=3)
    assert rule.quantities(np.array([0, 8])).tolist() == [3, 24]  # 8 / 4 = 2 -> n_min 3; 8 * 4 = 32 -> 3B = 24


# -- DUS-H ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "base_batch", "lam", "expected"),
    [
        # mean 0.4, d = (0.2, -0.1, -0.1): n = 40 * (1 - d / 0.4) = (20, 50, 50)
        ([0.6, 0.3, 0.3], 40, 1.0, [20, 50, 50]),
        ([0.6, 0.3, 0.3], 40, 0.5, [30, 45, 45]),  # n = 40 * (1 - 0.5 d / 0.4)
        ([0.3, 0.6, 0.3], 40, 0.5, [45, 30, 45]),
        # mean 0.5, d = (0.4, -0.2, -0.2), lam = 3: weight 1 - 2.4 < 0 -> floor -> n_min; 119 split evenly
        ([0.9, 0.3, 0.3], 40, 3.0, [1, 60, 59]),
        # M = 4, B = 10: modality 0 lags; lam 4 wants ~4.3 B for it: n_max = 3 B binds
        ([0.1, 0.7, 0.7, 0.7], 10, 4.0, [30, 4, 3, 3]),
        ([0.1, 0.7, 0.7, 0.7], 10, 1.0, [18, 8, 7, 7]),  # 10 * (1 + 0.45 / 0.55) = 18.2, then 7.27 each: rounding
        ([0.0, 0.0, 0.0], 16, 2.0, [16, 16, 16]),  # before any score: uniform
        ([0.5, 0.2, 0.8], 16, 0.0, [16, 16, 16]),  # lam = 0: uniform
    ],
)
def test_dus_h_by_hand(scores, base_batch, lam, expected) -> None:
    counts = dus_h_quantities(scores, base_batch, lam=lam)
    assert counts.tolist() == expected
    assert counts.sum() == len(scores) * base_batch


def test_dus_h_bounds_are_passed_on() -> None:
    # mean 0.5, d = (-0.4, 0.4): weights (1.8, 0.2) * 20 = (36, 4); n_min 6 and n_max 30 bind
    assert dus_h_quantities([0.1, 0.9], 20, lam=1.0).tolist() == [36, 4]
    assert dus_h_quantities([0.1, 0.9], 20, lam=1.0, n_min=6).tolist() == [34, 6]
    assert dus_h_quantities([0.1, 0.9], 20, lam=1.0, n_max=30).tolist() == [30, 10]
    with pytest.raises(ValueError, match="lam"):
        dus_h_quantities([0.1, 0.9], 20, lam=-0.5)


# -- what the first mutation run left alive (mutmut, docs in README "Development") ---------


def test_masked_loss_and_score_by_hand() -> None:
    """The batched runs pad each modality's batch: the means run over the rows the mask keeps."""
    from dus_gym.monitor import loss_and_score

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=gen)  # (runs, K, n, C): any leading shape
    labels = torch.randint(5, (2, 3, 4), generator=gen)
    mask = torch.rand(2, 3, 4, generator=gen) < 0.6
    mask[..., 0] = True  # each row keeps at least one example
    logits[~mask] = float("nan")  # a padded row may hold anything
    loss, score = loss_and_score(logits, labels, mask)
    assert loss.shape == score.shape == (2, 3)
    for r in range(2):
        for k in range(3):
            rows = [i for i in range(4) if mask[r, k, i]]
            p = [torch.softmax(logits[r, k, i], 0)[labels[r, k, i]].item() for i in rows]
            assert score[r, k].item() == pytest.approx(sum(p) / len(p), rel=1e-6)
            assert loss[r, k].item() == pytest.approx(-sum(np.log(p)) / len(p), rel=1e-6)
    # without a mask: means over the examples axis, the same as an all-true mask
    logits[~mask] = 0.0
    loss, score = loss_and_score(logits, labels)
    full = torch.ones_like(mask)
    masked = loss_and_score(logits, labels, full)
    torch.testing.assert_close(loss, masked[0])
    torch.testing.assert_close(score, masked[1])
    p_true = torch.softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    torch.testing.assert_close(score, p_true.mean(-1))
    torch.testing.assert_close(loss, -p_true.log().mean(-1))


def test_monitor_edge_settings_and_state() -> None:
    mon = DiscrepancyMonitor(2, mode="ema", beta=0.0)  # beta = 0 is allowed: S_t = s_t
    mon.update(torch.tensor([0.2, 0.4]))
    mon.update(torch.tensor([0.7, 0.1], dtype=torch.float64))
    assert mon.cumulative.tolist() == close([0.7, 0.1])
    assert mon.cumulative.dtype == mon.last.dtype == torch.float32  # the state keeps its dtype
    mon.update_many(torch.tensor([[0.3, 0.9]], dtype=torch.float64))
    assert mon.cumulative.dtype == mon.last.dtype == torch.float32
    other = DiscrepancyMonitor(2, mode="ema", beta=0.0)
    other.load_state_dict(mon.state_dict())
    assert other.t == 3
    assert other.last.tolist() == close([0.3, 0.9]) and other.cumulative.tolist() == close([0.3, 0.9])


def test_allocate_refuses_bad_requests_with_their_reason() -> None:
    bad_requests: list[Any] = [[-1.0, 2.0], [0.0, 0.0], [[1.0, 2.0]], []]  # Any: deliberately ill-typed too
    for desired in bad_requests:
        with pytest.raises(ValueError, match="non-negative finite numbers"):
            allocate(desired, 4, 1, 4)
    with pytest.raises(ValueError, match="need 1 <= n_min <= n_max"):
        allocate([1, 1], 10, 6, 5)
    assert allocate([2.0], 7, 1, 10).tolist() == [7]  # one modality takes the whole total


def test_allocate_ties_go_to_the_first_even_for_many_modalities() -> None:
    # 20 equal shares of 30: 1.5 each; the ten extra units go to the first ten
    assert allocate(np.ones(20), 30, 1, 5).tolist() == [2] * 10 + [1] * 10
    # many tied remainders in mixed order (an unstable sort breaks these ties differently)
    rng = np.random.default_rng(0)
    for _ in range(40):
        m = int(rng.integers(17, 40))
        desired = rng.choice([1.0, 2.0, 3.0], size=m)
        total = int(rng.integers(2 * m, 5 * m))
        exact = [total * w / desired.sum() for w in desired]
        counts = [int(np.floor(x + 1e-9)) for x in exact]
        by_remainder = sorted(range(m), key=lambda j: (-(exact[j] - counts[j]), j))  # largest first, then index
        for j in by_remainder[: total - sum(counts)]:
            counts[j] += 1
        assert allocate(desired, total, 1, total).tolist() == counts


def test_quantity_rule_validation_states_the_rule() -> None:
    with pytest.raises(ValueError, match=r"unknown action type 'binary'; valid types: \['discrete', 'continuous'\]"):
        QuantityRule(2, 8, action_type="binary")
    with pytest.raises(ValueError, match="levels must be odd and >= 3"):
        QuantityRule(2, 8, levels=1)
    assert QuantityRule(2, 8, levels=3).weights(np.array([0, 1, 2])).tolist() == pytest.approx([0.25, 1, 4])
    with pytest.raises(ValueError, match="max_ratio must be > 1"):
        QuantityRule(2, 8, max_ratio=1.0)
    assert QuantityRule(2, 8, max_ratio=1.5).weights(np.array([0, 8])).tolist() == pytest.approx([2 / 3, 1.5])
    with pytest.raises(ValueError, match="base_batch must be >= 1"):
        QuantityRule(2, 0)
    assert QuantityRule(2, 1).n_max == 3
    assert QuantityRule(2, 8, n_min=8, n_max=8).quantities(np.array([0, 8])).tolist() == [8, 8]
    with pytest.raises(ValueError, match="need 1 <= n_min <= base_batch <= n_max"):
        QuantityRule(2, 8, n_min=9, n_max=20)
    counts = QuantityRule(2, 8, budget="free").quantities(np.array([1, 7]))
    assert counts.dtype == np.int64


# -- action_for_weights: the action a built-in policy takes for its weights -----------------


@pytest.mark.parametrize(
    ("budget", "action_type", "weights", "expected"),
    [
        ("fixed", "discrete", [0.5, 2.0], [2, 6]),
        ("fixed", "discrete", [2.0, 4.0], [3, 5]),  # only ratios matter: centred in log scale
        ("fixed", "discrete", [1 / 16, 16.0], [0, 8]),  # beyond the grid: clipped
        ("fixed", "discrete", [4**-0.4, 1.0, 4**0.4], [2, 4, 5]),  # targets 2.4, 4, 5.6: a shifted rounding
        ("fixed", "continuous", [2.0, 4.0], [-0.25, 0.25]),
        ("fixed", "continuous", [1 / 16, 16.0], [-1.0, 1.0]),
        ("free", "continuous", [2.0, 4.0], [0.5, 1.0]),  # not centred: the scale is the action
        ("free", "continuous", [1 / 16, 1.0], [-1.0, 0.0]),
        ("free", "continuous", [16.0, 1.0], [1.0, 0.0]),
        ("free", "discrete", [2.0, 4.0], [6, 8]),
        ("free", "discrete", [1 / 16, 0.5], [0, 2]),
        ("free", "discrete", [4**-0.4, 4**0.15], [2, 5]),  # each rounded alone: 2.4 -> 2, 4.6 -> 5
    ],
)
def test_action_for_weights_by_hand(budget, action_type, weights, expected) -> None:
    rule = QuantityRule(len(weights), 10, budget=budget, action_type=action_type)
    action = rule.action_for_weights(np.array(weights))
    assert action.dtype == (np.float32 if action_type == "continuous" else np.int64)
    np.testing.assert_allclose(action, expected, rtol=1e-6, atol=1e-7)


def test_action_for_weights_is_the_nearest_ratio_on_the_grid() -> None:
    """Fixed budget, discrete: no other level vector is nearer (centred levels vs centred
    fractional targets, squared distance), found by brute force over the whole grid."""
    import itertools

    rng = np.random.default_rng(3)
    for _ in range(60):
        m, levels, ratio = int(rng.integers(2, 5)), int(rng.choice([5, 9])), float(rng.choice([2.0, 4.0]))
        rule = QuantityRule(m, 10, levels=levels, max_ratio=ratio)
        w = np.exp(rng.normal(0.0, 1.0, m))
        action = rule.action_for_weights(w)
        assert action.min() >= 0 and action.max() <= levels - 1
        log_w = np.log(w) / np.log(ratio)
        target = (np.clip(log_w - log_w.mean(), -1, 1) + 1) * (levels - 1) / 2
        grid = np.array(list(itertools.product(range(levels), repeat=m)), dtype=float)
        errs = (((grid - grid.mean(1, keepdims=True)) - (target - target.mean())) ** 2).sum(1)
        err = (((action - action.mean()) - (target - target.mean())) ** 2).sum()
        assert err == pytest.approx(errs.min(), abs=1e-9)


def test_action_for_weights_refuses_bad_weights() -> None:
    rule = QuantityRule(2, 10)
    for weights in ([1.0, 0.0], [1.0, -2.0], [1.0, np.inf], [1.0, 1.0, 1.0]):
        with pytest.raises(ValueError, match="weights must be 2 positive finite numbers"):
            rule.action_for_weights(np.array(weights))


# -- DUS-H weights --------------------------------------------------------------------------


def test_dus_h_weights_by_hand() -> None:
    from dus_gym.heuristic import dus_h_weights

    S = np.array([[0.6, 0.3, 0.3], [0.1, 0.1, 0.4]])  # one row per set of scores, each with its own mean
    expected = [[0.5, 1.25, 1.25], [1.5, 1.5, 1e-3]]  # row 2: mean 0.2, 1 - 0.2 / 0.2 = 0 -> floored at 1e-3
    np.testing.assert_allclose(dus_h_weights(S), expected)  # lam = 1 by default
    np.testing.assert_allclose(dus_h_weights(S[0]), expected[0])
    np.testing.assert_allclose(dus_h_weights(S, lam=0.5), [[0.75, 1.125, 1.125], [1.25, 1.25, 0.5]])
    assert dus_h_weights(np.zeros(3), lam=2.0).tolist() == [1.0, 1.0, 1.0]
    assert dus_h_quantities([0.6, 0.3, 0.3], 40).tolist() == [20, 50, 50]  # lam = 1 by default


def test_dus_h_before_any_score_is_silent_and_bad_scores_are_refused() -> None:
    import warnings

    from dus_gym.heuristic import dus_h_weights

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 / 0 stays inside np.where's unused branch
        assert dus_h_weights(np.zeros((2, 3))).tolist() == [[1.0] * 3] * 2
        assert dus_h_quantities([0.0, 0.0], 8).tolist() == [8, 8]
    bad_scores: list[Any] = [[0.5, np.nan], [[0.5, 0.5]]]  # Any: the 2-D one is deliberately ill-typed
    for scores in bad_scores:
        with pytest.raises(ValueError, match="finite vector"):
            dus_h_quantities(scores, 8)
