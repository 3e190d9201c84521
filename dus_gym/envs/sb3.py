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
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from dus_gym.envs.vector import DUSVectorEnv

__all__ = ["ConcatVecEnv", "DUSVecEnv", "make_family_vec_env", "make_sb3_vec_env"]


class _InProcessVecEnv(VecEnv):
    """A ``VecEnv`` that steps in this process: ``step_async`` only keeps the actions for ``step_wait``."""

    _actions: np.ndarray | None = None

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def _take_actions(self) -> np.ndarray:
        if self._actions is None:
            raise RuntimeError(f"{type(self).__name__}.step_wait() without step_async()")
        actions, self._actions = self._actions, None
        return actions

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs


class DUSVecEnv(_InProcessVecEnv):
    """SB3's ``VecEnv`` API over a :class:`~dus_gym.envs.vector.DUSVectorEnv`.

    Args:
        venv: the batched vector env (``gym.make_vec(id, N, vectorization_mode="vector_entry_point").unwrapped``).
    """

    def __init__(self, venv: DUSVectorEnv) -> None:
        if venv.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"DUSVecEnv: the vector env resets with {venv.autoreset_mode}; SB3's VecEnv resets in the same step: "
                "make it with autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP (make_sb3_vec_env does)"
            )
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

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

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, _ = self.venv.step(self._take_actions())
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


def make_sb3_vec_env(env_id: str = "DUS-v0", num_envs: int = 16, **env_kwargs: Any) -> DUSVecEnv:
    """A :class:`DUSVecEnv` of ``num_envs`` batched sub-envs of a registered id (any ``gym.make`` keyword),
    resetting each ended sub-env within the step that ends it, as SB3's ``VecEnv`` API does."""
    venv = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", autoreset_mode=AutoresetMode.SAME_STEP,
        **env_kwargs,
    )
    unwrapped = venv.unwrapped
    if not isinstance(unwrapped, DUSVectorEnv):
        raise ValueError(f"{env_id!r} is not a dus_gym id (its vector env is {type(unwrapped).__name__})")
    return DUSVecEnv(unwrapped)


class ConcatVecEnv(_InProcessVecEnv):
    """Several SB3 ``VecEnv`` objects with the same spaces as one: sub-env k of the whole is
    sub-env k - offset of its part. Each part steps in turn, in this process.

    What it is for: batched groups whose data differ in shape (one family each, see
    :func:`make_family_vec_env`) cannot share one stacked computation, but one agent
    can learn from all of them at once.
    """

    def __init__(self, venvs: Sequence[VecEnv]) -> None:
        if not venvs:
            raise ValueError("ConcatVecEnv: no vec envs given")
        first = venvs[0]
        for k, v in enumerate(venvs):
            if v.observation_space != first.observation_space or v.action_space != first.action_space:
                raise ValueError(
                    f"ConcatVecEnv: part {k} has spaces {v.observation_space}, {v.action_space}; "
                    f"part 0 has {first.observation_space}, {first.action_space}"
                )
        self.venvs = list(venvs)
        self._bounds = np.cumsum([0] + [v.num_envs for v in self.venvs])
        super().__init__(int(self._bounds[-1]), first.observation_space, first.action_space)

    def _parts(self, indices: VecEnvIndices) -> list[tuple[VecEnv, list[int]]]:
        """``(part, its local indices)`` for global ``indices``, in order."""
        out: dict[int, list[int]] = {}
        for i in self._get_indices(indices):
            k = int(np.searchsorted(self._bounds, i, side="right") - 1)
            out.setdefault(k, []).append(i - int(self._bounds[k]))
        return [(self.venvs[k], local) for k, local in out.items()]

    def reset(self) -> VecEnvObs:
        for k, v in enumerate(self.venvs):
            lo, hi = self._bounds[k], self._bounds[k + 1]
            seeds = self._seeds[lo:hi]
            if any(s is not None for s in seeds):
                v._seeds = list(seeds)
            options = self._options[lo:hi]
            if any(options):
                v._options = list(options)
        obs = np.concatenate([np.asarray(v.reset()) for v in self.venvs])
        self.reset_infos = [info for v in self.venvs for info in v.reset_infos]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        actions = self._take_actions()
        results = [v.step(actions[self._bounds[k] : self._bounds[k + 1]]) for k, v in enumerate(self.venvs)]
        obs = np.concatenate([np.asarray(r[0]) for r in results])
        rewards = np.concatenate([r[1] for r in results])
        dones = np.concatenate([r[2] for r in results])
        infos = [info for r in results for info in r[3]]
        self.reset_infos = [info for v in self.venvs for info in v.reset_infos]
        return obs, rewards, dones, infos

    def close(self) -> None:
        for v in self.venvs:
            v.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [x for v, local in self._parts(indices) for x in v.get_attr(attr_name, local)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for v, local in self._parts(indices):
            v.set_attr(attr_name, value, local)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        return [
            x for v, local in self._parts(indices)
            for x in v.env_method(method_name, *method_args, indices=local, **method_kwargs)
        ]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [x for v, local in self._parts(indices) for x in v.env_is_wrapped(wrapper_class, local)]


def make_family_vec_env(
    env_id: str, families: Sequence[str], per_family: int, split: str = "train", **env_kwargs: Any
) -> ConcatVecEnv:
    """``per_family`` batched sub-envs of each instance family (:data:`dus_gym.instances.FAMILIES`),
    drawing the family's ``split`` instances, as one SB3 ``VecEnv`` (:class:`ConcatVecEnv`).

    ``env_kwargs`` (episode length, method, device, ...) apply to every family; a family's own
    data set, views and configuration (:func:`~dus_gym.instances.family_env_kwargs`) come on top.
    """
    from dus_gym.instances import family_env_kwargs

    parts: list[VecEnv] = []
    for family in families:
        own = family_env_kwargs(family, split)
        clash = sorted(set(own) & set(env_kwargs))
        if clash:
            raise ValueError(f"make_family_vec_env: {clash} are set by family {family!r}; leave them out")
        parts.append(make_sb3_vec_env(env_id, per_family, **own, **env_kwargs))
    return ConcatVecEnv(parts)
