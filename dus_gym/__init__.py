"""dus_gym: data-aware unimodal sampling for multimodal learning, as a Gymnasium environment.

Importing the package registers the environment ids:

- ``DUS-v0``: the built-in UCI Multiple Features digits (views pix and zer);
- ``DUS-Synthetic-v0``: the synthetic shortcut family (docs/method.md section 7);
- ``DUS-AVDigits-v0``: the built-in audio-visual digits, spoken (FSDD log-mels)
  and handwritten (8 x 8 optical digits), with speaker-disjoint validation and test splits;
- ``DUS-AVMNIST-v0``: the built-in AV-MNIST, the same spoken digits paired with MNIST
  digits reduced to 4 PCA coefficients (25% of their variance), the same split.

The training run (:mod:`dus_gym.run`), the monitor, the budget, the heuristic
and the methods need neither the env nor the policies: those load on first
use (``dus_gym.DUSEnv``, ``dus_gym.make_policy``), so ``import dus_gym.run``
stays lean. Registering the ids needs Gymnasium's registry, a core
dependency.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

import torch
from gymnasium.envs.registration import register, registry

from dus_gym.budget import QuantityRule, allocate
from dus_gym.data import MultimodalDataset, load_dataset, make_synthetic
from dus_gym.heuristic import dus_h_quantities
from dus_gym.monitor import DiscrepancyMonitor
from dus_gym.run import EPISODE_STEPS, RunConfig, StepReport, TrainingRun

if TYPE_CHECKING:
    from dus_gym.envs import DUSEnv, DUSVectorEnv
    from dus_gym.oracle import LookaheadOracle
    from dus_gym.policies import POLICIES, make_policy
    from dus_gym.records import EpisodeRecord, RecordError, ReplayReport, record_episode, replay

__version__ = "0.1.0"

__all__ = [
    "ENV_IDS",
    "EPISODE_STEPS",
    "POLICIES",
    "DUSEnv",
    "DUSVectorEnv",
    "DiscrepancyMonitor",
    "EpisodeRecord",
    "LookaheadOracle",
    "MultimodalDataset",
    "QuantityRule",
    "RecordError",
    "ReplayReport",
    "RunConfig",
    "StepReport",
    "TrainingRun",
    "allocate",
    "dus_h_quantities",
    "load_dataset",
    "make_policy",
    "make_synthetic",
    "record_episode",
    "replay",
]

# Names that live with the env (and load Gymnasium's env machinery, SB3-facing code): imported on first use.
_LAZY = {
    "DUSEnv": "dus_gym.envs",
    "DUSVectorEnv": "dus_gym.envs",
    "RecordError": "dus_gym.records",
    "LookaheadOracle": "dus_gym.oracle",
    "POLICIES": "dus_gym.policies",
    "make_policy": "dus_gym.policies",
    "EpisodeRecord": "dus_gym.records",
    "ReplayReport": "dus_gym.records",
    "record_episode": "dus_gym.records",
    "replay": "dus_gym.records",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dus_gym' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


# A process forked after torch ran multi-threaded inherits a dead OpenMP pool and
# hangs at its first parallel op: that is exactly an async vector env (fork is
# Linux's default) created after training in the parent. Forked workers run one
# torch thread each, which is also what N envs in parallel want.
os.register_at_fork(after_in_child=lambda: torch.set_num_threads(1))

ENV_IDS = ("DUS-v0", "DUS-Synthetic-v0", "DUS-AVDigits-v0", "DUS-AVMNIST-v0")

# No max_episode_steps: the env ends its own episodes after n_steps (with the
# test metrics), so gym.make(id, n_steps=40) is a 40-step episode.
for _env_id, _dataset in zip(ENV_IDS, ("digits", "synthetic:shortcut", "avdigits", "avmnist"), strict=True):
    if _env_id not in registry:
        register(
            id=_env_id,
            entry_point="dus_gym.envs:DUSEnv",
            vector_entry_point="dus_gym.envs:DUSVectorEnv",
            kwargs={"dataset": _dataset},
        )
