"""The lookahead oracle: it answers the candidate with the best one-step gain, at a counted cost."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import dus_gym  # noqa: F401  (registers the ids)
from dus_gym import DUSEnv, LookaheadOracle


def test_oracle_picks_the_best_tried_gain_and_its_reward_is_what_it_saw(tiny_env_kwargs) -> None:
    # Few probe steps: every candidate of the last step computes the test metrics.
    env = gym.make("DUS-Synthetic-v0", **{**tiny_env_kwargs, "n_steps": 2}, levels=3, run_config={"probe_steps": 5})
    oracle = LookaheadOracle(env)
    obs, _ = env.reset(seed=5)
    for _ in range(2):
        action, _ = oracle.predict(obs)
        gains = oracle.last_gains
        assert len(oracle.last_candidates) == 9  # every action of MultiDiscrete([3, 3])
        assert oracle.last_choice is not None and gains[oracle.last_choice] == max(gains)
        assert all(gains[oracle.last_choice] >= g for g in gains)
        np.testing.assert_array_equal(action, oracle.last_candidates[oracle.last_choice])
        # The env was restored: taking the answer gives exactly the gain the oracle saw.
        obs, reward, _, truncated, _ = env.step(action)
        assert reward == gains[oracle.last_choice]
    assert truncated
    # With a fixed budget only the ratio of weights matters: 9 actions, 5 distinct count vectors.
    assert oracle.extra_steps == 2 * 5
    assert oracle.extra_iterations == oracle.extra_steps * tiny_env_kwargs["iterations_per_step"]


def test_sampled_candidates_come_from_the_oracle_seed_and_include_uniform(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs, action_type="continuous")
    env.reset(seed=0)
    tried = []
    for _ in range(2):
        oracle = LookaheadOracle(env, candidates=3, seed=42)
        oracle.best_action()
        tried.append(np.stack(oracle.last_candidates))
        assert len(oracle.last_gains) == 4
    np.testing.assert_array_equal(tried[0], tried[1])
    np.testing.assert_array_equal(tried[0][0], env.rule.uniform_action)


def test_explicit_candidates_and_bad_settings(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    with pytest.raises(ValueError, match="not actions"):
        LookaheadOracle(env, candidates=[[0, 99]])
    with pytest.raises(ValueError, match="discrete"):
        LookaheadOracle(DUSEnv(**tiny_env_kwargs, action_type="continuous"))
    oracle = LookaheadOracle(env, candidates=[[4, 4], [8, 0]])
    with pytest.raises(RuntimeError, match="reset"):
        oracle.best_action()
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="one env"):
        oracle.predict(np.stack([obs, obs]))
    action, _ = oracle.predict(obs[None])
    assert action.shape == (1, 2) and len(oracle.last_gains) == 2
