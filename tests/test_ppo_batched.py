"""agents/ppo_batched.py (CleanRL-style PPO over the batched env) and benchmarks/learning_curves.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import ppo_batched
from benchmarks import learning_curves
from dus_gym.cli import UsageError

TINY = '{"dataset": "synthetic:tiny", "n_steps": 3, "iterations_per_step": 2, "base_batch": 8, "device": "cpu"}'


def _train(tmp_path: Path, *extra: str) -> Path:
    args = ppo_batched.parse_args(ppo_batched.Args, [
        "--env-kwargs", TINY, "--instances", "train", "--num-envs", "2", "--num-steps", "4",
        "--num-minibatches", "2", "--update-epochs", "2", "--total-timesteps", "16", "--output-dir", str(tmp_path),
        *extra,
    ])
    return ppo_batched.main(args)


def test_a_tiny_run_records_whole_episodes_and_counts_only_their_steps(tmp_path: Path) -> None:
    run_dir = _train(tmp_path)
    with (run_dir / "episodes.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    # Rollouts of 2 envs x 4 calls, 3-step episodes: each call after an episode's end is a reset
    # (NEXT_STEP), not counted; 3 rollouts reach 18 >= 16 env steps, in 6 whole episodes.
    assert len(rows) == 6 and all(int(r["episode_length"]) == 3 for r in rows)
    assert [int(r["timesteps"]) for r in rows] == [6, 6, 12, 12, 18, 18]
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    for r in rows:  # the mean examples per iteration of each modality: they sum to M * B = 16
        assert float(r["mean_quantity_a"]) + float(r["mean_quantity_b"]) == pytest.approx(16.0)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_envs"] == 2 and config["total_timesteps"] == 16
    agent = ppo_batched.Agent(7 * 2 + 3, 2, 9)
    agent.load_state_dict(torch.load(run_dir / "agent.pt"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(run_dir)).Reload().Tags()["scalars"]
    assert {"charts/episodic_return", "charts/test_accuracy", "dus/quantity/a", "dus/quantity/b",
            "losses/policy_loss", "losses/value_loss"} <= set(tags)


def test_the_same_seed_trains_the_same_agent(tmp_path: Path) -> None:
    first, second = _train(tmp_path / "1"), _train(tmp_path / "2")
    a, b = torch.load(first / "agent.pt"), torch.load(second / "agent.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (first / "episodes.csv").read_text() == (second / "episodes.csv").read_text()


def test_gae_of_a_next_step_rollout_by_hand() -> None:
    # One sub-env: steps 0, 1 end an episode by truncation at step 1; step 2 is the reset transition
    # (masked); step 3 starts the next episode, the rollout ends after it.
    g, lam = 0.9, 0.5
    rewards = torch.tensor([[1.0], [2.0], [0.0], [4.0]])
    values = torch.tensor([[0.5], [1.0], [3.0], [2.0]])  # values[2] = V(last observation of the episode)
    next_value = torch.tensor([5.0])
    terminations = torch.zeros(4, 1)
    dones = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    adv = ppo_batched.gae(rewards, values, next_value, terminations, dones, g, lam)
    d1 = 2.0 + g * 3.0 - 1.0  # truncated: bootstraps from V(last observation)
    d0 = 1.0 + g * 1.0 - 0.5
    d3 = 4.0 + g * 5.0 - 2.0
    torch.testing.assert_close(adv[:2, 0], torch.tensor([d0 + g * lam * d1, d1]))
    torch.testing.assert_close(adv[3, 0], torch.tensor(d3))
    # Terminated instead (a diverged run): nothing after it.
    adv = ppo_batched.gae(rewards, values, next_value, dones, dones, g, lam)
    torch.testing.assert_close(adv[1, 0], torch.tensor(2.0 - 1.0))


def test_bad_settings_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--num-minibatches 3 must divide num_envs \\* num_steps = 8"):
        _train(tmp_path, "--num-minibatches", "3")


def test_learning_curves_bin_every_seeds_episodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs: dict[int, list[tuple[object, ...]]] = {
        1: [(100, 0.5, 0.6), (250, 0.7, "")], 2: [(150, 0.1, 0.8), (300, 0.3, 0.9)],
    }
    for seed, rows in runs.items():
        folder = tmp_path / f"run{seed}"
        folder.mkdir()
        with (folder / "episodes.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("timesteps", "episode_return", "test_accuracy"), *rows])
    got = learning_curves.binned([learning_curves.read_episodes(tmp_path / f"run{s}") for s in (1, 2)], 200)
    assert [g[:2] for g in got] == [(200, 2), (400, 2)]
    np.testing.assert_allclose([g[2:] for g in got], [(0.3, 0.7), (0.5, 0.9)])  # a missing test is left out
    out = learning_curves.main(learning_curves.parse_args(learning_curves.Args, [
        "--runs", f"both={tmp_path}/run*", "--bin", "200", "--output", str(tmp_path / "lc.png")]))
    assert out.stat().st_size > 0 and "both (2 seeds)" in capsys.readouterr().out
    with pytest.raises(UsageError, match="no folder matches"):
        learning_curves.main(learning_curves.Args(runs=[f"none={tmp_path}/nothing*"]))


def test_its_run_folder_is_a_policy_every_tool_loads(tmp_path: Path) -> None:
    import gymnasium as gym

    from dus_gym import make_policy
    from dus_gym.agent_io import ActorCritic, read_run_config

    run_dir = _train(tmp_path)
    assert read_run_config(run_dir)["algo"] == "ppo_batched"
    env = gym.make("DUS-v0", **json.loads(TINY))
    policy = make_policy(str(run_dir), env)
    obs, _ = env.reset(seed=0)
    action, _ = policy.predict(obs, deterministic=True)
    # the most probable level of each modality of the saved actor
    net = ActorCritic(obs.shape[0], 2, int(env.action_space.nvec[0]))  # type: ignore[attr-defined]
    net.load_state_dict(torch.load(run_dir / "agent.pt", weights_only=True))
    logits = net.actor(torch.as_tensor(obs[None])).view(2, -1)
    assert action.tolist() == logits.argmax(-1).tolist()
    assert env.action_space.contains(action)
    batch, _ = policy.predict(np.stack([obs, obs]), deterministic=False)
    assert batch.shape == (2, 2)
    other = gym.make("DUS-v0", dataset="synthetic:tiny", views=None, n_steps=3,
                     dataset_kwargs={"dims": [8, 6, 5], "signal": [3.0, 1.5, 1.0], "names": ["a", "b", "c"]})
    with pytest.raises(ValueError, match=r"maps .* observations to .* action logits"):
        make_policy(str(run_dir), other)
