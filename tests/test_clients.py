"""The env as other RL libraries drive it: TorchRL, Gymnasium's vector wrappers, sb3-contrib.

These libraries set nothing of ours: each test uses the env as their own
examples do (the clients extra, ``pip install -e ".[clients]"``, has the pins
that make them import). A test whose library is missing is skipped.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import dus_gym  # noqa: F401  (registers the ids)

TINY: dict[str, Any] = {"dataset": "synthetic:tiny", "n_steps": 3, "iterations_per_step": 2, "base_batch": 8,
                        "device": "cpu"}


def _vec(n: int = 2, **kwargs: Any) -> gym.vector.VectorEnv:
    return gym.make_vec("DUS-Synthetic-v0", num_envs=n, vectorization_mode="vector_entry_point", **{**TINY, **kwargs})


# -- Gymnasium -------------------------------------------------------------------------------------


def test_a_gymnasium_loop_sees_every_transition_and_the_true_returns() -> None:
    # Written for Gymnasium 1.x's default (NEXT_STEP), as its docs write a loop: the step after an
    # episode's end is a reset, whose reward is not part of any episode.
    envs = gym.wrappers.vector.RecordEpisodeStatistics(_vec(2))
    _, info = envs.reset(seed=0)
    start = info["val_accuracy"].copy()  # the untrained model's, per sub-env
    returns, lengths, autoreset = np.zeros(2), np.zeros(2, dtype=int), np.zeros(2, dtype=bool)
    episodes = 0
    for _ in range(2 * (TINY["n_steps"] + 1)):
        _, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
        returns += np.where(autoreset, 0.0, rewards)
        lengths += ~autoreset
        for i in np.flatnonzero(autoreset):
            start[i] = info["val_accuracy"][i]  # a new episode began
        done = terminated | truncated
        if done.any():
            assert info["_episode"].tolist() == done.tolist()
            # The returns sum the validation improvement: final minus initial accuracy of each run.
            np.testing.assert_allclose(info["episode"]["r"][done], returns[done], rtol=1e-6)
            np.testing.assert_allclose(returns[done], info["val_accuracy"][done] - start[done], atol=1e-6)
            assert info["episode"]["l"][done].tolist() == lengths[done].tolist() == [TINY["n_steps"]] * done.sum()
            assert info["_test"][done].all()  # the last step carries the test metrics, in the step's own info
            episodes += int(done.sum())
            returns[done], lengths[done] = 0.0, 0
        autoreset = done
    assert episodes == 4


@pytest.mark.parametrize(
    "wrapper",
    ["NormalizeObservation", "FlattenObservation", "RecordEpisodeStatistics", "NormalizeReward"],
)
def test_gymnasium_vector_wrappers_run_across_episode_ends(wrapper: str) -> None:
    envs = getattr(gym.wrappers.vector, wrapper)(_vec(2))
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, *envs.single_observation_space.shape)
    for _ in range(2 * TINY["n_steps"] + 2):
        obs, rewards, *_ = envs.step(envs.action_space.sample())
        assert np.isfinite(obs).all() and np.isfinite(rewards).all()
    envs.close()


def test_every_info_value_batches_into_arrays() -> None:
    envs = _vec(2)
    _, info = envs.reset(seed=0)
    infos = [info]
    for _ in range(TINY["n_steps"]):
        infos.append(envs.step(envs.action_space.sample())[4])

    def leaves(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
        out = []
        for k, v in d.items():
            out += leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
        return out

    for key, value in (kv for info in infos for kv in leaves(info)):
        assert isinstance(value, np.ndarray) and value.dtype != object, key
    assert infos[1]["quantities"].shape == (2, 2) and infos[1]["quantities"].dtype == np.int64
    assert infos[1]["val_branch_accuracy"].shape == (2, 2)


# -- TorchRL ---------------------------------------------------------------------------------------


def test_torchrl_wraps_the_single_env() -> None:
    torchrl_envs = pytest.importorskip("torchrl.envs")
    from torchrl.envs.utils import check_env_specs

    env = torchrl_envs.GymEnv("DUS-Synthetic-v0", **TINY).auto_register_info_dict()  # TorchRL's way to read infos
    check_env_specs(env)
    rollout = env.rollout(2 * TINY["n_steps"] + 1, break_when_any_done=False)  # across an episode end
    assert rollout["next", "done"].sum() == 2
    assert rollout["next", "quantities"].shape == (2 * TINY["n_steps"] + 1, 2)
    assert (rollout["next", "quantities"].sum(-1) == 2 * TINY["base_batch"]).all()


@pytest.mark.parametrize("mode", ["Disabled", "SameStep"])
def test_torchrl_wraps_the_batched_vector_env(mode: str) -> None:
    # TorchRL resets ended sub-envs itself (reset_mask) under DISABLED, which it prefers, and reads the
    # final observation under SAME_STEP (reading the infos then); it refuses NEXT_STEP.
    torchrl_envs = pytest.importorskip("torchrl.envs")
    from torchrl.envs.utils import check_env_specs

    env = torchrl_envs.GymWrapper(_vec(2, autoreset_mode=mode))
    assert env.batch_size == (2,)
    check_env_specs(env)
    rollout = env.rollout(2 * TINY["n_steps"] + 1, break_when_any_done=False)
    assert rollout.batch_size == (2, 2 * TINY["n_steps"] + 1)
    assert rollout["next", "done"].sum() == 4 and rollout["next", "reward"].isfinite().all()
    if mode == "SameStep":
        assert rollout["next", "quantities"].shape == (2, 2 * TINY["n_steps"] + 1, 2)


@pytest.mark.slow
def test_torchrl_over_gymnasiums_own_vector_env() -> None:
    # GymEnv(id, num_envs=2) builds Gymnasium's AsyncVectorEnv over the single env: the info batches.
    torchrl_envs = pytest.importorskip("torchrl.envs")
    from torchrl.envs.utils import check_env_specs

    env = torchrl_envs.GymEnv("dus_gym:DUS-Synthetic-v0", num_envs=2, **TINY)
    try:
        check_env_specs(env)
        rollout = env.rollout(2 * TINY["n_steps"] + 1, break_when_any_done=False)
        assert rollout["next", "done"].sum() == 4
    finally:
        env.close()


# -- sb3-contrib -----------------------------------------------------------------------------------


def test_recurrent_ppo_learns_on_the_batched_sb3_vec_env() -> None:
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from dus_gym.envs.sb3 import make_sb3_vec_env

    venv = make_sb3_vec_env("DUS-Synthetic-v0", 2, **TINY)
    model = sb3_contrib.RecurrentPPO("MlpLstmPolicy", venv, n_steps=6, batch_size=6, n_epochs=1, seed=0,
                                     policy_kwargs={"lstm_hidden_size": 8, "net_arch": []})
    model.learn(12)
    assert model.num_timesteps == 12
    obs = venv.reset()
    action, state = model.predict(obs, episode_start=np.ones(2, dtype=bool), deterministic=True)
    assert action.shape == (2, 2) and state is not None
