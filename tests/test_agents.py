"""agents/: train.py end to end (PPO, A2C; 1 and 2 envs), its run folder and logs, evaluate.py, reinforce.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("tensorboard")

from agents import evaluate, reinforce, train
from dus_gym.agent_io import (
    PRETRAINED_DIR,
    LoadedAgent,
    agent_folder,
    is_agent_folder,
    load_agent,
    load_policy,
    policy_label,
    pretrained_agents,
    read_run_config,
    setting_differences,
)
from dus_gym.cli import field_docs
from dus_gym.instances import check_disjoint, instance_set

TINY: dict[str, Any] = {
    "dataset": "synthetic:tiny", "n_steps": 3, "iterations_per_step": 2, "base_batch": 8, "device": "cpu"
}
TINY_ALGO = {
    "ppo": {"n_steps": 8, "batch_size": 8, "n_epochs": 1},
    "a2c": {"n_steps": 4},
}


def tiny_args(tmp_path: Path, algo: str, num_envs: int) -> train.Args:
    return train.Args(
        exp_name=f"test_{algo}", algo=algo, env_id="DUS-Synthetic-v0", env_kwargs=json.dumps(TINY),
        num_envs=num_envs, total_timesteps=16, seed=3, hyperparams=json.dumps(TINY_ALGO[algo]),
        eval_freq=8, n_eval_episodes=1, n_eval_instances=2, checkpoint_freq=8,
        output_dir=str(tmp_path), progress_bar=False,
    )


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train.main(tiny_args(tmp_path_factory.mktemp("runs"), "ppo", 2))


def check_run_folder(run_dir: Path, algo: str, num_envs: int) -> None:
    config = read_run_config(run_dir)
    assert config["algo"] == algo and config["env_id"] == "DUS-Synthetic-v0"
    assert config["env_kwargs"] == TINY
    assert run_dir.name.startswith(f"DUS-Synthetic-v0__test_{algo}__3__")
    for name in ("model.zip", "vecnormalize.pkl", "episodes.csv", "logs/progress.csv", "eval/evaluations.npz"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "checkpoints").glob("*.zip"))
    assert config["timesteps_done"] >= 16
    with (run_dir / "episodes.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == (16 // num_envs // TINY["n_steps"]) * num_envs
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    assert all(float(r["mean_quantity_a"]) + float(r["mean_quantity_b"]) == pytest.approx(16.0) for r in rows)


def test_ppo_with_two_envs_writes_the_run_folder(ppo_run: Path) -> None:
    check_run_folder(ppo_run, "ppo", 2)


def test_a2c_with_one_env_writes_the_run_folder(tmp_path: Path) -> None:
    check_run_folder(train.main(tiny_args(tmp_path, "a2c", 1)), "a2c", 1)


@pytest.mark.slow
@pytest.mark.parametrize(("algo", "num_envs"), [("ppo", 1), ("a2c", 2)])
def test_other_algo_and_env_counts(tmp_path: Path, algo: str, num_envs: int) -> None:
    check_run_folder(train.main(tiny_args(tmp_path, algo, num_envs)), algo, num_envs)


def test_tensorboard_has_the_namespaced_tags(ppo_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (ppo_run / "logs").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {"charts/episodic_return", "test/accuracy", "test/macro_f1", "test/imbalance_gap", "eval/mean_reward"}
    for m in ("a", "b"):
        expected |= {
            f"dus/quantity/{m}", f"dus/score/{m}", f"dus/val_branch_accuracy/{m}",
            f"test/branch_accuracy/{m}", f"test/probe_accuracy/{m}",
        }
    assert expected <= tags, sorted(expected - tags)
    quantities = [e.value for e in acc.Scalars("dus/quantity/a")]
    assert all(1 <= q <= 15 for q in quantities)


def test_monitoring_instances_are_held_out(ppo_run: Path) -> None:
    config = read_run_config(ppo_run)
    monitor = config["eval_monitor_instances"]
    check_disjoint(instance_set("train"), monitor)
    assert monitor == instance_set("eval")[-2:]
    # evaluate.py's instances (the first half of the eval set) are untouched by training
    assert not set(map(json.dumps, monitor)) & set(map(json.dumps, instance_set("eval", 32)))


def test_train_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--algo 'dqn'"):
        train.main(train.Args(algo="dqn", output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="--env-kwargs"):
        train.main(train.Args(env_kwargs="[1]", output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="--uniform-prior nan"):
        train.main(train.Args(uniform_prior=float("nan"), output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="--uniform-prior shapes a new policy"):
        train.main(train.Args(uniform_prior=0.5, init_from="pretrained:general_ppo", output_dir=str(tmp_path)))


def test_kickstart_clones_the_built_in_policy_before_training(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    args = tiny_args(tmp_path, "ppo", 1)
    args.kickstart, args.kickstart_episodes, args.eval_freq, args.checkpoint_freq = "fixed:1,4", 3, 0, 0
    run_dir = train.main(args)
    report = read_run_config(run_dir)["kickstart_report"]
    assert report["samples"] == 3 * TINY["n_steps"]  # whole episodes of the one sub-env
    assert report["agreement"] == 1.0
    assert read_run_config(run_dir)["timesteps_done"] >= 16 + report["samples"]
    # Before the RL updates moved it, the clone played fixed:1,4; after 16 steps of PPO it still does.
    env = gym.make("DUS-Synthetic-v0", **TINY)
    agent = load_agent(run_dir)
    obs, _ = env.reset(seed=5)
    counts = env.unwrapped.rule.quantities(agent.predict(obs)[0])  # type: ignore[attr-defined]
    assert counts.tolist() == [3, 13]
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        train.main(train.Args(kickstart="nope", output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="--kickstart starts a new policy"):
        train.main(train.Args(kickstart="gap", uniform_prior=0.5, output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="--kickstart clones discrete actions"):
        box = gym.make("DUS-Synthetic-v0", **TINY, action_type="continuous")
        train.kickstart(PPO("MlpPolicy", box, n_steps=8, batch_size=8), None, None, 1, 1, 0, 3)


@pytest.mark.parametrize("levels", [3, 9])
def test_uniform_prior_centres_the_new_policy_on_uniform(levels: int) -> None:
    import torch
    from stable_baselines3 import PPO

    env = gym.make("DUS-Synthetic-v0", **TINY, levels=levels)
    model = PPO("MlpPolicy", env, seed=0, n_steps=8, batch_size=8)
    train.center_on_uniform(model.policy, 0.5)
    obs = np.stack([env.observation_space.sample() for _ in range(16)])
    dists: Any = model.policy.get_distribution(torch.as_tensor(obs)).distribution
    mid = (levels - 1) // 2
    # The start is the discretised Gaussian of the bias (up to the 0.01-gain weights): with 9 levels
    # and strength 0.5, 0.40 on the middle level, as train.py's --uniform-prior help says.
    expected = np.exp(-0.5 * (np.arange(levels) - (levels - 1) / 2) ** 2)
    expected /= expected.sum()
    if levels == 9:
        assert expected[4] == pytest.approx(0.40, abs=0.005)
    for d in dists:  # one categorical per modality
        np.testing.assert_allclose(d.probs.detach().numpy(), np.broadcast_to(expected, (16, levels)), atol=0.01)
        p = d.probs.detach().numpy()
        assert (p.argmax(axis=1) == mid).all()
        # Symmetric around the middle and falling away from it, whatever the observation.
        np.testing.assert_allclose(p, p[:, ::-1], atol=0.02)
        assert (np.diff(p[:, : mid + 1], axis=1) > 0).all()
    actions, _ = model.predict(obs, deterministic=True)
    rule = env.unwrapped.rule  # type: ignore[attr-defined]
    counts = [rule.quantities(a) for a in actions]
    assert all(c[0] == c[1] for c in counts)  # the mode is uniform sampling
    with pytest.raises(ValueError, match="needs discrete actions"):
        box = gym.make("DUS-Synthetic-v0", **TINY, action_type="continuous")
        train.center_on_uniform(PPO("MlpPolicy", box, n_steps=8, batch_size=8).policy, 1.0)


def test_loaded_agent_acts_and_evaluate_runs(ppo_run: Path, tmp_path: Path) -> None:
    agent = load_agent(ppo_run)
    assert agent.obs_rms is not None
    out = tmp_path / "episodes.jsonl"
    summary = evaluate.main(
        evaluate.Args(policies=[str(ppo_run), "uniform", "fixed:1,2", "dus_h"], n_episodes=2, output=str(out),
                      workers=1)
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 * 2
    eval_set = instance_set("eval", 2)
    for r in records:
        assert len(r["quantities"]) == TINY["n_steps"]
        assert {k: r["instance"][k] for k in ("split_seed", "init_seed", "data_seed")} == eval_set[r["episode"]]
        assert 0.0 <= r["test"]["accuracy"] <= 1.0
    # paired: the same instance and batch order for every policy, so uniform and dus_h at step 1 agree
    by = {(r["policy"], r["episode"]): r for r in records}
    assert by[("uniform", 0)]["instance"] == by[("dus_h", 0)]["instance"]
    assert by[("fixed:1,2", 1)]["quantities"][0] == [5, 11]
    assert set(summary["policies"]) == {ppo_run.name, "uniform", "fixed:1,2", "dus_h"}
    assert summary["policies"]["dus_h"]["minus_dus_h"]["mean"] == 0.0
    assert (tmp_path / "summary.json").is_file()


def test_evaluate_expands_every_fixed_ratio() -> None:
    specs = evaluate.expand_policies(["uniform", "fixed:all"])
    assert specs[0] == "uniform" and len(specs) == 9
    assert "fixed:0.25,4" in specs and "fixed:4,0.25" in specs


def test_evaluate_refuses_training_instances(ppo_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="held-out"):
        evaluate.main(evaluate.Args(policies=[str(ppo_run)], instances="train", output=str(tmp_path / "x.jsonl")))


@pytest.mark.parametrize("module", [train, evaluate, reinforce])
def test_help_documents_every_flag(module: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from dus_gym.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(module.Args, ["--help"])
    text = capsys.readouterr().out
    for name, doc in field_docs(module.Args).items():
        assert "--" + name.replace("_", "-") in text
        assert doc.split()[0] in text


def test_reinforce_trains_and_evaluates(tmp_path: Path) -> None:
    result = reinforce.main(
        reinforce.Args(env_kwargs=json.dumps({**TINY, "n_steps": 2}), episodes=4, batch_episodes=2, eval_episodes=1,
                       output_dir=str(tmp_path))
    )
    run_dir = Path(result["run_dir"])
    assert (run_dir / "policy.pt").is_file()
    assert len(result["eval_accuracy"]) == 1 and 0.0 <= result["eval_accuracy"][0] <= 1.0
    assert list(run_dir.glob("events.out.tfevents.*"))


def test_returns_to_go() -> None:
    np.testing.assert_allclose(reinforce.returns_to_go([1.0, 2.0, 3.0], 0.5), [1 + 1 + 0.75, 2 + 1.5, 3.0])


def test_reward_signal_ranks_policies_per_instance() -> None:
    def rec(test: float, acc: float, f1: float, loss: float) -> dict[str, Any]:
        return {"test": {"accuracy": test}, "val_final": {"accuracy": acc, "f1": f1, "loss": loss}}

    # val accuracy and loss order the policies as test accuracy does; f1 the other way round
    by_policy = {
        p: {e: rec(t + e, t, -t, 1 - t) for e in range(3)} for p, t in (("x", 0.1), ("y", 0.5), ("z", 0.9))
    }
    signal = evaluate.reward_signal(by_policy, [0, 1, 2])
    assert signal["accuracy"]["mean"] == pytest.approx(1.0)
    assert signal["loss"]["mean"] == pytest.approx(1.0)
    assert signal["f1"]["mean"] == pytest.approx(-1.0)
    assert signal["accuracy"]["instances"] == 3


def test_init_from_continues_a_run(ppo_run: Path, tmp_path: Path) -> None:
    args = tiny_args(tmp_path, "ppo", 1)
    args.init_from, args.total_timesteps, args.eval_freq, args.checkpoint_freq = str(ppo_run), 8, 0, 0
    run_dir = train.main(args)
    config = read_run_config(run_dir)
    assert config["init_from"] == str(ppo_run)
    assert config["timesteps_done"] >= read_run_config(ppo_run)["timesteps_done"] + 8
    before = (ppo_run / "episodes.csv").read_text().splitlines()
    after = (run_dir / "episodes.csv").read_text().splitlines()
    assert after[: len(before)] == before and len(after) > len(before)
    with pytest.raises(ValueError, match="its algo is 'ppo'"):
        train.main(train.Args(algo="a2c", init_from=str(ppo_run), env_id="DUS-Synthetic-v0",
                              env_kwargs=json.dumps(TINY), num_envs=1, output_dir=str(tmp_path)))


@pytest.mark.parametrize(
    ("folder", "env_id", "env_kwargs"),
    [("dus_v0_ppo", "DUS-v0", {}), ("shortcut_ppo", "DUS-Synthetic-v0", {"n_steps": 15})],
)
def test_shipped_agents_load_and_act(folder: str, env_id: str, env_kwargs: dict[str, Any]) -> None:
    import gymnasium as gym

    run_dir = PRETRAINED_DIR / folder
    assert agent_folder(f"pretrained:{folder}") == agent_folder(folder) == run_dir
    agent = load_agent(run_dir)
    config = read_run_config(run_dir)
    assert config["env_id"] == env_id and config["env_kwargs"] == env_kwargs
    check_disjoint(instance_set(config["train_instances"]), config["eval_monitor_instances"])
    env = gym.make(env_id, **env_kwargs)
    assert agent.model.observation_space == env.observation_space
    obs = env.observation_space.sample()
    action, _ = agent.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
    assert (run_dir / "learning_curve.png").is_file()
    summary = json.loads((run_dir / "heldout" / "summary.json").read_text())
    assert summary["episodes"] >= 10


@pytest.mark.slow
def test_main_job_plays_the_shipped_agent(capsys: pytest.CaptureFixture[str]) -> None:
    from dus_gym.__main__ import main

    assert main(["--env-ids", "DUS-v0", "--policies", "uniform", "--seeds", "1", "--device", "cpu"]) == 0
    assert "ppo-agent" in capsys.readouterr().out


@pytest.mark.parametrize("n_steps", [7, 40])
def test_training_episodes_of_any_length_end_with_test_metrics(n_steps: int, tmp_path: Path) -> None:
    # The env owns its episode length: every finished training episode has its test metrics.
    args = tiny_args(tmp_path, "ppo", 1)
    args.env_kwargs = json.dumps({**TINY, "n_steps": n_steps})
    args.total_timesteps, args.eval_freq, args.checkpoint_freq = n_steps + 1, 0, 0
    run_dir = train.main(args)
    with (run_dir / "episodes.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows, "no training episode finished"
    for r in rows:
        assert int(r["episode_length"]) == n_steps
        assert 0.0 <= float(r["test_accuracy"]) <= 1.0 and r["test_probe_accuracy_a"] != ""


def test_train_on_the_batched_env(tmp_path: Path) -> None:
    """--batched N: one process, N sub-envs whose runs train as one computation; episodes end with test metrics."""
    args = tiny_args(tmp_path, "ppo", 1)
    args.batched, args.total_timesteps, args.eval_freq, args.checkpoint_freq = 4, 24, 0, 0
    args.hyperparams = json.dumps({"n_steps": 6, "batch_size": 12, "n_epochs": 1})
    run_dir = train.main(args)
    with (run_dir / "episodes.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8  # 24 steps of 4 sub-envs, 3-step episodes
    assert all(int(r["episode_length"]) == TINY["n_steps"] and r["test_accuracy"] for r in rows)
    assert read_run_config(run_dir)["batched"] == 4
    assert isinstance(load_agent(run_dir), LoadedAgent)


def test_load_policy_takes_every_kind_of_spec(ppo_run: Path) -> None:
    import gymnasium as gym

    from dus_gym.policies import DUSHeuristicPolicy

    env = gym.make("DUS-Synthetic-v0", **TINY)
    assert isinstance(load_policy("dus_h:2", env), DUSHeuristicPolicy)
    assert not is_agent_folder("fixed:1,2") and policy_label("fixed:1,2") == "fixed:1,2"
    agent = load_policy(str(ppo_run), env)
    assert isinstance(agent, LoadedAgent) and is_agent_folder(str(ppo_run))
    assert policy_label(str(ppo_run)) == ppo_run.name
    assert policy_label("runs/cem_residual/0") == "cem_residual/0"  # a bare seed number keeps its parent
    # A shipped agent by pretrained:NAME or by its bare name; its label is the name.
    digits = gym.make("DUS-v0")
    for spec in ("pretrained:dus_v0_ppo", "dus_v0_ppo"):
        shipped = load_policy(spec, digits)
        assert isinstance(shipped, LoadedAgent) and shipped.config["env_id"] == "DUS-v0"
        assert policy_label(spec) == "dus_v0_ppo"
    assert pretrained_agents() == ["dus_v0_ppo", "general_ppo", "shortcut_ppo"]
    with pytest.raises(FileNotFoundError, match=r"no shipped agent 'nope' .*shipped agents: pretrained:dus_v0_ppo"):
        load_policy("pretrained:nope", env)
    with pytest.raises(FileNotFoundError, match="runs/nope: no such run folder"):
        load_policy("runs/nope", env)
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        load_policy("nope", env)


def test_load_policy_refuses_an_agent_for_other_spaces(ppo_run: Path) -> None:
    import gymnasium as gym

    three = gym.make("DUS-Synthetic-v0", **{**TINY, "levels": 5})
    with pytest.raises(ValueError) as info:
        load_policy(str(ppo_run), three)
    message = str(info.value)
    # The folder, both spaces and the setting the agent was trained on.
    assert f"the agent in {ppo_run} was trained for the action_space MultiDiscrete([9 9])" in message
    assert "this env has MultiDiscrete([5 5])" in message
    assert f"DUS-Synthetic-v0 with env kwargs {json.dumps(TINY)}" in message


def test_setting_differences_compare_whole_settings() -> None:
    config = {"env_id": "DUS-v0", "env_kwargs": {}}
    # The registered episode length given explicitly is the same setting; the reward and device do not count.
    assert setting_differences(config, "DUS-v0", {"n_steps": 30, "reward_metric": "loss", "device": "cpu"}) == {}
    assert setting_differences(config, "DUS-v0", {"n_steps": 7, "method": "mla"}) == {
        "n_steps": (30, 7), "method": ("joint", "mla")
    }
    assert setting_differences(config, "DUS-Synthetic-v0", {})["dataset"] == ("digits", "synthetic:shortcut")
