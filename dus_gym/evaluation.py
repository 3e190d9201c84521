"""Run whole episodes with any policy that has SB3's ``predict``, and summarise them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

__all__ = ["Predictor", "mean_std", "run_episode"]


class Predictor(Protocol):
    """Anything with SB3's ``predict``: an SB3 model, a built-in policy, a loaded agent."""

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]: ...


def run_episode(
    env: gym.Env[Any, Any],
    policy: Predictor,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    deterministic: bool = True,
) -> dict[str, Any]:
    """Play one episode and return what a report needs, as JSON-ready values.

    Returns a dict with ``return`` (sum of rewards), ``steps``, ``diverged``,
    ``instance`` (the seeds of the run), per-step lists ``quantities``
    (``steps x M`` counts), ``val_accuracy`` (``steps + 1`` values, from the
    reset on) and ``rewards``, and ``test``: the final test metrics
    (``None`` if the run diverged).
    """
    obs, info = env.reset(seed=seed, options=options)
    record: dict[str, Any] = {
        "instance": info.get("instance"),
        "quantities": [],
        "val_accuracy": [info["val_accuracy"]],
        "rewards": [],
        "test": None,
        "diverged": False,
    }
    state = None
    episode_start = np.ones(1, dtype=bool)
    while True:
        action, state = policy.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        episode_start = np.zeros(1, dtype=bool)
        obs, reward, terminated, truncated, info = env.step(action)
        record["rewards"].append(float(reward))
        record["quantities"].append(list(info["quantities"]))
        record["val_accuracy"].append(info["val_accuracy"])
        if terminated or truncated:
            record["diverged"] = bool(info.get("diverged", False))
            record["test"] = info.get("test")
            break
    record["steps"] = len(record["rewards"])
    record["return"] = float(sum(record["rewards"]))
    return record


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value). Intervals live in ``benchmarks/``."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0
