"""The env's formulas (docs/method.md, "Monitor" and "Environment"), recomputed by
hand from what the model computed during training, under NON-uniform counts:

- s_t(j): mean true-class probability of j's own branch logits over its n_j
  examples, every iteration; S_t (running mean, or EMA with the configured
  beta); d_t = S_t - mean_k S_t(k);
- every observation component against ``info`` (and the layout bounds), the
  per-modality training loss of the step and its trend;
- the reward: change of the validation metric (recomputed from the model);
  the free budget's sample cost; the divergence penalty.

The training forward passes are observed with hooks on the run's encoders and
heads (training mode only), so the expectations do not depend on how the run
computes them.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import unwrapped
from torch.nn import functional as F

import dus_gym  # noqa: F401  (registers the ids)
from dus_gym.envs.dus_env import LOSS_CAP

TINY: dict[str, Any] = {"dataset": "synthetic:tiny", "iterations_per_step": 3, "base_batch": 8, "device": "cpu"}
# action -> counts with B = 8, M = 2 (fixed budget 16): weights 4 ** (2 l / 8 - 1)
ACTIONS = [([2, 6], [3, 13]), ([7, 3], [13, 3]), ([8, 0], [15, 1]), ([4, 4], [8, 8])]


class Recorder:
    """Branch logits and labels of every training forward pass, per modality, in call order."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.events: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self._rows: tuple[int, torch.Tensor] | None = None
        for j, enc in enumerate(run.model.encoders):
            enc.register_forward_pre_hook(self._encoder_hook(j))
        for head in run.model.heads:
            head.register_forward_hook(self._head_hook)

    def _encoder_hook(self, j: int):
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if not module.training:
                return
            x, data = args[0].detach(), self.run.inputs[j]
            match = (x.reshape(len(x), 1, -1) == data.reshape(1, len(data), -1)).all(dim=-1)
            assert bool((match.sum(dim=1) == 1).all()), "each encoder input row is one dataset row"
            self._rows = (j, match.float().argmax(dim=1))

        return hook

    def _head_hook(self, module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
        if not module.training:
            return
        assert self._rows is not None
        j, rows = self._rows
        self.events.append((j, out.detach().double(), self.run.labels[rows]))
        self._rows = None

    def iterations(self, m: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """The recorded passes since the last call, as iterations of M (logits, labels), by modality."""
        events, self.events = self.events, []
        assert len(events) % m == 0
        out = []
        for k in range(0, len(events), m):
            chunk = events[k : k + m]
            assert [e[0] for e in chunk] == list(range(m))  # modalities in order, once per iteration
            out.append([(e[1], e[2]) for e in chunk])
        return out


def score(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """s_t(j) = (1 / n_j) sum_i softmax(logits_i)[y_i]."""
    return float(torch.softmax(logits, 1).gather(1, labels[:, None]).mean())


def macro_f1(pred: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    f1 = []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        f1.append(0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


def validation_by_hand(env: gym.Env, split: str = "val") -> dict[str, Any]:
    """Fused and branch metrics of a split recomputed from the model's branch logits."""
    run = unwrapped(env).run
    assert run is not None
    idx = run.splits[split]
    y = run.labels[idx]
    with torch.no_grad():
        logits = torch.stack([run.model.branch_logits(j, x[idx]) for j, x in enumerate(run.inputs)]).double()
    if unwrapped(env).config.method == "mla":
        log_p = torch.log_softmax(logits, -1)
        w = torch.softmax((log_p.exp() * log_p).sum(-1), dim=0)  # softmax_j(-entropy_j), per example
        fused = (w[..., None] * logits).sum(0)
    else:
        fused = logits.sum(0)
    pred = fused.argmax(1)
    return {
        "val_accuracy": float((pred == y).double().mean()),
        "val_macro_f1": macro_f1(pred.numpy(), y.numpy(), int(run.dataset.num_classes)),
        "val_loss": float(F.cross_entropy(fused, y)),
        "val_branch_accuracy": [float((lg.argmax(1) == y).double().mean()) for lg in logits],
    }


def assert_obs_matches(env: gym.Env, obs: np.ndarray, expected: dict[str, Any]) -> None:
    layout = unwrapped(env).layout
    assert env.observation_space.contains(obs)
    for name, value in expected.items():
        sl = layout.slices[name]
        want = np.clip(np.asarray(value, dtype=np.float64).reshape(-1), layout.low[sl], layout.high[sl])
        np.testing.assert_allclose(layout.get(obs, name), want, rtol=2e-5, atol=2e-6, err_msg=name)


@pytest.mark.parametrize(
    ("method", "monitor", "beta"), [("joint", "mean", 0.9), ("mla", "ema", 0.7), ("ogm_ge", "ema", 0.9)]
)
def test_scores_observation_and_reward_by_hand(method: str, monitor: str, beta: float) -> None:
    n_steps = len(ACTIONS)
    env = gym.make("DUS-Synthetic-v0", **TINY, method=method, monitor=monitor, n_steps=n_steps,
                   run_config={"monitor_beta": beta})
    obs, info = env.reset(seed=0)
    m, B = 2, TINY["base_batch"]
    val = validation_by_hand(env)
    for key in val:
        assert info[key] == pytest.approx(val[key], abs=1e-6), key
    zeros = np.zeros(m)
    assert_obs_matches(env, obs, {
        "score": zeros, "last_score": zeros, "discrepancy": zeros, "train_loss": zeros, "loss_trend": zeros,
        "val_branch_accuracy": info["val_branch_accuracy"], "val_accuracy": info["val_accuracy"],
        "val_loss": info["val_loss"], "progress": 0.0, "quantity": np.ones(m),
    })
    recorder = Recorder(unwrapped(env).run)
    S: np.ndarray | None = None
    t = 0
    prev_branch_loss, prev_val = np.zeros(m), info
    for step, (action, counts) in enumerate(ACTIONS, start=1):
        obs, reward, terminated, truncated, info = env.step(np.array(action))
        iterations = recorder.iterations(m)
        assert len(iterations) == TINY["iterations_per_step"]
        assert info["quantities"].tolist() == counts
        for it in iterations:
            assert [len(lab) for _, lab in it] == counts  # modality j trained on n_j examples
            s = np.array([score(lg, lab) for lg, lab in it])
            t += 1
            if S is None:
                S = s.copy()  # S_1 = s_1 in both modes
            elif monitor == "mean":
                S = (t - 1) / t * S + s / t
            else:
                S = beta * S + (1 - beta) * s
        assert S is not None
        d = S - S.mean()
        branch_loss = np.mean([[float(F.cross_entropy(lg, lab)) for lg, lab in it] for it in iterations], axis=0)
        np.testing.assert_allclose(info["last_scores"], s, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(info["scores"], S, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(info["discrepancy"], d, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(info["branch_train_loss"], branch_loss, rtol=1e-5, atol=1e-6)
        if method == "mla":  # the optimised loss: sum_j (summed CE of j's n_j examples) / B, mean over iterations
            loss = np.mean([sum(float(F.cross_entropy(lg, lab, reduction="sum")) for lg, lab in it) / B
                            for it in iterations])
            assert info["train_loss"] == pytest.approx(loss, rel=1e-5)
        val = validation_by_hand(env)
        for key in val:
            assert info[key] == pytest.approx(val[key], abs=1e-6), key
        assert_obs_matches(env, obs, {
            "score": S, "last_score": s, "discrepancy": d, "train_loss": branch_loss,
            "loss_trend": branch_loss - prev_branch_loss, "val_branch_accuracy": info["val_branch_accuracy"],
            "val_accuracy": info["val_accuracy"], "val_loss": info["val_loss"], "progress": step / n_steps,
            "quantity": np.array(counts) / B,
        })
        # reward: the change of fused validation accuracy since the previous step
        assert reward == pytest.approx(info["val_accuracy"] - prev_val["val_accuracy"], abs=1e-6)
        assert not terminated and truncated == (step == n_steps) and not info["diverged"]
        assert ("test" in info) == truncated
        prev_branch_loss, prev_val = branch_loss, info
    # the last step reports the test split (never part of the reward): fused and branch metrics,
    # the imbalance gap (best minus worst branch accuracy) and the linear probe of each encoder
    test, names = info["test"], unwrapped(env).modalities
    by_hand = validation_by_hand(env, "test")
    assert test["accuracy"] == pytest.approx(by_hand["val_accuracy"], abs=1e-6)
    assert test["macro_f1"] == pytest.approx(by_hand["val_macro_f1"], abs=1e-6)
    assert test["loss"] == pytest.approx(by_hand["val_loss"], abs=1e-5)
    branch = by_hand["val_branch_accuracy"]
    assert test["branch_accuracy"] == pytest.approx(dict(zip(names, branch)), abs=1e-6)
    assert test["imbalance_gap"] == pytest.approx(max(branch) - min(branch), abs=1e-6)
    run = unwrapped(env).run
    assert run is not None
    assert test["probe_accuracy"] == pytest.approx(dict(zip(names, run.probe("test"))), abs=1e-6)


@pytest.mark.parametrize(("metric", "key", "sign"), [("loss", "val_loss", -1), ("f1", "val_macro_f1", 1)])
def test_reward_is_the_step_change_of_the_chosen_metric(metric: str, key: str, sign: int) -> None:
    env = gym.make("DUS-Synthetic-v0", **TINY, n_steps=3, reward_metric=metric)
    _, prev = env.reset(seed=1)
    for action, _ in ACTIONS[:3]:
        _, reward, _, _, info = env.step(np.array(action))
        assert info[key] == pytest.approx(validation_by_hand(env)[key], abs=1e-6)
        assert reward == pytest.approx(sign * (info[key] - prev[key]), abs=1e-6)
        prev = info


def test_free_budget_cost_is_relative_to_m_times_b_both_ways() -> None:
    """reward = metric change - sample_cost * (sum_j n_j - M B) / (M B): fewer
    samples than M B earn a bonus; counts n_j = round(B w_j), clipped."""
    kwargs = {**TINY, "n_steps": 3, "budget": "free", "action_type": "continuous"}
    costly = gym.make("DUS-Synthetic-v0", **kwargs, sample_cost=0.3)
    free = gym.make("DUS-Synthetic-v0", **kwargs, sample_cost=0.0)
    costly.reset(seed=2)
    free.reset(seed=2)
    # n_j = round(8 * 4 ** a_j), in [1, 24]: more than M B = 16, fewer, and both at n_max
    for action, counts in [([0.5, 0.0], [16, 8]), ([-1.0, -0.5], [2, 4]), ([1.0, 1.0], [24, 24])]:
        _, r_cost, _, _, info = costly.step(np.array(action, dtype=np.float32))
        _, r_free, _, _, _ = free.step(np.array(action, dtype=np.float32))
        assert info["quantities"].tolist() == counts
        assert r_cost == pytest.approx(float(r_free) - 0.3 * (sum(counts) - 16) / 16, abs=1e-9)


def test_fixed_budget_charges_nothing() -> None:
    a = gym.make("DUS-Synthetic-v0", **TINY, n_steps=2, sample_cost=5.0)
    b = gym.make("DUS-Synthetic-v0", **TINY, n_steps=2, sample_cost=0.0)
    a.reset(seed=3)
    b.reset(seed=3)
    for action in ([8, 0], [1, 5]):
        assert a.step(np.array(action))[1] == b.step(np.array(action))[1]


def test_divergence_reward_is_minus_the_penalty_and_obs_stays_in_bounds() -> None:
    env = gym.make("DUS-Synthetic-v0", **TINY, n_steps=6, lr=1e9, divergence_penalty=0.7)
    env.reset(seed=0)
    for _ in range(6):
        obs, reward, terminated, truncated, info = env.step(np.array([2, 6]))
        if terminated:
            break
    assert terminated and not truncated and info["diverged"] and reward == -0.7
    assert "test" not in info
    assert env.observation_space.contains(obs)
    layout = unwrapped(env).layout
    # a non-finite loss is reported at the cap
    assert np.all(np.abs(layout.get(obs, "train_loss")) <= LOSS_CAP)


def test_layout_bounds_match_the_documented_table() -> None:
    env = gym.make("DUS-Synthetic-v0", **TINY, n_steps=2, n_max=20)
    layout = unwrapped(env).layout
    bounds = {
        "score": (0, 1), "last_score": (0, 1), "discrepancy": (-1, 1), "train_loss": (0, 10),
        "loss_trend": (-10, 10), "val_branch_accuracy": (0, 1), "val_accuracy": (0, 1), "val_loss": (0, 10),
        "progress": (0, 1), "quantity": (0, 20 / 8),
    }
    order = ["score", "last_score", "discrepancy", "train_loss", "loss_trend", "val_branch_accuracy"]
    for k, name in enumerate(order):  # per-modality blocks first, M = 2 entries each
        assert layout.slices[name] == slice(2 * k, 2 * k + 2), name
    assert [layout.slices[n].start for n in ("val_accuracy", "val_loss", "progress")] == [12, 13, 14]
    assert layout.slices["quantity"] == slice(15, 17)
    for name, (lo, hi) in bounds.items():
        np.testing.assert_allclose(layout.low[layout.slices[name]], lo, err_msg=name)
        np.testing.assert_allclose(layout.high[layout.slices[name]], hi, rtol=1e-6, err_msg=name)
    assert isinstance(env.observation_space, gym.spaces.Box)
    np.testing.assert_array_equal(env.observation_space.low, layout.low)
    np.testing.assert_array_equal(env.observation_space.high, layout.high)


def test_layout_builds_one_observation_or_n_from_its_own_slices() -> None:
    from dus_gym.envs.observation import ObservationLayout

    layout = ObservationLayout(["a", "b"], max_quantity=3.0)
    rng = np.random.default_rng(0)
    rows = {name: rng.uniform(0.1, 0.9, size=(4, sl.stop - sl.start)) for name, sl in layout.slices.items()}
    rows["val_loss"][2] = np.nan  # a diverged run: reported at the cap
    batch = layout.build(rows, rows=4)
    assert batch.shape == (4, layout.size) and batch.dtype == np.float32
    for i in range(4):
        one = layout.build({name: v[i] for name, v in rows.items()})
        np.testing.assert_array_equal(one, batch[i])  # N rows are N single observations
        for name, v in rows.items():
            want = LOSS_CAP if name == "val_loss" and i == 2 else v[i]
            np.testing.assert_allclose(layout.get(one, name), np.minimum(want, layout.high[layout.slices[name]]),
                                       rtol=1e-6, err_msg=name)
    shared = layout.build({**rows, "progress": 0.5}, rows=4)  # one value for every row
    np.testing.assert_allclose(layout.get(shared, "progress"), 0.5)
    with pytest.raises(ValueError, match=r"components \['quantity'\] missing"):
        layout.build({k: v for k, v in rows.items() if k != "quantity"}, rows=4)
