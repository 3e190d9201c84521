from __future__ import annotations

import pickle
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from conftest import same_info
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AsyncVectorEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dus_gym
from dus_gym import DUSEnv, make_policy

SMALL: dict[str, Any] = {"n_steps": 3, "iterations_per_step": 2, "base_batch": 16, "device": "cpu"}
SPECS = [gym.spec(env_id) for env_id in dus_gym.ENV_IDS]


def rollout(env: gym.Env, seed: int, actions: list[Any] | None = None) -> list[tuple]:
    """The whole episode: (obs, reward, terminated, truncated, info) per step, reset first."""
    obs, info = env.reset(seed=seed)
    steps: list[tuple] = [(obs, 0.0, False, False, info)]
    k = 0
    while True:
        action = actions[k] if actions else env.action_space.sample()
        obs, reward, term, trunc, info = env.step(action)
        steps.append((obs, reward, term, trunc, info))
        k += 1
        if term or trunc:
            return steps


def assert_same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for (o1, r1, t1, u1, i1), (o2, r2, t2, u2, i2) in zip(a, b):
        np.testing.assert_array_equal(o1, o2)
        assert (r1, t1, u1) == (r2, t2, u2)
        assert same_info(i1, i2)


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_env_checkers_pass_without_warnings(spec, action_type) -> None:
    env = gym.make(spec.id, action_type=action_type, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)


@pytest.mark.parametrize("method", ["joint", "mla"])
@pytest.mark.parametrize("budget", ["fixed", "free"])
def test_methods_and_budgets_pass_the_checker(tiny_env_kwargs, method, budget) -> None:
    env = gym.make("DUS-Synthetic-v0", **tiny_env_kwargs, method=method, budget=budget, sample_cost=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)


def test_spaces_and_docstring_table_agree(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    m = len(env.modalities)
    box = env.observation_space
    assert isinstance(box, spaces.Box)
    assert box.shape == (7 * m + 3,)
    assert np.all(np.isfinite(box.low)) and np.all(np.isfinite(box.high))
    assert [row[1] for row in env.layout.describe()][:2] == ["score[a]", "score[b]"]
    assert "| Num | Observation | Min | Max |" in (DUSEnv.__doc__ or "")


def test_same_seed_same_episode_and_different_seeds_differ(tiny_env_kwargs) -> None:
    actions = [np.array([2, 6]), np.array([4, 4]), np.array([8, 0])]
    env_a, env_c = DUSEnv(**tiny_env_kwargs), DUSEnv(**tiny_env_kwargs)
    a = rollout(env_a, 7, actions)
    b = rollout(DUSEnv(**tiny_env_kwargs), 7, actions)
    assert_same(a, b)
    c = rollout(env_c, 8, actions)
    assert env_a.instance != env_c.instance
    assert not np.array_equal(a[-1][0], c[-1][0])


def test_reset_instance_option_fixes_the_run(tiny_env_kwargs) -> None:
    inst = {"split_seed": 1, "init_seed": 2, "sample_seed": 3, "data_seed": 4}
    env = DUSEnv(**tiny_env_kwargs)
    o1, _ = env.reset(seed=0, options={"instance": inst})
    first = dict(env.instance)
    o2, _ = env.reset(seed=99, options={"instance": inst})
    np.testing.assert_array_equal(o1, o2)
    assert first == env.instance == inst
    with pytest.raises(ValueError, match="unknown keys"):
        env.reset(options={"instance": {"seed": 1}})


def test_rewards_sum_to_the_metric_change_and_last_step_reports_test(tiny_env_kwargs) -> None:
    for metric, key, sign in [("accuracy", "val_accuracy", 1), ("loss", "val_loss", -1), ("f1", "val_macro_f1", 1)]:
        steps = rollout(DUSEnv(**tiny_env_kwargs, reward_metric=metric), 0, [np.array([4, 4])] * 3)
        total = sum(s[1] for s in steps[1:])
        assert total == pytest.approx(sign * (steps[-1][4][key] - steps[0][4][key]), abs=1e-6)
        last = steps[-1]
        assert last[3] and not last[2]  # truncated after n_steps, not terminated
        test = last[4]["test"]
        assert set(test["branch_accuracy"]) == set(test["probe_accuracy"]) == {"a", "b"}
        assert 0 <= test["accuracy"] <= 1
        assert all("test" not in s[4] for s in steps[:-1])


def test_info_reports_quantities_and_scores(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    env.reset(seed=0)
    obs, _, _, _, info = env.step(np.array([2, 6]))
    assert info["quantities"].tolist() == [3, 13] and info["quantities"].sum() == 16
    np.testing.assert_allclose(env.layout.get(obs, "quantity"), [3 / 8, 13 / 8])
    np.testing.assert_allclose(env.layout.get(obs, "score"), info["scores"], rtol=1e-6)
    np.testing.assert_allclose(env.layout.get(obs, "progress"), [1 / 3])
    assert env.observation_space.contains(obs)


def test_free_budget_charges_extra_samples(tiny_env_kwargs) -> None:
    kwargs = {**tiny_env_kwargs, "budget": "free", "sample_cost": 0.5}
    env_a, env_b = DUSEnv(**kwargs), DUSEnv(**{**kwargs, "sample_cost": 0.0})
    env_a.reset(seed=0)
    env_b.reset(seed=0)
    _, ra, _, _, info = env_a.step(np.array([8, 4]))  # weights 4 and 1: 32 + 8 = 40 examples
    _, rb, _, _, _ = env_b.step(np.array([8, 4]))
    assert info["quantities"].tolist() == [24, 8]  # 32 clipped at n_max = 3B = 24
    assert ra == pytest.approx(rb - 0.5 * (32 - 16) / 16)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.array([1, 2, 3]), r"has shape \(3,\); expected \(2,\)"),
        (np.array([0, 9]), r"outside the action space: expected integers in \[0, 9\)"),
        (np.array([0.5, 2.0]), "outside the action space"),
        (np.array([np.nan, 1.0]), "is not finite"),
        (np.array(["a", "b"]), "expected numbers"),
    ],
)
def test_bad_actions_raise_value_errors_naming_them(tiny_env_kwargs, action, message) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_continuous_actions_outside_the_box_are_refused(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs, action_type="continuous")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected values in \[-1, 1\]"):
        env.step(np.array([1.5, 0.0]))
    with pytest.raises(ValueError, match="not finite"):
        env.step(np.array([np.inf, 0.0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "mnist"}, r"unknown dataset 'mnist'.*'digits'"),
        ({"dataset": "digits", "views": ["pix", "colour"]}, r"unknown view 'colour'"),
        ({"method": "ogm"}, r"unknown method 'ogm'.*'joint'"),
        ({"reward_metric": "auc"}, r"unknown reward_metric 'auc'"),
        ({"budget": "tight"}, r"unknown budget mode 'tight'"),
        ({"action_type": "binary"}, r"unknown action type 'binary'"),
        ({"run_config": {"colour": 1}}, r"run_config.*valid fields"),
        ({"dataset": "digits", "dataset_kwargs": {"shortcut_rho": 0.9}}, r"digits takes no options"),
        ({"dataset_kwargs": {"colour": 1}}, r"valid fields"),
    ],
)
def test_bad_settings_name_the_valid_ones(tiny_env_kwargs, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        DUSEnv(**{**tiny_env_kwargs, **kwargs})


def test_step_before_reset_is_an_error(tiny_env_kwargs) -> None:
    with pytest.raises(RuntimeError, match="before reset"):
        DUSEnv(**tiny_env_kwargs).step(np.array([4, 4]))


def test_divergence_terminates_cleanly_with_a_penalty(tiny_env_kwargs) -> None:
    env = DUSEnv(**{**tiny_env_kwargs, "n_steps": 5}, lr=1e9, divergence_penalty=2.0)
    steps = rollout(env, 0, [np.array([4, 4])] * 5)
    obs, reward, term, trunc, info = steps[-1]
    assert term and not trunc and info["diverged"] and reward == -2.0
    assert "non-finite" in info["divergence"]
    assert env.observation_space.contains(obs)


def test_pickle_round_trip_mid_episode(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    env.reset(seed=3)
    env.step(np.array([3, 5]))
    clone = pickle.loads(pickle.dumps(env))
    for action in (np.array([6, 2]), np.array([4, 4])):
        a, b = env.step(action), clone.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4] and same_info(a[4], b[4])
    fresh = pickle.loads(pickle.dumps(DUSEnv(**tiny_env_kwargs)))
    assert fresh.run is None and fresh.observation_space == env.observation_space


def test_async_vector_env(tiny_env_kwargs) -> None:
    envs = gym.make_vec("DUS-Synthetic-v0", num_envs=2, vectorization_mode="async", **tiny_env_kwargs)
    try:
        assert isinstance(envs, AsyncVectorEnv)  # its reset takes one seed per env
        obs, _ = envs.reset(seed=[0, 1])
        assert obs.shape == (2, 17)
        for _ in range(3):
            obs, rewards, _, trunc, _ = envs.step(envs.action_space.sample())
        assert trunc.all() and np.all(np.isfinite(rewards))
    finally:
        envs.close()


def test_sb3_subproc_vec_env_with_a_builtin_policy(tiny_env_kwargs) -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    # "module:id" makes spawned workers import dus_gym, which registers the id
    vec = make_vec_env("dus_gym:DUS-Synthetic-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                       env_kwargs=tiny_env_kwargs, vec_env_kwargs={"start_method": "fork"})
    try:
        policy = make_policy("dus_h", DUSEnv(**tiny_env_kwargs))
        obs = vec.reset()
        for _ in range(3):
            assert isinstance(obs, np.ndarray)  # a Box observation space: one array, not a dict or tuple
            action, _ = policy.predict(obs)
            obs, _, dones, infos = vec.step(action)
        assert dones.all() and all("test" in i for i in infos)
    finally:
        vec.close()


@pytest.mark.parametrize("algo", ["PPO", "A2C"])
def test_sb3_agents_train_a_few_dozen_steps(tiny_env_kwargs, algo) -> None:
    import stable_baselines3

    env = gym.make("DUS-Synthetic-v0", **tiny_env_kwargs)
    cls = getattr(stable_baselines3, algo)
    kwargs = {"n_steps": 16, "batch_size": 16} if algo == "PPO" else {"n_steps": 8}
    model = cls("MlpPolicy", env, seed=0, device="cpu", **kwargs).learn(32)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)


def test_async_vector_env_after_multithreaded_training_in_the_parent() -> None:
    """Fork after torch used its thread pool must not hang the workers (Linux's default start method)."""
    import subprocess
    import sys

    script = (
        "import torch, gymnasium as gym, dus_gym\n"
        "torch.set_num_threads(2)\n"
        "env = gym.make('DUS-Synthetic-v0', dataset='synthetic:tiny', n_steps=2, iterations_per_step=2, device='cpu')\n"
        "env.reset(seed=0); env.step(env.action_space.sample())\n"
        "v = gym.make_vec('DUS-Synthetic-v0', num_envs=2, vectorization_mode='async', dataset='synthetic:tiny',"
        " n_steps=2, iterations_per_step=2, device='cpu')\n"
        "v.reset(seed=0); v.step(v.action_space.sample()); v.close(); print('done')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "done" in out.stdout, out.stderr[-2000:]
