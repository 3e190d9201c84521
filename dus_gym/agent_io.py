"""Saved sampler agents: the run folder format and its loader.

A run folder (written by ``agents/train.py``) holds:

- ``config.json``: at least ``{"algo": "ppo" | "a2c", "env_id": ..., "env_kwargs": {...}}``;
- ``model.zip``: the SB3 model (``model.save``);
- ``vecnormalize.pkl`` (optional): the ``VecNormalize`` statistics.

:func:`load_agent` gives back an object with SB3's ``predict`` that applies the
saved observation normalisation itself, so it drops in wherever a built-in
policy does.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ALGOS", "CONFIG_FILE", "MODEL_FILE", "VECNORMALIZE_FILE", "LoadedAgent", "load_agent", "read_run_config"]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.zip"
VECNORMALIZE_FILE = "vecnormalize.pkl"
ALGOS = ("ppo", "a2c")


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder, checked for the keys every loader needs."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE}; is {run_dir} a run folder written by agents/train.py?")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    missing = [k for k in ("algo", "env_id", "env_kwargs") if k not in config]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}; expected algo, env_id, env_kwargs")
    if config["algo"] not in ALGOS:
        raise ValueError(f"{path}: unknown algo {config['algo']!r}; valid: {list(ALGOS)}")
    return dict(config)


class LoadedAgent:
    """A trained SB3 model plus its observation normalisation, with SB3's ``predict``."""

    def __init__(
        self, model: Any, obs_rms: Any | None, clip_obs: float, epsilon: float, config: dict[str, Any]
    ) -> None:
        self.model = model
        self.obs_rms = obs_rms
        self.clip_obs = clip_obs
        self.epsilon = epsilon
        self.config = config

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """Observation as the model saw it in training (VecNormalize's formula)."""
        if self.obs_rms is None:
            return obs
        z = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)
        return np.clip(z, -self.clip_obs, self.clip_obs).astype(np.float32)

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        return self.model.predict(
            self.normalize(np.asarray(observation, dtype=np.float32)), state, episode_start, deterministic
        )


def load_agent(run_dir: str | Path, device: str = "cpu") -> LoadedAgent:
    """Load the model (and normalisation statistics, if saved) of a run folder."""
    from stable_baselines3 import A2C, PPO

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no {MODEL_FILE} in run folder {run_dir}")
    algo: type[PPO] | type[A2C] = PPO if config["algo"] == "ppo" else A2C
    model = algo.load(model_path, device=device)
    obs_rms, clip_obs, epsilon = None, 10.0, 1e-8
    norm_path = run_dir / VECNORMALIZE_FILE
    if norm_path.is_file():
        # VecNormalize pickles without its venv; only the statistics are needed here.
        with norm_path.open("rb") as f:
            vec_norm = pickle.load(f)
        if getattr(vec_norm, "norm_obs", True):
            obs_rms = vec_norm.obs_rms
        clip_obs, epsilon = float(vec_norm.clip_obs), float(vec_norm.epsilon)
    return LoadedAgent(model, obs_rms, clip_obs, epsilon, config)
