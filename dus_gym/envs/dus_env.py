"""DUSEnv: one multimodal training run as a Gymnasium environment (METHOD.md section 6)."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from dus_gym.budget import QuantityRule
from dus_gym.data import MultimodalDataset, dataset_modalities, load_dataset
from dus_gym.instances import resolve_instances
from dus_gym.methods import METHODS, make_method
from dus_gym.run import RunConfig, TrainingRun

__all__ = ["DUSEnv", "ObservationLayout", "REWARD_METRICS", "LOSS_CAP"]

REWARD_METRICS = ("accuracy", "f1", "loss")
LOSS_CAP = 10.0
"""Losses (nats) in the observation are clipped to [0, LOSS_CAP], trends to +-LOSS_CAP."""
_SEED_KEYS = ("split_seed", "init_seed", "sample_seed", "data_seed")


class ObservationLayout:
    """Where each component sits in the observation vector, and its bounds.

    Per-modality blocks come first (M entries each, in modality order), then
    the three global entries, then the previous action's quantities.
    """

    PER_MODALITY = ("score", "last_score", "discrepancy", "train_loss", "loss_trend", "val_branch_accuracy")
    GLOBAL = ("val_accuracy", "val_loss", "progress")

    def __init__(self, modalities: Sequence[str], max_quantity: float) -> None:
        self.modalities = list(modalities)
        m = len(self.modalities)
        bounds = {
            "score": (0.0, 1.0),
            "last_score": (0.0, 1.0),
            "discrepancy": (-1.0, 1.0),
            "train_loss": (0.0, LOSS_CAP),
            "loss_trend": (-LOSS_CAP, LOSS_CAP),
            "val_branch_accuracy": (0.0, 1.0),
            "val_accuracy": (0.0, 1.0),
            "val_loss": (0.0, LOSS_CAP),
            "progress": (0.0, 1.0),
            "quantity": (0.0, max_quantity),
        }
        self.slices: dict[str, slice] = {}
        low: list[float] = []
        high: list[float] = []
        for name, width in [(n, m) for n in self.PER_MODALITY] + [(n, 1) for n in self.GLOBAL] + [("quantity", m)]:
            self.slices[name] = slice(len(low), len(low) + width)
            low += [bounds[name][0]] * width
            high += [bounds[name][1]] * width
        self.low = np.asarray(low, dtype=np.float32)
        self.high = np.asarray(high, dtype=np.float32)

    @property
    def size(self) -> int:
        return len(self.low)

    def get(self, obs: np.ndarray, name: str) -> np.ndarray:
        """Component ``name`` of an observation (or of a batch, along the last axis)."""
        return np.asarray(obs)[..., self.slices[name]]

    def describe(self) -> list[tuple[int, str, float, float]]:
        """Rows ``(index, meaning, min, max)``, one per entry."""
        rows = []
        for name, sl in self.slices.items():
            for k in range(sl.start, sl.stop):
                label = name if sl.stop - sl.start == 1 else f"{name}[{self.modalities[k - sl.start]}]"
                rows.append((k, label, float(self.low[k]), float(self.high[k])))
        return rows


class DUSEnv(gym.Env[np.ndarray, np.ndarray]):
    """
    ## Description

    One episode is one training run of a multimodal classifier from scratch
    (a real PyTorch model, on the GPU when there is one). At each step the
    agent picks how many examples of each modality the model sees per
    iteration; the run trains ``iterations_per_step`` iterations (one epoch by
    default) with those quantities, evaluates on the validation split, and
    reports the cumulative modality discrepancy of METHOD.md section 2. This
    is data-aware unimodal sampling (DUS, Jiang et al. 2025) with the sampler
    as the agent.

    ## Action Space

    Per modality j a weight ``w_j`` in ``[1/max_ratio, max_ratio]``:

    - ``action_type="discrete"`` (default): ``MultiDiscrete([levels] * M)``,
      level ``l`` is ``w = max_ratio ** (2 l / (levels - 1) - 1)``; the middle
      level is ``w = 1``.
    - ``action_type="continuous"``: ``Box(-1, 1, (M,), float32)``,
      ``w = max_ratio ** a``.

    With ``budget="fixed"`` (default) the weights are shares of ``M * B``
    examples per iteration: counts ``n_j`` in ``[n_min, n_max]`` summing to
    exactly ``M * B`` (METHOD.md section 3). With ``budget="free"``,
    ``n_j = B * w_j`` and each example beyond ``M * B`` costs reward.

    ## Observation Space

    ``Box(low, high, (7M + 3,), float32)``; M modalities, in order:

    | Num | Observation | Min | Max |
    |-----|-------------|-----|-----|
    | 0 .. M-1 | cumulative score S_t(j) (running mean of s_t) | 0 | 1 |
    | M .. 2M-1 | latest score s_t(j): mean true-class probability of j's batch | 0 | 1 |
    | 2M .. 3M-1 | discrepancy d_t(j) = S_t(j) - mean_k S_t(k) | -1 | 1 |
    | 3M .. 4M-1 | j's training cross-entropy, mean over the step (nats, clipped) | 0 | 10 |
    | 4M .. 5M-1 | its change since the previous step (clipped) | -10 | 10 |
    | 5M .. 6M-1 | validation accuracy of j's branch | 0 | 1 |
    | 6M | fused validation accuracy | 0 | 1 |
    | 6M+1 | fused validation loss (nats, clipped) | 0 | 10 |
    | 6M+2 | fraction of the run done, step / n_steps | 0 | 1 |
    | 6M+3 .. 7M+2 | previous quantities n_j / B | 0 | n_max / B |

    ``env.unwrapped.layout`` gives the slices by name.

    ## Rewards

    The change of the validation metric since the previous step: fused
    accuracy (``reward_metric="accuracy"``, default), macro-F1 (``"f1"``) or
    the decrease of the fused loss (``"loss"``). The rewards of an episode sum
    to the final minus the initial metric. With ``budget="free"``,
    ``sample_cost * (sum_j n_j - M B) / (M B)`` is subtracted each step.

    ## Starting State

    A freshly initialised model (no training yet): scores, losses and the
    step are zero, the previous quantities are uniform (``n_j / B = 1``), the
    validation metrics are those of the untrained model. Each reset draws an
    instance (split, initialisation, batch-order and, for synthetic data,
    generator seeds) from ``np_random``, or takes it from
    ``options={"instance": {...}}``. With ``instances`` set, each reset
    draws the instance from that set with ``np_random`` instead (a
    ``dataset_kwargs`` entry of the instance overrides the synthetic
    configuration for that episode; :mod:`dus_gym.instances`); the batch-order
    seed is still drawn. ``info["instance"]`` at reset says which it was.

    ## Episode End

    - Truncation: after ``n_steps`` steps, the run's epoch budget (registered
      as ``max_episode_steps`` too). The last step's ``info["test"]`` holds the
      held-out test metrics: fused accuracy, macro-F1, loss, per-modality
      branch accuracy and linear-probe accuracy (never part of the reward).
    - Termination: the training loss is not finite (the run diverged). The
      reward is ``-divergence_penalty`` and ``info["diverged"]`` is True.

    ## Arguments

    | Parameter | Type | Default | Description |
    |-----------|------|---------|-------------|
    | dataset | str or MultimodalDataset | "digits" | "digits", "synthetic:PRESET", "bundle:PATH" or a dataset object |
    | views | list[str] or None | None | modalities to use (digits default: pix, zer) |
    | dataset_kwargs | dict | {} | synthetic-config overrides, e.g. {"shortcut_rho": 0.8} |
    | data_seed | int or None | None | synthetic generator seed; None draws one per reset |
    | method | str | "joint" | "joint", "mla" or "ogm_ge" |
    | method_kwargs | dict or None | None | options: ogm_ge `alpha`, `noise`; mla `projection` (docs/research.md) |
    | budget | str | "fixed" | "fixed" or "free" |
    | action_type | str | "discrete" | "discrete" or "continuous" |
    | levels | int | 9 | discrete levels per modality (odd) |
    | max_ratio | float | 4.0 | largest weight; smallest is its inverse |
    | n_min, n_max | int | 1, 3B | bounds on each count |
    | n_steps | int | 30 | steps (epochs) per episode |
    | iterations_per_step | int or None | None | None: one epoch of the training split |
    | base_batch | int | 64 | B |
    | reward_metric | str | "accuracy" | "accuracy", "f1" or "loss" |
    | sample_cost | float | 0.0 | free budget: cost of doubling the examples |
    | divergence_penalty | float | 1.0 | reward when the run diverges |
    | optimizer, lr, momentum, weight_decay | | "sgd", 0.05, 0.9, 1e-4 | learning settings |
    | monitor | str | "mean" | "mean" or "ema" score accumulation |
    | device | str | "auto" | "auto", "cpu", "cuda", ... |
    | run_config | dict | {} | any other :class:`~dus_gym.run.RunConfig` field |
    | instances | str, list or None | None | set each reset draws from: "train", "eval", "shortcut:eval", a list |

    ```python
    import gymnasium as gym
    import dus_gym  # registers the ids
    env = gym.make("DUS-v0", views=["pix", "zer"], method="joint", n_steps=30)
    env = gym.make("DUS-Synthetic-v0", dataset_kwargs={"shortcut_rho": 0.9})
    ```

    ## Version History

    - v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it so)

    def __init__(
        self,
        dataset: str | MultimodalDataset = "digits",
        views: Sequence[str] | None = None,
        dataset_kwargs: Mapping[str, Any] | None = None,
        data_seed: int | None = None,
        method: str = "joint",
        budget: str = "fixed",
        action_type: str = "discrete",
        levels: int = 9,
        max_ratio: float = 4.0,
        n_min: int = 1,
        n_max: int | None = None,
        n_steps: int = 30,
        iterations_per_step: int | None = None,
        base_batch: int = 64,
        reward_metric: str = "accuracy",
        sample_cost: float = 0.0,
        divergence_penalty: float = 1.0,
        optimizer: str = "sgd",
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        monitor: str = "mean",
        device: str = "auto",
        run_config: Mapping[str, Any] | None = None,
        instances: str | Sequence[Mapping[str, Any]] | None = None,
        method_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid methods: {sorted(METHODS)}")
        if reward_metric not in REWARD_METRICS:
            raise ValueError(f"unknown reward_metric {reward_metric!r}; valid: {list(REWARD_METRICS)}")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if iterations_per_step is not None and iterations_per_step < 1:
            raise ValueError(f"iterations_per_step must be >= 1 or None, got {iterations_per_step}")
        self.dataset_spec = dataset
        self.views = None if views is None else list(views)
        self.dataset_kwargs = dict(dataset_kwargs or {})
        self.data_seed = data_seed
        if isinstance(dataset, MultimodalDataset):
            self.modalities = dataset.modality_names if views is None else dataset.select(views).modality_names
        else:
            self.modalities = dataset_modalities(dataset, self.views, **self.dataset_kwargs)
        method_options: dict[str, Any] = {} if method_kwargs is None else {"method_kwargs": dict(method_kwargs)}
        try:
            self.config = replace(
                RunConfig(),
                method=method, base_batch=base_batch, optimizer=optimizer, lr=lr, momentum=momentum,
                weight_decay=weight_decay, monitor=monitor, device=device, **dict(run_config or {}),
                **method_options,
            )
        except TypeError as err:
            raise ValueError(f"run_config: {err}; valid fields: {list(RunConfig.__dataclass_fields__)}") from None
        make_method(self.config.method, **dict(self.config.method_kwargs))  # bad options fail here, not at reset
        m = len(self.modalities)
        self.rule = QuantityRule(
            m, base_batch, budget, action_type, levels, max_ratio, n_min, 3 * base_batch if n_max is None else n_max
        )
        self.n_steps = n_steps
        self.iterations_per_step = iterations_per_step
        self.reward_metric = reward_metric
        self.sample_cost = sample_cost
        self.divergence_penalty = divergence_penalty
        self.layout = ObservationLayout(self.modalities, self.rule.n_max / base_batch)
        self.observation_space = spaces.Box(self.layout.low, self.layout.high, dtype=np.float32)
        self.action_space: spaces.Space[np.ndarray]
        if action_type == "discrete":
            self.action_space = spaces.MultiDiscrete(np.full(m, levels, dtype=np.int64))
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (m,), dtype=np.float32)
        self.run: TrainingRun | None = None
        self._data: MultimodalDataset | None = None
        if isinstance(dataset, MultimodalDataset):
            self._data = dataset if views is None else dataset.select(views)
        self._data_key: Any = None
        self.instances = None if instances is None else resolve_instances(instances)

    # -- episode ----------------------------------------------------------------

    def _load(self, data_seed: int, overrides: Mapping[str, Any] | None = None) -> MultimodalDataset:
        """The dataset of this episode; reloaded only when the instance changes it."""
        if isinstance(self.dataset_spec, MultimodalDataset):
            assert self._data is not None
            return self._data
        is_synthetic = self.dataset_spec.startswith("synthetic")
        kwargs = {**self.dataset_kwargs, **dict(overrides or {})}
        key = (data_seed, json.dumps(kwargs, sort_keys=True)) if is_synthetic else None
        if self._data is None or key != self._data_key:
            self._data = load_dataset(self.dataset_spec, self.views, seed=data_seed, **kwargs)
            self._data_key = key
        return self._data

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        drawn = {k: int(v) for k, v in zip(_SEED_KEYS, self.np_random.integers(0, 2**31 - 1, size=4))}
        if self.data_seed is not None:
            drawn["data_seed"] = self.data_seed
        if self.instances is not None:
            drawn.update(self.instances[int(self.np_random.integers(len(self.instances)))])
        given = dict((options or {}).get("instance", {}))
        unknown = set(given) - {*_SEED_KEYS, "dataset_kwargs"}
        if unknown:
            raise ValueError(
                f"reset options['instance']: unknown keys {sorted(unknown)}; valid: {[*_SEED_KEYS, 'dataset_kwargs']}"
            )
        self.instance: dict[str, Any] = {
            **drawn, **{k: (dict(v) if k == "dataset_kwargs" else int(v)) for k, v in given.items()}
        }
        data = self._load(self.instance["data_seed"], self.instance.get("dataset_kwargs"))
        self.run = TrainingRun(
            data, self.config, self.instance["split_seed"], self.instance["init_seed"], self.instance["sample_seed"]
        )
        self._iterations = self.iterations_per_step or self.run.iterations_per_epoch
        self._step = 0
        m = self.run.num_modalities
        self._prev_branch_loss = np.zeros(m)
        self._prev_counts = np.full(m, self.config.base_batch, dtype=np.int64)
        values = self.run.evaluate_tensors("val").cpu().numpy()
        self._evaluation = self.run.unpack_evaluation(values)
        self._metric = self._reward_metric_value()
        zeros = np.zeros(m)
        obs = self._observation(zeros, zeros, zeros, zeros, zeros)
        info = {"instance": dict(self.instance), **self._eval_info(), "quantities": self._prev_counts.tolist()}
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.run is None:
            raise RuntimeError("DUSEnv.step() called before reset()")
        counts = self.rule.quantities(self._check_action(action))
        run = self.run
        stats = run.train(counts, self._iterations)
        mon = run.monitor
        # One host transfer per step: everything the observation and info need.
        packed = run.evaluate_tensors("val")
        parts = (mon.cumulative, mon.last, mon.discrepancy, stats.branch_loss, stats.loss, stats.finite, packed)
        flat = torch.cat([t.detach().float().reshape(-1) for t in parts]).cpu().numpy()
        m = run.num_modalities
        S, s, d, branch_loss = (flat[k * m : (k + 1) * m] for k in range(4))
        train_loss, finite = float(flat[4 * m]), bool(flat[4 * m + 1])
        self._evaluation = run.unpack_evaluation(flat[4 * m + 2 :])
        self._step += 1
        self._prev_counts = counts
        finite = finite and bool(np.isfinite(flat).all())
        trend = branch_loss - self._prev_branch_loss
        self._prev_branch_loss = branch_loss
        info: dict[str, Any] = {
            "step": self._step,
            "quantities": counts.tolist(),
            "scores": S.tolist(),
            "last_scores": s.tolist(),
            "discrepancy": d.tolist(),
            "train_loss": train_loss,
            "branch_train_loss": branch_loss.tolist(),
            "diverged": not finite,
            **self._eval_info(),
        }
        truncated = self._step >= self.n_steps
        if not finite:
            reward = -float(self.divergence_penalty)
            info["divergence"] = f"non-finite training loss at step {self._step}; the run stopped"
        else:
            metric = self._reward_metric_value()
            reward = metric - self._metric
            self._metric = metric
            if self.rule.budget == "free":
                reward -= self.sample_cost * (int(counts.sum()) - self.rule.total) / self.rule.total
            if truncated:
                info["test"] = self.test_metrics()
        obs = self._observation(S, s, d, branch_loss, trend)
        return obs, float(reward), not finite, truncated and finite, info

    def get_state(self) -> dict[str, Any]:
        """A snapshot of the episode: the run (model, optimizer, monitor, method,
        torch generator), the step, the previous values the observation and
        reward are built from, and ``np_random``'s bit-generator state.

        :meth:`set_state` brings the env back to it; stepping with the same
        actions then gives the same observations, rewards and infos (bit for
        bit on the CPU). Snapshots stay on the run's device; each holds a copy
        of the model and optimizer state.
        """
        if self.run is None:
            raise RuntimeError("DUSEnv.get_state() called before reset()")
        return {
            "instance": copy.deepcopy(self.instance),
            "run": self.run.get_state(),
            "step": self._step,
            "iterations": self._iterations,
            "prev_branch_loss": self._prev_branch_loss.copy(),
            "prev_counts": self._prev_counts.copy(),
            "evaluation": copy.deepcopy(self._evaluation),
            "metric": self._metric,
            "np_random": copy.deepcopy(self.np_random.bit_generator.state),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`get_state` snapshot of this episode (reusable any number of times).

        The snapshot must come from the current instance (same data, split and
        seeds): it holds the trained state, not the data.
        """
        if self.run is None:
            raise RuntimeError("DUSEnv.set_state() called before reset()")
        if state.get("instance") != self.instance:
            raise ValueError(
                f"DUSEnv.set_state: snapshot of instance {state.get('instance')}, but the current episode runs "
                f"instance {self.instance}; reset with options={{'instance': ...}} to that instance first"
            )
        self.run.set_state(state["run"])
        self._step = int(state["step"])
        self._iterations = int(state["iterations"])
        self._prev_branch_loss = state["prev_branch_loss"].copy()
        self._prev_counts = state["prev_counts"].copy()
        self._evaluation = copy.deepcopy(state["evaluation"])
        self._metric = float(state["metric"])
        self.np_random.bit_generator.state = copy.deepcopy(state["np_random"])

    def test_metrics(self) -> dict[str, Any]:
        """Held-out test metrics of the current model, with a linear probe per modality."""
        assert self.run is not None
        ev = self.run.evaluate("test")
        probe = self.run.probe("test")
        return {
            "accuracy": ev.accuracy,
            "macro_f1": ev.macro_f1,
            "loss": ev.loss,
            "branch_accuracy": dict(zip(self.modalities, ev.branch_accuracy)),
            "probe_accuracy": dict(zip(self.modalities, probe)),
            "imbalance_gap": max(ev.branch_accuracy) - min(ev.branch_accuracy),
        }

    # -- helpers ----------------------------------------------------------------

    def _reward_metric_value(self) -> float:
        ev = self._evaluation
        return {"accuracy": ev.accuracy, "f1": ev.macro_f1, "loss": -ev.loss}[self.reward_metric]

    def _eval_info(self) -> dict[str, Any]:
        ev = self._evaluation
        return {
            "val_accuracy": ev.accuracy,
            "val_macro_f1": ev.macro_f1,
            "val_loss": ev.loss,
            "val_branch_accuracy": ev.branch_accuracy,
        }

    def _observation(
        self, S: np.ndarray, s: np.ndarray, d: np.ndarray, branch_loss: np.ndarray, trend: np.ndarray
    ) -> np.ndarray:
        ev = self._evaluation
        parts = [
            S, s, d, branch_loss, trend, ev.branch_accuracy,
            [ev.accuracy, ev.loss, self._step / self.n_steps],
            self._prev_counts / self.config.base_batch,
        ]
        obs = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])
        # A diverged run has NaN losses: report them at the cap, inside the space.
        obs = np.nan_to_num(obs, nan=LOSS_CAP, posinf=LOSS_CAP, neginf=-LOSS_CAP)
        return np.clip(obs, self.layout.low, self.layout.high).astype(np.float32)

    def _check_action(self, action: Any) -> np.ndarray:
        a = np.asarray(action)
        m = len(self.modalities)
        where = f"DUSEnv.step: action {a.tolist()!r}"
        if a.shape != (m,):
            raise ValueError(
                f"{where} has shape {a.shape}; expected ({m},), one entry per modality {self.modalities}"
            )
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            raise ValueError(f"{where} has dtype {a.dtype}; expected numbers")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{where} is not finite")
        if self.rule.action_type == "discrete":
            if not np.all(a == np.round(a)) or a.min() < 0 or a.max() >= self.rule.levels:
                raise ValueError(f"{where} is outside the action space: expected integers in [0, {self.rule.levels})")
            return a.astype(np.int64)
        if a.min() < -1.0 or a.max() > 1.0:
            raise ValueError(f"{where} is outside the action space: expected values in [-1, 1]")
        return a.astype(np.float64)
