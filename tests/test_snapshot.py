"""Snapshots (get_state / set_state): restoring and stepping again continues exactly as before.

Also the env checkers and the same-seed determinism test for the research
methods (ogm_ge, mla with projection), since snapshot and replay rely on it.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import same_info
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dus_gym  # noqa: F401  (registers the ids)
from dus_gym import DUSEnv
from dus_gym.data import load_dataset
from dus_gym.run import RunConfig, TrainingRun

METHODS: dict[str, dict[str, Any]] = {
    "joint": {"method": "joint"},
    "ogm_ge": {"method": "ogm_ge", "method_kwargs": {"alpha": 0.5}},
    "mla_projection": {"method": "mla", "method_kwargs": {"projection": True}},
}
ACTIONS = [np.array([2, 6]), np.array([7, 1]), np.array([4, 4])]


def steps(env: DUSEnv, actions: list[np.ndarray]) -> list[tuple[Any, ...]]:
    return [env.step(a) for a in actions]


def assert_same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> None:
    assert len(a) == len(b)
    for (o1, r1, t1, u1, i1), (o2, r2, t2, u2, i2) in zip(a, b):
        np.testing.assert_array_equal(o1, o2)
        assert (r1, t1, u1) == (r2, t2, u2)
        assert same_info(i1, i2)


@pytest.mark.parametrize("method", list(METHODS))
def test_restore_then_step_gives_the_same_continuation(tiny_env_kwargs, method) -> None:
    env = DUSEnv(**tiny_env_kwargs, **METHODS[method], run_config={"probe_steps": 10})
    env.reset(seed=3)
    env.step(ACTIONS[0])
    snapshot = env.get_state()
    first = steps(env, ACTIONS[1:])  # to the end of the episode: the last info holds the test metrics
    assert "test" in first[-1][4]
    for _ in range(2):  # a snapshot can be restored more than once
        env.set_state(snapshot)
        assert_same(steps(env, ACTIONS[1:]), first)
    # A different action from the same snapshot really does change the continuation.
    env.set_state(snapshot)
    other = env.step(np.array([0, 8]))
    assert other[4]["quantities"].tolist() != first[0][4]["quantities"].tolist()


def test_restore_brings_back_np_random(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    env.reset(seed=0)
    snapshot = env.get_state()
    drawn = env.np_random.integers(2**31, size=4)
    env.set_state(snapshot)
    np.testing.assert_array_equal(env.np_random.integers(2**31, size=4), drawn)


def test_training_run_state_round_trip_is_exact_and_leaves_the_snapshot_intact() -> None:
    run = TrainingRun(load_dataset("synthetic:tiny", seed=0), RunConfig(base_batch=8, device="cpu"))
    run.train([4, 12], 2)  # momentum buffers exist from here on
    state = run.get_state()
    saved = {k: v.clone() for k, v in state["model"].items()}
    run.train([12, 4], 3)
    after = {k: v.clone() for k, v in run.model.state_dict().items()}
    for k, v in state["model"].items():  # training on did not write into the snapshot
        assert torch.equal(v, saved[k])
    run.set_state(state)
    assert run.iterations == 2 and run.examples_seen.tolist() == [8, 24]
    run.train([12, 4], 3)
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, after[k]), k
    with pytest.raises(ValueError, match="snapshot lacks"):
        run.set_state({"model": state["model"]})


def test_snapshots_belong_to_their_instance(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    with pytest.raises(RuntimeError, match="before reset"):
        env.get_state()
    env.reset(seed=0)
    snapshot = env.get_state()
    env.reset(seed=1)
    with pytest.raises(ValueError, match="instance"):
        env.set_state(snapshot)


@pytest.mark.parametrize("method", ["ogm_ge", "mla_projection"])
def test_research_methods_pass_the_checkers_and_are_deterministic(tiny_env_kwargs, method) -> None:
    env = gym.make("DUS-Synthetic-v0", **tiny_env_kwargs, **METHODS[method])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)
    runs = []
    for _ in range(2):
        env = DUSEnv(**tiny_env_kwargs, **METHODS[method])
        obs, info = env.reset(seed=11)
        runs.append([(obs, 0.0, False, False, info), *steps(env, ACTIONS)])
    assert_same(*runs)
