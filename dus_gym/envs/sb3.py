"""Stable-Baselines3's ``VecEnv`` over the batched vector env (docs/batched.md).

``PPO("MlpPolicy", make_sb3_vec_env("DUS-v0", 16))`` trains on 16 sub-envs
whose training runs are one batched computation, in this process. SB3's
conventions apply: ``step_wait`` returns ``dones = terminated | truncated``,
resets ended sub-envs itself, and each sub-env's info carries
``terminal_observation`` and ``TimeLimit.truncated`` (and ``test``, the final
test metrics) when its episode ends. ``VecNormalize`` and ``VecMonitor`` go
on top as usual.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from dus_gym.envs.vector import DUSVectorEnv

__all__ = ["DUSVecEnv", "make_sb3_vec_env"]


class DUSVecEnv(VecEnv):
    """SB3's ``VecEnv`` API over a :class:`~dus_gym.envs.vector.DUSVectorEnv`.

    Args:
        venv: the batched vector env (``gym.make_vec(id, N, vectorization_mode="vector_entry_point").unwrapped``).
    """

    def __init__(self, venv: DUSVectorEnv) -> None:
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        seeds: list[int | None] = list(self._seeds)
        options = [o for o in self._options if o]
        if len({str(o) for o in options}) > 1:
            raise ValueError("DUSVecEnv.reset: one options dict for all sub-envs (the batched env shares it)")
        obs, _ = self.venv.reset(seed=seeds, options=options[0] if options else None)
        self.reset_infos = copy.deepcopy(self.venv.reset_infos)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("DUSVecEnv.step_wait() without step_async()")
        obs, rewards, terminated, truncated, _ = self.venv.step(self._actions)
        self._actions = None
        infos: list[dict[str, Any]] = copy.deepcopy(self.venv.sub_infos)
        dones = terminated | truncated
        for i, info in enumerate(infos):
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if dones[i]:
                info["terminal_observation"] = self.venv.final_observations[i]
                self.reset_infos[i] = copy.deepcopy(self.venv.reset_infos[i])
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def _targets(self, indices: VecEnvIndices) -> list[Any]:
        return [self.venv.envs[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(env, attr_name) for env in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for env in self._targets(indices):
            setattr(env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        return [getattr(env, method_name)(*method_args, **method_kwargs) for env in self._targets(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]  # the sub-envs are bare DUSEnv objects

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs


def make_sb3_vec_env(env_id: str = "DUS-v0", num_envs: int = 16, **env_kwargs: Any) -> DUSVecEnv:
    """A :class:`DUSVecEnv` of ``num_envs`` batched sub-envs of a registered id (any ``gym.make`` keyword)."""
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)
    unwrapped = venv.unwrapped
    if not isinstance(unwrapped, DUSVectorEnv):
        raise ValueError(f"{env_id!r} is not a dus_gym id (its vector env is {type(unwrapped).__name__})")
    return DUSVecEnv(unwrapped)
