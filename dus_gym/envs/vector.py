"""DUSVectorEnv: N DUS episodes whose training runs are one batched computation (docs/batched.md).

``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``
returns it for every registered id. Sub-env i is what ``gym.make(id)`` would
be: the same spaces, observations, rewards and infos, its own ``np_random``
(``reset(seed=s)`` gives sub-env i the instance ``gym.make(id).reset(seed=s +
i)`` gives). Only the training is shared: one
:class:`~dus_gym.batched.BatchedTrainingRun` (or, where stacking does not
apply, :class:`~dus_gym.batched.LoopedRuns`) trains all N runs in lock-step.

Autoreset follows Gymnasium's ``autoreset_mode`` (the attribute and
``metadata["autoreset_mode"]``), chosen at construction as for
``SyncVectorEnv``, so a loop written for Gymnasium works unchanged:

- ``NEXT_STEP`` (Gymnasium's default): the step that ends an episode returns
  its last observation and info (with ``info["test"]``); the next ``step()``
  resets that sub-env, ignores its action and returns its first observation
  with reward 0 and no termination. Its run sits out that step's training
  (when every sub-env ended together, as fixed-length episodes do, that step
  trains nothing and only evaluates the new runs).
- ``SAME_STEP``: the ended sub-env is reset within the same ``step()``; its
  last observation and info arrive in ``info["final_obs"]`` and
  ``info["final_info"]`` under the mask ``info["_final_info"]``. No run ever
  sits out (:func:`~dus_gym.envs.sb3.make_sb3_vec_env` uses it, as SB3 does).
- ``DISABLED``: nothing is reset by itself; reset the ended sub-envs with
  ``reset(options={"reset_mask": mask})`` before the next ``step()``.

``reset(options={"reset_mask": mask})`` resets only the sub-envs marked True
(a bool array of shape ``(N,)``), in every mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dus_gym.batched import RunBatch, make_run_batch
from dus_gym.envs.dus_env import DUSEnv

__all__ = ["DUSVectorEnv"]


@dataclass
class _Step:
    """One sub-env's part of a vector step."""

    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


class DUSVectorEnv(VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """N sub-envs of :class:`~dus_gym.envs.dus_env.DUSEnv` over one batched training run.

    Args:
        num_envs: N >= 1.
        max_episode_steps: accepted for ``gym.make_vec``; must be None or equal
            ``n_steps`` (the env owns its episode length).
        autoreset_mode: ``NEXT_STEP`` (default, as Gymnasium's), ``SAME_STEP``
            or ``DISABLED``, an :class:`~gymnasium.vector.AutoresetMode` or its
            value (``"NextStep"``, ``"SameStep"``, ``"Disabled"``).
        env_kwargs: :class:`DUSEnv`'s keyword arguments, the same for every sub-env.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        **env_kwargs: Any,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"DUSVectorEnv: num_envs={num_envs!r}; expected an integer >= 1")
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            valid = [m.value for m in AutoresetMode]
            raise ValueError(f"DUSVectorEnv: autoreset_mode={autoreset_mode!r}; expected one of {valid}") from None
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        first = DUSEnv(**env_kwargs)
        if max_episode_steps is not None and max_episode_steps != first.n_steps:
            raise ValueError(
                f"DUSVectorEnv: max_episode_steps={max_episode_steps} differs from n_steps={first.n_steps}; "
                "set the episode length with n_steps"
            )
        self.envs = [first] + [DUSEnv(**env_kwargs) for _ in range(num_envs - 1)]
        for env in self.envs[1:]:
            env.source = first.source  # one copy of the data for all sub-envs
        self.num_envs = num_envs
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.batch: RunBatch | None = None
        self.sub_infos: list[dict[str, Any]] = [{} for _ in range(num_envs)]
        """each sub-env's own info of the last step (an ended one's final info), as DUSEnv gives it"""
        self.reset_infos: list[dict[str, Any]] = [{} for _ in range(num_envs)]
        """each sub-env's info of its latest reset"""
        self.final_observations: dict[int, np.ndarray] = {}
        """the last observation of each sub-env whose episode ended in the last step"""
        self.final_tests: dict[int, dict[str, Any]] = {}
        """the test metrics of each run that ended in the last step: ``info["test"]`` of a
        truncated episode, and those of a diverged run too (which ``info`` leaves out, as
        DUSEnv does), taken before the sub-env restarts"""
        self._ended = np.zeros(num_envs, dtype=np.bool_)  # episodes that ended and were not reset yet
        self._obs = np.zeros((num_envs, first.layout.size), dtype=np.float32)  # each sub-env's latest observation

    @property
    def modalities(self) -> list[str]:
        return list(self.envs[0].modalities)

    @property
    def instances(self) -> list[dict[str, Any]]:
        """Each sub-env's current instance (:attr:`DUSEnv.instance`), in sub-env order."""
        return [dict(env.instance) for env in self.envs]

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the sub-envs: a new instance and a new training run each.

        ``seed``: an int s gives sub-env i the seed s + i; a list gives one
        seed (or None) per sub-env. ``options={"instance": {...}}`` applies to
        every sub-env, as ``DUSEnv.reset`` takes it; a list of N instance dicts
        gives sub-env i the i-th. ``options={"reset_mask": mask}`` (bool,
        shape ``(N,)``) resets only the sub-envs marked True, as Gymnasium's
        vector envs take it; the others keep their episodes and observations.
        """
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask", None))
        seeds = self._seeds(seed)
        which = np.flatnonzero(mask)
        data = {int(i): self.envs[i].begin_episode(seeds[i], self._sub_options(options or None, int(i))) for i in which}
        if self.batch is None or self.batch.num_runs != self.num_envs:
            if not mask.all():
                raise RuntimeError("DUSVectorEnv.reset: reset every sub-env once before resetting some (reset_mask)")
            self.batch = make_run_batch([data[i] for i in range(self.num_envs)], self.envs[0].config,
                                        [env.instance for env in self.envs])
        else:
            for i, d in data.items():
                self.batch.reset_run(i, d, self.envs[i].instance)
        infos: dict[str, Any] = {}
        for i, (obs, info) in self._first_observations(list(data)).items():
            self._obs[i] = obs
            infos = self._add_info(infos, info, i)
        self._ended[mask] = False
        return self._obs.copy(), infos

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One step of every sub-env: N decisions, one batched training step, autoreset by ``autoreset_mode``."""
        if self.batch is None:
            raise RuntimeError("DUSVectorEnv.step() called before reset()")
        batch = self.batch
        actions = np.asarray(actions)
        if actions.ndim == 0 or actions.shape[0] != self.num_envs:
            raise ValueError(
                f"DUSVectorEnv.step: actions of shape {actions.shape}; expected ({self.num_envs}, "
                f"{len(self.modalities)}): one action per sub-env"
            )
        if self.autoreset_mode == AutoresetMode.DISABLED and self._ended.any():
            raise RuntimeError(
                f"DUSVectorEnv.step: sub-env(s) {np.flatnonzero(self._ended).tolist()} ended and autoreset_mode is "
                "DISABLED; reset them first with reset(options={'reset_mask': mask})"
            )
        # NEXT_STEP: the sub-envs that ended at the last step start anew and sit this step out.
        resetting = [int(i) for i in np.flatnonzero(self._ended)]
        new_data = {i: self.envs[i].begin_episode(None, None) for i in resetting}
        for i, d in new_data.items():
            batch.reset_run(i, d, self.envs[i].instance)
        steps = self._train(batch, actions, resetting)
        if steps:  # the others trained: a run that sat out is made fresh again (its rows trained a placeholder)
            for i, d in new_data.items():
                batch.reset_run(i, d, self.envs[i].instance)
        self.final_observations, self.final_tests = {}, {}
        infos: dict[str, Any] = {}
        for i, st in steps.items():
            self.sub_infos[i] = st.info
            if not (st.terminated or st.truncated):
                infos = self._add_info(infos, st.info, i)
                continue
            self.final_observations[i] = st.obs
            self.final_tests[i] = (
                st.info["test"] if "test" in st.info else batch.report(i, "test", self.envs[i].test_probe)
            )
            self._ended[i] = True
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                infos = self._add_info(infos, {"final_obs": st.obs, "final_info": st.info}, i)
                batch.reset_run(i, self.envs[i].begin_episode(None, None), self.envs[i].instance)
                resetting.append(i)
            else:
                infos = self._add_info(infos, st.info, i)
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        for i, st in steps.items():
            self._obs[i], rewards[i], terminated[i], truncated[i] = st.obs, st.reward, st.terminated, st.truncated
        for i, (obs, info) in self._first_observations(resetting).items():
            self._obs[i] = obs
            self._ended[i] = False
            if self.autoreset_mode == AutoresetMode.NEXT_STEP:
                self.sub_infos[i] = info
            infos = self._add_info(infos, info, i)
        return self._obs.copy(), rewards, terminated, truncated, infos

    def _train(self, batch: RunBatch, actions: np.ndarray, sitting_out: Sequence[int]) -> dict[int, _Step]:
        """One batched training step for every sub-env not in ``sitting_out`` (whose rows train a
        uniform placeholder, undone by the caller); each trained sub-env's step, by index."""
        active = [i for i in range(self.num_envs) if i not in sitting_out]
        if not active:
            return {}
        uniform = self.envs[0].rule.quantities(self.envs[0].rule.uniform_action)
        counts = np.stack([self._counts(i, actions[i]) if i in active else uniform for i in range(self.num_envs)])
        iterations = {self.envs[i].iterations for i in active}
        if len(iterations) != 1:  # pragma: no cover - every sub-env shares iterations_per_step and the split sizes
            raise RuntimeError(f"DUSVectorEnv: sub-envs disagree on iterations per step {sorted(iterations)}")
        reports = batch.step(counts, iterations.pop())
        steps = {}
        for i in active:
            obs, reward, term, trunc, info = self.envs[i].finish_step(
                counts[i], reports[i], lambda i=i: batch.report(i, "test", self.envs[i].test_probe)  # type: ignore[misc]
            )
            steps[i] = _Step(obs, reward, term, trunc, info)
        return steps

    def _first_observations(self, which: Sequence[int]) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
        """The first observation and info of each sub-env in ``which``, just reset (one batched evaluation)."""
        if not which:
            return {}
        assert self.batch is not None
        evaluations = self.batch.evaluate("val")
        out = {}
        for i in which:
            obs, info = self.envs[i].first_observation(evaluations[i], self.batch.iterations_per_epoch)
            self.reset_infos[i] = info
            out[i] = (obs, info)
        return out

    def _reset_mask(self, mask: Any) -> np.ndarray:
        """``options["reset_mask"]`` checked as Gymnasium checks it; None: every sub-env."""
        if mask is None:
            return np.ones(self.num_envs, dtype=np.bool_)
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            got = f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {getattr(mask, 'shape', '')}".strip()
            raise ValueError(
                f"DUSVectorEnv.reset: options['reset_mask'] is {got}; expected a bool numpy array of shape "
                f"({self.num_envs},)"
            )
        if not mask.any():
            raise ValueError("DUSVectorEnv.reset: options['reset_mask'] marks no sub-env; expected at least one True")
        return mask

    def _sub_options(self, options: dict[str, Any] | None, i: int) -> dict[str, Any] | None:
        """Sub-env i's reset options: ``options["instance"]`` may list one instance per sub-env."""
        if not options or not isinstance(options.get("instance"), list | tuple):
            return options
        instances = options["instance"]
        if len(instances) != self.num_envs:
            raise ValueError(
                f"DUSVectorEnv.reset: options['instance'] lists {len(instances)} instances for {self.num_envs} "
                "sub-envs; expected one each (or one dict for all)"
            )
        return {**options, "instance": instances[i]}

    def _counts(self, i: int, action: Any) -> np.ndarray:
        env = self.envs[i]
        try:
            return env.quantities(action)
        except ValueError as err:
            raise ValueError(f"sub-env {i}: {err}") from None

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, int | np.integer):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"DUSVectorEnv.reset: {len(seeds)} seeds for {self.num_envs} sub-envs; expected one each")
        return seeds

    def test_metrics(self, i: int) -> dict[str, Any]:
        """Sub-env i's current test metrics with linear probes (what its last ``info["test"]`` holds)."""
        if self.batch is None:
            raise RuntimeError("DUSVectorEnv.test_metrics() called before reset()")
        return self.batch.report(i, "test", self.envs[i].test_probe)
