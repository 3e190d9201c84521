"""Built-in sampling policies with Stable-Baselines3's ``predict`` signature (:func:`dus_gym.policies.make_policy`
builds them from their names, as it loads trained agents).

Every policy here answers ``predict(obs, state=None, episode_start=None,
deterministic=True) -> (action, state)`` like an SB3 model, for one
observation ``(obs_dim,)`` or a batch ``(n_envs, obs_dim)``, so benchmarks
treat built-in and trained policies alike.

=========  ==============================================================
name       behaviour
=========  ==============================================================
uniform    every modality gets B examples: ordinary training
random     a random action each step (from the policy's own seed)
fixed      constant weights, e.g. ``fixed:1,2`` (the control of docs/method.md section 7)
dus_h      the DUS heuristic of docs/method.md section 4 (dus_gym.heuristic), ``dus_h:LAM``
gap        the generalisation-gap rule (dus_gym.heuristic.gap_weights), ``gap:MARGIN``: half the
           share for a modality that fits its training data far better than it generalises
oracle     one-step lookahead from env snapshots, ``oracle:K`` (a reference, not a policy
           one can deploy: it reads the validation gain; see dus_gym/oracle.py)
=========  ==============================================================
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from dus_gym.budget import QuantityRule
from dus_gym.envs.dus_env import DUSEnv, ObservationLayout
from dus_gym.evaluation import Predictor
from dus_gym.heuristic import dus_h_quantities, dus_h_weights, gap_weights

__all__ = [
    "POLICIES",
    "BuiltinPolicy",
    "DUSHeuristicPolicy",
    "FixedPolicy",
    "GapPolicy",
    "RESIDUAL_FEATURES",
    "RandomPolicy",
    "ResidualGapPolicy",
    "UniformPolicy",
    "builtin_policy",
    "dus_h_quantities",
    "residual_features",
]


class BuiltinPolicy(ABC):
    """A policy for a :class:`DUSEnv`, with SB3's ``predict``.

    Args:
        env: the env (any wrapper of it) the policy will act in; the policy
            reads its action rule and observation layout.
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, DUSEnv):
            raise TypeError(f"built-in policies act in a DUSEnv, got {type(unwrapped).__name__}")
        self.rule: QuantityRule = unwrapped.rule
        self.layout: ObservationLayout = unwrapped.layout
        self.action_space = unwrapped.action_space

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        obs = np.asarray(observation, dtype=np.float64)
        if obs.shape[-1:] != (self.layout.size,) or obs.ndim > 2:
            raise ValueError(
                f"{type(self).__name__}.predict: observation of shape {obs.shape}; "
                f"expected ({self.layout.size},) or (n_envs, {self.layout.size})"
            )
        batch = obs.reshape(-1, self.layout.size)
        actions = np.stack([self._act(o) for o in batch])
        return (actions if obs.ndim == 2 else actions[0]), state

    @abstractmethod
    def _act(self, obs: np.ndarray) -> np.ndarray:
        """The action for one observation ``(obs_dim,)``."""


class UniformPolicy(BuiltinPolicy):
    """Every modality gets B examples per iteration: ordinary training."""

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self.rule.uniform_action


class FixedPolicy(BuiltinPolicy):
    """Constant per-modality weights (only their ratios matter with a fixed budget)."""

    def __init__(self, env: gym.Env[Any, Any], weights: Sequence[float]) -> None:
        super().__init__(env)
        self.weights = [float(w) for w in weights]
        self.action = self.rule.action_for_weights(np.asarray(self.weights))

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self.action.copy()


class RandomPolicy(BuiltinPolicy):
    """A uniformly random action each step, from its own seeded generator."""

    def __init__(self, env: gym.Env[Any, Any], seed: int | None = None) -> None:
        super().__init__(env)
        # A private copy: seeding it leaves the env's own action space alone.
        self.action_space = copy.deepcopy(env.unwrapped.action_space)
        self.action_space.seed(seed)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self.action_space.sample()


class DUSHeuristicPolicy(BuiltinPolicy):
    """DUS-H (docs/method.md section 4, :mod:`dus_gym.heuristic`): a lagging modality gets more samples,
    in proportion to how far it lags: ``n_j = B (1 - lam d_j / mean S)``.

    The env's action grid is coarser than the formula (discrete levels are
    ``sqrt(2)`` apart by default): the policy takes the nearest action.
    """

    def __init__(self, env: gym.Env[Any, Any], lam: float = 1.0) -> None:
        super().__init__(env)
        dus_h_weights(np.zeros(len(self.layout.modalities)), lam)  # checks lam
        self.lam = lam

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self.rule.action_for_weights(dus_h_weights(self.layout.get(obs, "score"), self.lam))


class GapPolicy(BuiltinPolicy):
    """The generalisation-gap rule (:func:`dus_gym.heuristic.gap_weights`): a modality whose training
    fit runs ``margin`` or more ahead of its branch's validation accuracy, compared with the other
    modalities, gets up to half the share; otherwise sampling stays uniform."""

    def __init__(self, env: gym.Env[Any, Any], margin: float = 0.15) -> None:
        super().__init__(env)
        gap_weights(np.zeros(1), np.zeros(1), margin)  # checks margin
        self.margin = margin

    def _act(self, obs: np.ndarray) -> np.ndarray:
        loss, accuracy = self.layout.get(obs, "train_loss"), self.layout.get(obs, "val_branch_accuracy")
        weights = gap_weights(loss, accuracy, self.margin)
        return self.rule.action_for_weights(weights)


RESIDUAL_FEATURES = (
    "val_branch_accuracy", "gap", "train_fit",
    "progress*val_branch_accuracy", "progress*gap", "progress*train_fit",
)
"""The per-modality features of :class:`ResidualGapPolicy`, in the order of its ``theta``."""


def residual_features(layout: ObservationLayout, obs: np.ndarray) -> np.ndarray:
    """:data:`RESIDUAL_FEATURES` of one observation, each minus its mean over the modalities: ``(M, 6)``.

    ``train_fit`` is ``exp(-train_loss)`` (the geometric-mean true-class probability on the training
    batches, in [0, 1]), ``gap`` is ``train_fit - val_branch_accuracy``; ``progress`` (in [0, 1]) is the
    fraction of the episode done. Centred over modalities, so that only differences between
    modalities count (with a fixed budget only the ratios of the weights do).
    """
    fit = np.exp(-layout.get(obs, "train_loss"))
    acc = layout.get(obs, "val_branch_accuracy")
    t = float(layout.get(obs, "progress")[0])
    f = np.stack([acc, fit - acc, fit, t * acc, t * (fit - acc), t * fit], axis=1)
    return f - f.mean(axis=0, keepdims=True)


class ResidualGapPolicy(GapPolicy):
    """The gap rule plus a learned residual: ``log2 w_j = log2 gap_j + theta . phi_j`` with ``phi_j`` the
    centred :func:`residual_features` of modality j (``agents/cem_residual.py`` learns ``theta``).

    ``theta = 0`` is the gap rule exactly, so a search started there starts from the rule. The features
    are symmetric in the modalities (no modality is named), so one ``theta`` acts on any number of them.

    Args:
        env: the env to act in.
        theta: 6 coefficients, in log2 weight per unit of feature (a difference of 0.25 in a feature
            times a coefficient of 8 doubles a modality's share).
        margin: the gap rule's margin.
    """

    def __init__(self, env: gym.Env[Any, Any], theta: Sequence[float] | np.ndarray, margin: float = 0.15) -> None:
        super().__init__(env, margin)
        self.theta = np.asarray(theta, dtype=np.float64)
        if self.theta.shape != (len(RESIDUAL_FEATURES),) or not np.all(np.isfinite(self.theta)):
            raise ValueError(
                f"ResidualGapPolicy: theta={np.asarray(theta).tolist()}; expected {len(RESIDUAL_FEATURES)} finite "
                f"numbers, one per feature {list(RESIDUAL_FEATURES)}"
            )

    def _act(self, obs: np.ndarray) -> np.ndarray:
        loss, accuracy = self.layout.get(obs, "train_loss"), self.layout.get(obs, "val_branch_accuracy")
        log_w = np.log2(gap_weights(loss, accuracy, self.margin)) + residual_features(self.layout, obs) @ self.theta
        # The grid's widest ratio is far inside +-8 (a ratio of 256); the clip only keeps 2**x finite.
        return self.rule.action_for_weights(2.0 ** np.clip(log_w, -8.0, 8.0))


POLICIES = ("uniform", "random", "fixed", "dus_h", "gap", "oracle")


def builtin_policy(
    spec: str, env: gym.Env[Any, Any], seed: int | None = None, shipped: Sequence[str] | None = None
) -> Predictor:
    """A built-in policy from its name: ``uniform``, ``random``, ``fixed:W1,W2[,...]``, ``dus_h[:LAM]``,
    ``gap[:MARGIN]``, or the lookahead reference ``oracle[:K]`` (:class:`~dus_gym.oracle.LookaheadOracle`: all actions,
    or K sampled ones plus uniform; it trains K extra steps per step, and acts only in ``env`` itself).

    Args:
        spec: the name, with its parameter after a colon.
        env: the env the policy acts in.
        seed: seed of ``random``.
        shipped: the shipped agents (``pretrained:NAME``) an unknown spec's message lists; None:
            the message names the form only. (:func:`dus_gym.agent_io.load_policy` passes them:
            this module sits below it and does not read the package data.)
    """
    name, _, param = spec.partition(":")
    try:
        if name == "uniform" and not param:
            return UniformPolicy(env)
        if name == "random" and not param:
            return RandomPolicy(env, seed)
        if name == "fixed":
            weights = [float(w) for w in param.split(",")]
            if len(weights) != len(env.unwrapped.modalities):  # type: ignore[attr-defined]
                raise ValueError(f"expected one weight per modality {env.unwrapped.modalities}")  # type: ignore[attr-defined]
            return FixedPolicy(env, weights)
        if name == "dus_h":
            return DUSHeuristicPolicy(env, float(param) if param else 1.0)
        if name == "gap":
            return GapPolicy(env, float(param)) if param else GapPolicy(env)
        if name == "oracle":
            from dus_gym.oracle import LookaheadOracle

            return LookaheadOracle(env, int(param) if param else None, seed=seed)
    except ValueError as err:
        raise ValueError(f"policy {spec!r}: {err}") from None
    agents = "pretrained:NAME" if shipped is None else ", ".join(shipped) or "none"
    raise ValueError(
        f"unknown policy {spec!r}; valid policies: uniform, random, fixed:W1,W2,... (one weight per modality), "
        f"dus_h or dus_h:LAM, gap or gap:MARGIN, oracle or oracle:K, a run folder of agents/train.py, or a "
        f"shipped agent ({agents})"
    )
