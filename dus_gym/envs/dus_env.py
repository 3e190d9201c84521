"""DUSEnv: one multimodal training run as a Gymnasium environment (docs/method.md section 6)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dus_gym.budget import QuantityRule
from dus_gym.data import DatasetSource, MultimodalDataset
from dus_gym.envs.observation import LOSS_CAP, ObservationLayout, step_info
from dus_gym.instances import draw_instance, resolve_instances
from dus_gym.methods import make_method
from dus_gym.run import EPISODE_STEPS, Evaluation, RunConfig, StepReport, TrainingRun, resolve_device

__all__ = ["DUSEnv", "EPISODE_STEPS", "LOSS_CAP", "ObservationLayout", "REWARD_METRICS"]

REWARD_METRICS = ("accuracy", "f1", "loss")

class DUSEnv(gym.Env[np.ndarray, np.ndarray]):
    """
    ## Description

    One episode is one training run of a multimodal classifier from scratch
    (a real PyTorch model, on the GPU when there is one). At each step the
    agent picks how many examples of each modality the model sees per
    iteration; the run trains ``iterations_per_step`` iterations (one epoch by
    default) with those quantities, evaluates on the validation split, and
    reports the cumulative modality discrepancy of docs/method.md section 2. This
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
    exactly ``M * B`` (docs/method.md section 3). With ``budget="free"``,
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
    seed is still drawn. ``env.unwrapped.instance`` says which it was.

    ## Episode End

    - Truncation: after ``n_steps`` steps, the run's epoch budget. The env
      owns its episode length: the ids are registered without
      ``max_episode_steps``, so ``gym.make(id, n_steps=40)`` gives 40-step
      episodes. The last step's ``info["test"]`` holds the held-out test
      metrics: fused accuracy, macro-F1, loss, per-modality branch accuracy
      and linear-probe accuracy (never part of the reward). A
      ``max_episode_steps`` given to ``gym.make`` adds Gymnasium's
      ``TimeLimit``, which cuts an episode at that step from outside, before
      ``n_steps`` if smaller (then without ``info["test"]``; use ``n_steps``).
    - Termination: the training loss is not finite (the run diverged). The
      reward is ``-divergence_penalty`` and ``info["diverged"]`` is True.
    - A ``step()`` after either end raises a RuntimeError: call ``reset()``.

    ## Info

    Every value is a NumPy array or a NumPy scalar, and reset and step infos
    have the same keys ("always" below), so that Gymnasium's vector envs batch
    them to ``(N, ...)`` arrays and TorchRL reads them as tensors (M
    modalities, in ``env.unwrapped.modalities`` order). Two keys come only at
    the end of an episode, where Gymnasium batches them too but TorchRL's
    reader (whose keys are the first info's) leaves them out: ``divergence``
    and ``test``, whose test metrics ``env.unwrapped.test_metrics()`` also
    gives. The episode's seeds are ``env.unwrapped.instance`` (a dict: a
    dict is no info value TorchRL can read).

    | Key | Type | When | Meaning |
    |-----|------|------|---------|
    | step | int64 | always | steps taken in this episode (0 at reset) |
    | quantities | int64 ``(M,)`` | always | examples of each modality per iteration (at reset: uniform, B each) |
    | scores, last_scores | float64 ``(M,)`` in [0, 1] | always | ``S_t`` and ``s_t`` (0 at reset) |
    | discrepancy | float64 ``(M,)`` in [-1, 1] | always | ``d_t`` (0 at reset) |
    | train_loss | float64 (nats) | always | the optimised loss, mean over the step (0 at reset) |
    | branch_train_loss | float64 ``(M,)`` (nats) | always | each modality's cross-entropy, mean over the step |
    | diverged | bool, 0-d array | always | the training loss was not finite |
    | val_accuracy, val_macro_f1 | float64 in [0, 1] | always | fused validation metrics |
    | val_loss | float64 (nats) | always | fused validation cross-entropy |
    | val_branch_accuracy | float64 ``(M,)`` in [0, 1] | always | each branch's validation accuracy |
    | divergence | str | a diverged step | what happened |
    | test | dict (below) | the truncating step | held-out test metrics |

    ``info["test"]``: ``accuracy``, ``macro_f1`` (float in [0, 1]), ``loss``
    (float, nats), ``branch_accuracy`` and ``probe_accuracy`` (dict: modality
    name -> float in [0, 1]; NaN probe for a diverged encoder; absent with
    ``test_probe=False``).

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
    | device | str | "auto" | "auto", "cpu", "cuda", ...; checked at construction |
    | run_config | dict | {} | any other :class:`~dus_gym.run.RunConfig` field, e.g. {"threads": 2} |
    | instances | str, list or None | None | set each reset draws from: "train", "eval", "shortcut:eval", a list |
    | test_probe | bool | True | fit the linear probes of `info["test"]`; False skips them (see below) |

    ```python
    import gymnasium as gym
    import dus_gym  # registers the ids
    env = gym.make("DUS-v0", views=["pix", "zer"], method="joint", n_steps=30)
    env = gym.make("DUS-Synthetic-v0", dataset_kwargs={"shortcut_rho": 0.9})
    ```

    Defaults of the learning settings are :class:`~dus_gym.run.RunConfig`'s.
    Torch runs with one intra-op thread inside ``step()`` for the default
    small models (``RunConfig.threads="auto"``; your own setting is restored
    after each call); ``run_config={"threads": None}`` keeps torch's.
    ``DUSEnv(config_dict)`` is ``DUSEnv(**config_dict)``, as Ray RLlib calls
    an env class with its ``env_config``. ``test_probe=False`` serves a
    schedule search that reads only the fused accuracy: the probes cost about
    40% of a synthetic episode.

    ## Driving it from outside: the episode interface

    :class:`~dus_gym.envs.vector.DUSVectorEnv` runs N of these envs over one
    batched training run. It keeps each sub-env's episode logic (instances,
    action checks, observations, rewards, infos, episode end) here and only
    replaces the training run, through five public members; ``reset`` and
    ``step`` are exactly these around a :class:`~dus_gym.run.TrainingRun`:

    - ``data = env.begin_episode(seed, options)``: seed ``np_random``, draw
      the instance (:attr:`instance`) and return its dataset;
    - ``obs, info = env.first_observation(evaluation, iterations_per_epoch)``:
      the reset's observation from the untrained model's validation metrics;
    - ``counts = env.quantities(action)``: check the action and map it to
      per-modality counts (docs/method.md section 3);
    - ``env.iterations``: training iterations of this episode's steps;
    - ``obs, reward, terminated, truncated, info = env.finish_step(counts,
      report, test_metrics)``: a step from the run's
      :class:`~dus_gym.run.StepReport`; ``test_metrics()`` is called at
      truncation for ``info["test"]``.

    ## Version History

    - v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it so)

    def __init__(
        self,
        dataset: str | MultimodalDataset | Mapping[str, Any] = "digits",
        views: Sequence[str] | None = None,
        dataset_kwargs: Mapping[str, Any] | None = None,
        data_seed: int | None = None,
        method: str = RunConfig.method,
        budget: str = QuantityRule.budget,
        action_type: str = QuantityRule.action_type,
        levels: int = QuantityRule.levels,
        max_ratio: float = QuantityRule.max_ratio,
        n_min: int = QuantityRule.n_min,
        n_max: int | None = None,
        n_steps: int = EPISODE_STEPS,
        iterations_per_step: int | None = None,
        base_batch: int = RunConfig.base_batch,
        reward_metric: str = "accuracy",
        sample_cost: float = 0.0,
        divergence_penalty: float = 1.0,
        optimizer: str = RunConfig.optimizer,
        lr: float = RunConfig.lr,
        momentum: float = RunConfig.momentum,
        weight_decay: float = RunConfig.weight_decay,
        monitor: str = RunConfig.monitor,
        device: str = RunConfig.device,
        run_config: Mapping[str, Any] | None = None,
        instances: str | Sequence[Mapping[str, Any]] | None = None,
        method_kwargs: Mapping[str, Any] | None = None,
        test_probe: bool = True,
    ) -> None:
        if isinstance(dataset, Mapping):
            # Ray RLlib builds an env class from one config mapping (its EnvContext):
            # DUSEnv(env_config) means DUSEnv(**env_config).
            self._init_from_mapping(dataset, locals())
            return
        if not isinstance(n_steps, int | np.integer) or isinstance(n_steps, bool) or n_steps < 1:
            raise ValueError(f"n_steps={n_steps!r}: expected an integer >= 1 (steps, i.e. decisions, per episode)")
        if iterations_per_step is not None and iterations_per_step < 1:
            raise ValueError(f"iterations_per_step={iterations_per_step!r}: expected an integer >= 1 or None")
        if reward_metric not in REWARD_METRICS:
            raise ValueError(f"unknown reward_metric {reward_metric!r}; valid: {list(REWARD_METRICS)}")
        self.source = DatasetSource(dataset, views, dataset_kwargs)
        self.modalities = self.source.modalities
        self.data_seed = data_seed
        self.config = self._run_config(
            run_config,
            method=method, base_batch=base_batch, optimizer=optimizer, lr=lr, momentum=momentum,
            weight_decay=weight_decay, monitor=monitor, device=device,
            **({} if method_kwargs is None else {"method_kwargs": dict(method_kwargs)}),
        )
        # Settings that would only fail at the first reset fail here, where they were given.
        make_method(self.config.method, **dict(self.config.method_kwargs))
        resolve_device(self.config.device)
        m = len(self.modalities)
        B = self.config.base_batch
        self.rule = QuantityRule(m, B, budget, action_type, levels, max_ratio, n_min, n_max or 0)
        self.n_steps = int(n_steps)
        self.iterations_per_step = iterations_per_step
        self.reward_metric = reward_metric
        self.test_probe = bool(test_probe)
        self.sample_cost = sample_cost
        self.divergence_penalty = divergence_penalty
        self.layout = ObservationLayout(self.modalities, self.rule.n_max / B)
        self.observation_space = spaces.Box(self.layout.low, self.layout.high, dtype=np.float32)
        self.action_space: spaces.Space[np.ndarray]
        if action_type == "discrete":
            self.action_space = spaces.MultiDiscrete(np.full(m, levels, dtype=np.int64))
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (m,), dtype=np.float32)
        self.instances = None if instances is None else resolve_instances(instances)
        self.run: TrainingRun | None = None
        self.instance: dict[str, Any] = {}
        """the current episode's seeds (split, init, sample, data; set by each reset), and the instance
        set's ``dataset_kwargs`` if any: ``reset(options={"instance": env.unwrapped.instance})`` replays it"""
        self._ended: str | None = "never reset"

    def _init_from_mapping(self, config: Mapping[str, Any], given: Mapping[str, Any]) -> None:
        defaults = {
            name: p.default for name, p in inspect.signature(DUSEnv.__init__).parameters.items() if name != "self"
        }
        others = sorted(k for k, v in given.items() if k in defaults and k != "dataset" and v != defaults[k])
        if others:
            raise ValueError(
                f"DUSEnv(config, ...): a config mapping (e.g. RLlib's env_config) takes every argument; "
                f"got {others} beside it"
            )
        unknown = sorted(set(config) - set(defaults))
        if unknown:
            raise ValueError(f"DUSEnv config: unknown arguments {unknown}; valid: {list(defaults)}")
        DUSEnv.__init__(self, **dict(config))

    @staticmethod
    def _run_config(run_config: Mapping[str, Any] | None, **named: Any) -> RunConfig:
        """The run's settings: the env's named arguments, then ``run_config`` for the other fields."""
        extra = dict(run_config or {})
        fields = list(RunConfig.__dataclass_fields__)
        unknown = sorted(set(extra) - set(fields))
        if unknown:
            raise ValueError(f"run_config: unknown fields {unknown}; valid fields: {fields}")
        twice = sorted(set(extra) & set(named))
        if twice:
            raise ValueError(f"run_config: {twice} are env arguments; pass them as DUSEnv({twice[0]}=...) instead")
        return replace(RunConfig(), **named, **extra)

    # -- episode ----------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        data = self.begin_episode(seed, options)
        inst = self.instance
        self.run = TrainingRun(data, self.config, inst["split_seed"], inst["init_seed"], inst["sample_seed"])
        return self.first_observation(self.run.evaluate("val"), self.run.iterations_per_epoch)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.run is None or self._ended is not None:
            why = "before reset()" if self.run is None else f"after the episode ended ({self._ended})"
            raise RuntimeError(f"DUSEnv.step() called {why}; call reset() to start an episode")
        counts = self.quantities(action)
        return self.finish_step(counts, self.run.step(counts, self._iterations), self.test_metrics)

    # The episode interface (the class docstring's "Driving it from outside"): reset() and
    # step() around the training run, which the batched vector env (dus_gym.envs.vector)
    # calls for each sub-env with a slot of its batched run in place of self.run.

    def begin_episode(self, seed: int | None, options: Mapping[str, Any] | None) -> MultimodalDataset:
        """Seed ``np_random`` (as ``gym.Env.reset``), draw the instance, and return its data."""
        super().reset(seed=seed)
        self.instance = draw_instance(self.np_random, self.data_seed, self.instances, (options or {}).get("instance"))
        return self.source.load(self.instance["data_seed"], self.instance.get("dataset_kwargs"))

    def first_observation(
        self, evaluation: Evaluation, iterations_per_epoch: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The reset's observation and info, from the untrained model's validation metrics."""
        self._iterations = self.iterations_per_step or iterations_per_epoch
        self._step = 0
        self._ended = None
        m = len(self.modalities)
        self._prev_counts = np.full(m, self.config.base_batch, dtype=np.int64)
        self._evaluation = evaluation
        self._metric = self._reward_metric_value()
        zeros = np.zeros(m)
        obs = self._observation(zeros, zeros, zeros, zeros, zeros)
        return obs, self._info(self._prev_counts, zeros, zeros, zeros, 0.0, zeros, finite=True)

    def finish_step(
        self, counts: np.ndarray, report: StepReport, test_metrics: Callable[[], dict[str, Any]]
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Observation, reward, termination, truncation and info of a step the run reported."""
        self._step += 1
        self._prev_counts = counts
        self._evaluation = report.validation
        truncated = self._step >= self.n_steps
        info = self._info(
            counts, report.scores, report.last_scores, report.discrepancy, report.train_loss, report.branch_loss,
            report.finite,
        )
        if not report.finite:
            reward = -float(self.divergence_penalty)
            self._ended = f"terminated at step {self._step}: the run diverged"
            info["divergence"] = f"non-finite training loss at step {self._step}; the run stopped"
        else:
            metric = self._reward_metric_value()
            reward = metric - self._metric
            self._metric = metric
            if self.rule.budget == "free":
                reward -= self.sample_cost * (int(counts.sum()) - self.rule.total) / self.rule.total
            if truncated:
                self._ended = f"truncated after n_steps={self.n_steps} steps"
                info["test"] = test_metrics()
        obs = self._observation(
            report.scores, report.last_scores, report.discrepancy, report.branch_loss, report.branch_loss_trend
        )
        return obs, float(reward), not report.finite, truncated and report.finite, info

    @property
    def iterations(self) -> int:
        """Training iterations per step of the current episode (set by :meth:`first_observation`)."""
        return self._iterations

    def quantities(self, action: Any) -> np.ndarray:
        """The per-modality counts ``(M,)`` of an action, checked (a ValueError names a bad one)."""
        return self.rule.quantities(self._check_action(action))

    def get_state(self) -> dict[str, Any]:
        """A snapshot of the episode: the run (model, optimizer, monitor, method,
        torch generator, previous losses), the step, the previous values the
        observation and reward are built from, and ``np_random``'s
        bit-generator state.

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
            "ended": self._ended,
            "iterations": self._iterations,
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
        self._ended = state.get("ended")
        self._iterations = int(state["iterations"])
        self._prev_counts = state["prev_counts"].copy()
        self._evaluation = copy.deepcopy(state["evaluation"])
        self._metric = float(state["metric"])
        self.np_random.bit_generator.state = copy.deepcopy(state["np_random"])

    def test_metrics(self) -> dict[str, Any]:
        """Held-out test metrics of the current model, with a linear probe per modality
        (:meth:`TrainingRun.report`; what the last step's ``info["test"]`` holds)."""
        if self.run is None:
            raise RuntimeError("DUSEnv.test_metrics() called before reset()")
        return self.run.report("test", probe=self.test_probe)

    # -- helpers ----------------------------------------------------------------

    def _reward_metric_value(self) -> float:
        ev = self._evaluation
        return {"accuracy": ev.accuracy, "f1": ev.macro_f1, "loss": -ev.loss}[self.reward_metric]

    def _info(
        self, counts: np.ndarray, S: np.ndarray, s: np.ndarray, d: np.ndarray, train_loss: float,
        branch_loss: np.ndarray, finite: bool,
    ) -> dict[str, Any]:
        return step_info(self._step, self._evaluation, counts, S, s, d, train_loss, branch_loss, finite)

    def _observation(
        self, S: np.ndarray, s: np.ndarray, d: np.ndarray, branch_loss: np.ndarray, trend: np.ndarray
    ) -> np.ndarray:
        ev = self._evaluation
        return self.layout.build({
            "score": S, "last_score": s, "discrepancy": d, "train_loss": branch_loss, "loss_trend": trend,
            "val_branch_accuracy": ev.branch_accuracy, "val_accuracy": ev.accuracy, "val_loss": ev.loss,
            "progress": self._step / self.n_steps, "quantity": self._prev_counts / self.config.base_batch,
        })

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
