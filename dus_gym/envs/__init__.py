"""Gymnasium environments of dus_gym."""

from dus_gym.envs.dus_env import DUSEnv, ObservationLayout

__all__ = ["DUSEnv", "ObservationLayout"]
