"""Gymnasium environments of dus_gym: one training run (DUSEnv) or N runs batched (DUSVectorEnv)."""

from dus_gym.envs.dus_env import DUSEnv, ObservationLayout
from dus_gym.envs.vector import DUSVectorEnv

__all__ = ["DUSEnv", "DUSVectorEnv", "ObservationLayout"]
