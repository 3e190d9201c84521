"""Shared fixtures: a tiny seeded dataset and small env settings that keep tests fast."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from dus_gym.data import MultimodalDataset, make_synthetic
from dus_gym.envs import DUSEnv

# Small enough that an episode takes a fraction of a second on one core.
TINY_ENV: dict[str, Any] = {
    "dataset": "synthetic:tiny",
    "n_steps": 3,
    "iterations_per_step": 3,
    "base_batch": 8,
    "device": "cpu",
}


def same_info(a: Any, b: Any) -> bool:
    """Exact equality of two infos (dicts of scalars, NumPy arrays and dicts): arrays by value and dtype."""
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(
            same_info(a[k], b[k]) for k in a
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
            and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        )
    return bool(a == b)


def unwrapped(env: gym.Env[Any, Any]) -> DUSEnv:
    """``env.unwrapped`` as the DUSEnv it is (gymnasium types it as a plain ``gym.Env``)."""
    inner = env.unwrapped
    assert isinstance(inner, DUSEnv), type(inner)
    return inner


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Tests compare trajectories bit for bit; one thread keeps them fast on 2 cores.
    torch.set_num_threads(1)


@pytest.fixture
def tiny_env_kwargs() -> dict[str, Any]:
    return dict(TINY_ENV)


@pytest.fixture
def tiny_dataset() -> MultimodalDataset:
    return make_synthetic("tiny", seed=0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
