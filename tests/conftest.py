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
