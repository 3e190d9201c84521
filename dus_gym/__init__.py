"""dus_gym: data-aware unimodal sampling for multimodal learning, as a Gymnasium environment.

Importing the package registers the environment ids:

- ``DUS-v0``: the built-in UCI Multiple Features digits (views pix and zer);
- ``DUS-Synthetic-v0``: the synthetic shortcut family (METHOD.md section 7).
"""

from __future__ import annotations

import os

import torch
from gymnasium.envs.registration import register, registry

from dus_gym.budget import QuantityRule, allocate
from dus_gym.data import MultimodalDataset, load_dataset, make_synthetic
from dus_gym.envs import DUSEnv
from dus_gym.monitor import DiscrepancyMonitor
from dus_gym.oracle import LookaheadOracle
from dus_gym.policies import POLICIES, dus_h_quantities, make_policy
from dus_gym.records import EpisodeRecord, ReplayReport, record_episode, replay
from dus_gym.run import RunConfig, TrainingRun

__version__ = "0.1.0"

__all__ = [
    "ENV_IDS",
    "POLICIES",
    "DUSEnv",
    "DiscrepancyMonitor",
    "EpisodeRecord",
    "LookaheadOracle",
    "MultimodalDataset",
    "QuantityRule",
    "ReplayReport",
    "RunConfig",
    "TrainingRun",
    "allocate",
    "dus_h_quantities",
    "load_dataset",
    "make_policy",
    "make_synthetic",
    "record_episode",
    "replay",
]

# A process forked after torch ran multi-threaded inherits a dead OpenMP pool and
# hangs at its first parallel op: that is exactly an async vector env (fork is
# Linux's default) created after training in the parent. Forked workers run one
# torch thread each, which is also what N envs in parallel want.
os.register_at_fork(after_in_child=lambda: torch.set_num_threads(1))

EPISODE_STEPS = 30
ENV_IDS = ("DUS-v0", "DUS-Synthetic-v0")

for _env_id, _dataset in zip(ENV_IDS, ("digits", "synthetic:shortcut")):
    if _env_id not in registry:
        register(
            id=_env_id,
            entry_point="dus_gym.envs:DUSEnv",
            max_episode_steps=EPISODE_STEPS,
            kwargs={"dataset": _dataset, "n_steps": EPISODE_STEPS},
        )
