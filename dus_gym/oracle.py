"""A one-step lookahead oracle: an upper reference for learned sampling policies.

At every step the oracle snapshots the env (:meth:`DUSEnv.get_state`), tries
each candidate action for one step from that snapshot, records the reward
(the validation gain of that step), restores the snapshot and answers the
action with the largest gain. It needs the env itself, not only the
observation, and it trains: each decision costs one step of training per
distinct candidate on top of the step the caller then takes.

It is greedy (one step ahead, not the best sequence) and it reads the
*validation* metric that the reward is made of, which no deployable policy
can do; its results are a reference, reported with their cost
(``extra_steps``, ``extra_iterations``), never a baseline to beat fairly.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from dus_gym.envs.dus_env import DUSEnv

__all__ = ["LookaheadOracle"]


class LookaheadOracle:
    """Greedy one-step lookahead policy with SB3's ``predict``.

    Args:
        env: the env (or any wrapper of it) the oracle will act in; it steps
            ``env.unwrapped`` from snapshots, so wrappers' counters (e.g.
            ``TimeLimit``) are not touched. The caller still takes the chosen
            action through its own env as usual.
        candidates: which actions to try each step.

            - ``None`` (default): every action of a discrete action space
              (``levels ** M`` of them; refused for continuous actions).
            - an int K >= 1: K actions drawn each step from the oracle's own
              generator (uniform over the action space), plus the uniform
              action (every ``n_j = B``) first, so the oracle can always
              fall back on ordinary training.
            - a sequence of actions: exactly those, every step.
        seed: seed of the oracle's generator (used only with ``candidates=K``).

    Actions that map to the same quantities (with a fixed budget only the
    weights' ratios matter) are trained once and share the gain. Ties go to
    the candidate tried first.

    After each :meth:`predict`: ``last_candidates`` (the actions tried, in
    order), ``last_gains`` (their one-step rewards), ``last_choice`` (the
    index answered). Over the oracle's life: ``extra_steps`` (env steps
    trained from snapshots) and ``extra_iterations`` (training iterations
    they cost). Cost per decision: ``distinct candidates x iterations_per_step``
    training iterations plus one validation pass each.
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        candidates: int | Sequence[Sequence[float]] | None = None,
        seed: int | None = None,
    ) -> None:
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, DUSEnv):
            raise TypeError(f"LookaheadOracle acts in a DUSEnv, got {type(unwrapped).__name__}")
        self.env = unwrapped
        self.rule = unwrapped.rule
        self.action_space = unwrapped.action_space
        self.rng = np.random.default_rng(seed)
        self.num_samples: int | None = None
        self.fixed_candidates: list[np.ndarray] | None = None
        m = len(unwrapped.modalities)
        if candidates is None:
            if self.rule.action_type != "discrete":
                raise ValueError(
                    "LookaheadOracle: candidates=None tries every action, which needs a discrete action space; "
                    "pass candidates=K (sampled) or a list of actions for action_type='continuous'"
                )
            grid = itertools.product(range(self.rule.levels), repeat=m)
            self.fixed_candidates = [np.asarray(a, dtype=np.int64) for a in grid]
        elif isinstance(candidates, (int, np.integer)):
            if candidates < 1:
                raise ValueError(f"LookaheadOracle: candidates must be >= 1 when an int, got {candidates}")
            self.num_samples = int(candidates)
        else:
            dtype = self.action_space.dtype
            actions = [np.asarray(a, dtype=dtype) for a in candidates]
            bad = [a.tolist() for a in actions if not self.action_space.contains(a)]
            if not actions or bad:
                raise ValueError(
                    f"LookaheadOracle: candidates {bad or '[]'} are not actions of {self.action_space}; "
                    "expected a non-empty list of actions"
                )
            self.fixed_candidates = actions
        self.last_candidates: list[np.ndarray] = []
        self.last_gains: list[float] = []
        self.last_choice: int | None = None
        self.extra_steps = 0
        self.extra_iterations = 0

    def _candidates(self) -> list[np.ndarray]:
        if self.fixed_candidates is not None:
            return [a.copy() for a in self.fixed_candidates]
        assert self.num_samples is not None
        m = len(self.env.modalities)
        if self.rule.action_type == "discrete":
            drawn: np.ndarray = self.rng.integers(0, self.rule.levels, size=(self.num_samples, m))
        else:
            drawn = self.rng.uniform(-1.0, 1.0, size=(self.num_samples, m))
        uniform = np.asarray(self.rule.uniform_action, dtype=self.action_space.dtype)
        return [uniform, *(np.asarray(a, dtype=self.action_space.dtype) for a in drawn)]

    def best_action(self) -> np.ndarray:
        """Try every candidate for one step from the current state; the env is left as it was."""
        env = self.env
        if env.run is None:
            raise RuntimeError("LookaheadOracle: the env has not been reset")
        candidates = self._candidates()
        snapshot = env.get_state()
        gain_of: dict[tuple[int, ...], float] = {}
        gains = []
        try:
            for action in candidates:
                key = tuple(int(n) for n in self.rule.quantities(action))
                if key not in gain_of:
                    env.set_state(snapshot)
                    before = env.run.iterations
                    _, reward, _, _, _ = env.step(action)
                    self.extra_iterations += env.run.iterations - before
                    self.extra_steps += 1
                    gain_of[key] = float(reward)
                gains.append(gain_of[key])
        finally:
            env.set_state(snapshot)
        choice = int(np.argmax(gains))  # the first of equal maxima
        self.last_candidates, self.last_gains, self.last_choice = candidates, gains, choice
        return candidates[choice].copy()

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3-style ``predict`` for one env: ``observation`` of shape ``(obs_dim,)`` or ``(1, obs_dim)``.

        The observation is not read (the oracle looks at the env itself); it
        only fixes the shape of the answer.
        """
        obs = np.asarray(observation)
        size = self.env.layout.size
        if obs.shape not in ((size,), (1, size)):
            raise ValueError(
                f"LookaheadOracle.predict: observation of shape {obs.shape}; expected ({size},) or (1, {size}): "
                "the oracle steps one env"
            )
        action = self.best_action()
        return (action[None] if obs.ndim == 2 else action), state
