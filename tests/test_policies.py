from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import unwrapped
from gymnasium import spaces

from dus_gym import DUSEnv
from dus_gym.oracle import LookaheadOracle
from dus_gym.policies import dus_h_quantities, make_policy


def test_dus_h_by_hand() -> None:
    # S = (0.9, 0.3): mean 0.6, d = (0.3, -0.3); lam = 1: n = 64 * (1 -+ 0.5) = (32, 96)
    assert dus_h_quantities([0.9, 0.3], 64, lam=1.0).tolist() == [32, 96]
    # lam = 0 is uniform; before any score it is uniform too
    assert dus_h_quantities([0.9, 0.3], 64, lam=0.0).tolist() == [64, 64]
    assert dus_h_quantities([0.0, 0.0], 64).tolist() == [64, 64]
    # lam = 4: n = 64 * (1 - 2, 1 + 2) = (-64, 192) -> clipped at n_min = 1, total kept
    assert dus_h_quantities([0.9, 0.3], 64, lam=4.0).tolist() == [1, 127]


def test_dus_h_policy_gives_the_lagging_modality_more(tiny_env_kwargs) -> None:
    env = DUSEnv(**{**tiny_env_kwargs, "base_batch": 64, "action_type": "continuous"})
    policy = make_policy("dus_h", env)
    assert isinstance(env.observation_space, spaces.Box)
    obs = np.zeros(env.observation_space.shape, dtype=np.float32)
    obs[env.layout.slices["score"]] = [0.9, 0.3]
    action, state = policy.predict(obs)
    assert state is None
    assert env.rule.quantities(action).tolist() == [32, 96]


def test_gap_weights_by_hand() -> None:
    from dus_gym.heuristic import gap_weights

    # Training fits exp(-loss) = (0.9, 0.5), branch accuracies (0.4, 0.5): gaps (0.5, 0.0), excess
    # (0.5, 0); margin 0.15, width 0.2: a is 0.35 past the margin, more than the width: half weight.
    loss = -np.log([0.9, 0.5])
    np.testing.assert_allclose(gap_weights(loss, [0.4, 0.5]), [0.5, 1.0])
    # Excess 0.25: 0.1 past the margin, half the width: 2 ** -0.5.
    np.testing.assert_allclose(gap_weights(loss, [0.65, 0.5]), [2**-0.5, 1.0])
    # Within the margin (a faster learner that generalises: complementary data): uniform.
    np.testing.assert_allclose(gap_weights(loss, [0.8, 0.5]), [1.0, 1.0])
    # Only differences of the gaps count, for any number of modalities and batch shape.
    three = gap_weights(-np.log([[0.9, 0.5, 0.7]]), np.array([[0.4, 0.5, 0.7]]))
    assert three.shape == (1, 3)
    np.testing.assert_allclose(three, [[0.5, 1.0, 1.0]])
    with pytest.raises(ValueError, match="width > 0"):
        gap_weights(loss, [0.4, 0.5], width=0.0)


def test_gap_policy_halves_the_modality_that_does_not_generalise(tiny_env_kwargs) -> None:
    env = DUSEnv(**{**tiny_env_kwargs, "base_batch": 64, "action_type": "continuous"})
    policy = make_policy("gap", env)
    obs = np.zeros(env.layout.size, dtype=np.float32)
    assert env.rule.quantities(policy.predict(obs)[0]).tolist() == [64, 64]  # at reset: no gap yet
    obs[env.layout.slices["train_loss"]] = -np.log([0.5, 0.9])
    obs[env.layout.slices["val_branch_accuracy"]] = [0.5, 0.4]
    assert env.rule.quantities(policy.predict(obs)[0]).tolist() == [85, 43]  # b gets half of a's share
    obs[env.layout.slices["val_branch_accuracy"]] = [0.5, 0.85]
    assert env.rule.quantities(policy.predict(obs)[0]).tolist() == [64, 64]
    with pytest.raises(ValueError, match="policy 'gap:-1'"):
        make_policy("gap:-1", env)


def test_policies_accept_single_and_batched_observations(tiny_env_kwargs) -> None:
    env = gym.make("DUS-Synthetic-v0", **tiny_env_kwargs)
    obs, _ = env.reset(seed=0)
    assert isinstance(env.action_space, spaces.MultiDiscrete)  # the default action type
    for spec in ("uniform", "random", "fixed:1,2", "dus_h:2", "gap"):
        policy = make_policy(spec, env, seed=0)
        single, _ = policy.predict(obs)
        batch, _ = policy.predict(np.stack([obs, obs]))
        assert env.action_space.contains(single)
        assert batch.shape == (2, *env.action_space.shape)
    assert make_policy("uniform", env).predict(obs)[0].tolist() == [4, 4]
    assert unwrapped(env).rule.quantities(make_policy("fixed:1,2", env).predict(obs)[0]).tolist() == [5, 11]


def test_random_policy_is_seeded(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    assert isinstance(env.observation_space, spaces.Box)
    obs = np.zeros(env.observation_space.shape, dtype=np.float32)
    a = [make_policy("random", env, seed=3).predict(obs)[0].tolist() for _ in range(2)]
    p = make_policy("random", env, seed=3)
    seq = [p.predict(obs)[0].tolist() for _ in range(5)]
    assert a[0] == a[1] == seq[0] and len({tuple(s) for s in seq}) > 1


def test_bad_policy_names(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    with pytest.raises(ValueError, match=r"unknown policy 'greedy'.*uniform.*oracle"):
        make_policy("greedy", env)
    with pytest.raises(ValueError, match=r"policy 'fixed:1,2,3'.*one weight per modality"):
        make_policy("fixed:1,2,3", env)
    with pytest.raises(ValueError, match=r"observation of shape \(5,\); expected"):
        make_policy("uniform", env).predict(np.zeros(5))


def test_oracle_by_name_tries_the_candidates(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    obs, _ = env.reset(seed=0)
    oracle = make_policy("oracle:3", env, seed=0)
    action, _ = oracle.predict(obs)
    assert env.action_space.contains(action)
    assert isinstance(oracle, LookaheadOracle) and oracle.last_choice is not None
    gains = oracle.last_gains
    assert len(gains) >= 2 and gains[oracle.last_choice] == max(gains)


def test_make_policy_is_the_one_front_door() -> None:
    # The README's first example with a shipped agent: a name, not a loader to find.
    import dus_gym

    env = gym.make("DUS-v0", n_steps=1, device="cpu")
    obs, _ = env.reset(seed=0)
    agent = dus_gym.make_policy("pretrained:general_ppo", env)
    action, _ = agent.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action))
    with pytest.raises(ValueError, match=r"unknown policy 'nope'.*a shipped agent \(pretrained:dus_v0_ppo, "):
        dus_gym.make_policy("nope", env)
    with pytest.raises(FileNotFoundError, match=r"no shipped agent 'nope' in .*; shipped agents: pretrained:"):
        dus_gym.make_policy("pretrained:nope", env)
    # An object with SB3's predict passes through once its spaces match the env's.
    uniform = make_policy("uniform", env)
    assert dus_gym.make_policy(uniform, env) is uniform
    from stable_baselines3 import PPO

    other = gym.make("DUS-v0", views=["pix", "zer", "fou"], n_steps=1, device="cpu")
    with pytest.raises(ValueError, match="PPO's observation_space is Box"):
        dus_gym.make_policy(PPO("MlpPolicy", other, n_steps=8, batch_size=8), env)
    with pytest.raises(TypeError, match="int is no policy spec"):
        dus_gym.make_policy(3, env)  # type: ignore[arg-type]


def test_residual_gap_policy_is_the_gap_rule_at_zero_and_leans_by_its_features(tiny_env_kwargs) -> None:
    from dus_gym.builtin_policies import RESIDUAL_FEATURES, ResidualGapPolicy, residual_features

    # Continuous actions: the counts follow the weights without the discrete grid's rounding.
    env = DUSEnv(**{**tiny_env_kwargs, "base_batch": 64, "action_type": "continuous"})
    gap, zero = make_policy("gap", env), ResidualGapPolicy(env, np.zeros(len(RESIDUAL_FEATURES)))
    rng = np.random.default_rng(0)
    obs = rng.uniform(env.layout.low, np.minimum(env.layout.high, 3.0), size=(50, env.layout.size)).astype(np.float32)
    np.testing.assert_array_equal(zero.predict(obs)[0], gap.predict(obs)[0])

    o = np.zeros(env.layout.size, dtype=np.float32)
    o[env.layout.slices["train_loss"]] = -np.log([0.7, 0.5])  # equal gaps (0.2): the rule alone is uniform
    o[env.layout.slices["val_branch_accuracy"]] = [0.5, 0.3]
    o[env.layout.slices["progress"]] = 0.25
    # Features by hand, centred over the two modalities: accuracy (0.5, 0.3) and fit (0.7, 0.5) -> +-0.1,
    # gaps equal -> 0; times progress 0.25.
    f = residual_features(env.layout, o.astype(np.float64))
    np.testing.assert_allclose(f[0], [0.1, 0.0, 0.1, 0.025, 0.0, 0.025], atol=1e-6)
    assert env.rule.weights(gap.predict(o)[0]).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(f.sum(axis=0), 0.0, atol=1e-12)
    # +10 log2 per unit of accuracy: a is 0.2 ahead, so log2(w_a / w_b) = 2, a ratio of 4.
    lean = ResidualGapPolicy(env, [10, 0, 0, 0, 0, 0])
    w_a, w_b = env.rule.weights(lean.predict(o)[0])
    assert w_a / w_b == pytest.approx(4.0)
    n_a, n_b = env.rule.quantities(lean.predict(o)[0])
    assert n_a > 3 * n_b
    # The same coefficient on progress * accuracy acts a quarter as much at a quarter of the episode (a
    # ratio of 2 ** 0.5), and the modalities' order does not matter: swapping
    # them swaps the counts.
    late = ResidualGapPolicy(env, [0, 0, 0, 10, 0, 0])
    w_a, w_b = env.rule.weights(late.predict(o)[0])
    assert w_a / w_b == pytest.approx(2**0.5)
    swapped = o.copy()
    for name in ("train_loss", "val_branch_accuracy"):
        swapped[env.layout.slices[name]] = o[env.layout.slices[name]][::-1]
    assert env.rule.quantities(lean.predict(swapped)[0]).tolist() == [n_b, n_a]
    with pytest.raises(ValueError, match=r"theta=\[1.0, 2.0\]; expected 6 finite numbers"):
        ResidualGapPolicy(env, [1.0, 2.0])
