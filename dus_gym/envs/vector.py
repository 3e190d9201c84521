"""DUSVectorEnv: N DUS episodes whose training runs are one batched computation (docs/batched.md).

``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``
returns it for every registered id. Sub-env i is what ``gym.make(id)`` would
be: the same spaces, observations, rewards and infos, its own ``np_random``
(``reset(seed=s)`` gives sub-env i the instance ``gym.make(id).reset(seed=s +
i)`` gives). Only the training is shared: one
:class:`~dus_gym.batched.BatchedTrainingRun` (or, where stacking does not
apply, :class:`~dus_gym.batched.LoopedRuns`) trains all N runs in lock-step.

Autoreset is ``SAME_STEP`` (declared in ``metadata``): a sub-env whose
episode ends is reset within the same ``step()``; its last observation and
info (with ``info["test"]``, the test metrics) arrive in
``info["final_obs"]`` and ``info["final_info"]`` under the mask
``info["_final_info"]``, as Gymnasium's vector envs give them. Training runs
stay in lock-step that way: no sub-env sits out a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dus_gym.batched import RunBatch, make_run_batch
from dus_gym.envs.dus_env import DUSEnv

__all__ = ["DUSVectorEnv"]


class DUSVectorEnv(VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """N sub-envs of :class:`~dus_gym.envs.dus_env.DUSEnv` over one batched training run.

    Args:
        num_envs: N >= 1.
        max_episode_steps: accepted for ``gym.make_vec``; must be None or equal
            ``n_steps`` (the env owns its episode length).
        env_kwargs: :class:`DUSEnv`'s keyword arguments, the same for every sub-env.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}  # noqa: RUF012

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, **env_kwargs: Any) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"DUSVectorEnv: num_envs={num_envs!r}; expected an integer >= 1")
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

    @property
    def modalities(self) -> list[str]:
        return list(self.envs[0].modalities)

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env: a new instance and a new training run each.

        ``seed``: an int s gives sub-env i the seed s + i; a list gives one
        seed (or None) per sub-env. ``options={"instance": {...}}`` applies to
        every sub-env, as ``DUSEnv.reset`` takes it; a list of N instance dicts
        gives sub-env i the i-th.
        """
        seeds = self._seeds(seed)
        data = [env._new_episode(s, self._sub_options(options, i)) for i, (env, s) in enumerate(zip(self.envs, seeds))]
        run_seeds = [env.instance for env in self.envs]
        if self.batch is None or self.batch.num_runs != self.num_envs:
            self.batch = make_run_batch(data, self.envs[0].config, run_seeds)
        else:
            for i, (d, inst) in enumerate(zip(data, run_seeds)):
                self.batch.reset_run(i, d, inst)
        evaluations = self.batch.evaluate("val")
        infos: dict[str, Any] = {}
        observations = []
        for i, (env, ev) in enumerate(zip(self.envs, evaluations)):
            obs, info = env._first_observation(ev, self.batch.iterations_per_epoch)
            observations.append(obs)
            self.reset_infos[i] = info
            infos = self._add_info(infos, info, i)
        return np.stack(observations), infos

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One step of every sub-env: N decisions, one batched training step, SAME_STEP autoreset."""
        if self.batch is None:
            raise RuntimeError("DUSVectorEnv.step() called before reset()")
        batch = self.batch
        actions = np.asarray(actions)
        if actions.ndim == 0 or actions.shape[0] != self.num_envs:
            raise ValueError(
                f"DUSVectorEnv.step: actions of shape {actions.shape}; expected ({self.num_envs}, "
                f"{len(self.modalities)}): one action per sub-env"
            )
        counts = np.stack([self._counts(i, a) for i, a in enumerate(actions)])
        iterations = {env._iterations for env in self.envs}
        if len(iterations) != 1:  # pragma: no cover - every sub-env shares iterations_per_step and the split sizes
            raise RuntimeError(f"DUSVectorEnv: sub-envs disagree on iterations per step {sorted(iterations)}")
        reports = batch.step(counts, iterations.pop())
        observations, rewards, terminations, truncations = [], [], [], []
        infos: dict[str, Any] = {}
        ended: list[int] = []
        self.final_observations = {}
        self.final_tests = {}
        for i, (env, c, report) in enumerate(zip(self.envs, counts, reports)):
            obs, reward, terminated, truncated, info = env._after_step(
                c, report, lambda i=i: batch.report(i, "test")  # type: ignore[misc]
            )
            self.sub_infos[i] = info
            if terminated or truncated:
                infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                self.final_observations[i] = obs
                self.final_tests[i] = info["test"] if "test" in info else batch.report(i, "test")
                ended.append(i)
            observations.append(obs)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            if not (terminated or truncated):
                infos = self._add_info(infos, info, i)
        if ended:  # SAME_STEP: the ended sub-envs start their next episode now
            for i in ended:
                env = self.envs[i]
                batch.reset_run(i, env._new_episode(None, None), env.instance)
            evaluations = batch.evaluate("val")
            for i in ended:
                obs, info = self.envs[i]._first_observation(evaluations[i], batch.iterations_per_epoch)
                observations[i] = obs
                self.reset_infos[i] = info
                infos = self._add_info(infos, info, i)
        return (
            np.stack(observations),
            np.asarray(rewards, dtype=np.float64),
            np.asarray(terminations, dtype=np.bool_),
            np.asarray(truncations, dtype=np.bool_),
            infos,
        )

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
            return env.rule.quantities(env._check_action(action))
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
        return self.batch.report(i, "test")
