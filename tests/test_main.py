from __future__ import annotations

import json
from pathlib import Path

import pytest

import dus_gym
from dus_gym.__main__ import DEFAULT_AGENT, agent_spec, main, parse_args


def test_main_job_prints_a_table_and_writes_records(tmp_path, capsys) -> None:
    out = tmp_path / "records.json"
    code = main(["--env-ids", "DUS-Synthetic-v0", "--policies", "uniform", "dus_h", "--seeds", "2",
                 "--n-steps", "2", "--device", "cpu", "--json-out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "DUS-Synthetic-v0 (2 seeds" in text and "branch b" in text and "probe a" in text
    records = json.loads(out.read_text())
    assert [(r["policy"], r["seed"]) for r in records] == [("uniform", 0), ("uniform", 1), ("dus_h", 0), ("dus_h", 1)]
    # the same seed gives every policy the same instance
    assert records[0]["instance"] == records[2]["instance"] != records[1]["instance"]
    assert all(r["steps"] == 2 and r["test"] is not None for r in records)


def test_records_are_the_same_with_one_worker_or_two(tmp_path) -> None:
    # Each episode depends only on its env, policy and seed (one torch thread), so the process that plays
    # it changes nothing, not even for a policy that draws (seeded with its episode's seed).
    records = []
    for workers in (1, 2):
        out = tmp_path / f"records{workers}.json"
        code = main(["--env-ids", "DUS-Synthetic-v0", "DUS-AVMNIST-v0", "--policies", "random", "dus_h",
                     "--seeds", "2", "--n-steps", "2", "--device", "cpu", "--agent", "none", "--general-agent",
                     "none", "--workers", str(workers), "--json-out", str(out)])
        assert code == 0
        records.append(json.loads(out.read_text()))
    assert [(r["env_id"], r["policy"], r["seed"]) for r in records[1]] == [
        (e, p, s) for e in ("DUS-Synthetic-v0", "DUS-AVMNIST-v0") for p in ("random", "dus_h") for s in (0, 1)]
    assert records[0] == records[1]
    assert records[1][0]["quantities"] != records[1][1]["quantities"]  # random, seeds 0 and 1: other draws


def test_every_flag_has_help() -> None:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        parse_args(["--help"])
    for flag in ("--env-ids", "--policies", "--seeds", "--n-steps", "--method", "--device", "--json-out",
                 "--workers"):
        assert flag in buf.getvalue()
    assert "(default: 5)" in buf.getvalue()


@pytest.mark.parametrize("n_steps", [7, 40])
def test_episodes_of_any_length_end_with_test_metrics(n_steps: int, tmp_path, capsys) -> None:
    # Not only the registered length: the env owns its episode length, so 7 and 40 steps both end with
    # the test metrics (40 used to be cut at the registered 30 without them, and printed as diverged).
    out = tmp_path / "records.json"
    # Every id at 7 steps; the 40-step episode on the cheapest (the digits) keeps the suite short.
    env_ids = list(dus_gym.ENV_IDS) if n_steps < 10 else ["DUS-v0"]
    code = main(["--env-ids", *env_ids, "--policies", "uniform", "--seeds", "1", "--n-steps", str(n_steps),
                 "--device", "cpu", "--agent", "none", "--json-out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "diverged" not in text
    for env_id in env_ids:
        assert f"{env_id} (1 seeds, test accuracy %" in text
    records = json.loads(out.read_text())
    assert len(records) == len(env_ids)
    assert all(r["steps"] == n_steps and not r["diverged"] and r["test"] is not None for r in records)


def test_the_shipped_agent_plays_only_its_own_setting(capsys, monkeypatch, tmp_path) -> None:
    import dus_gym.agent_io

    # The job's defaults are the agent's setting: it plays.
    assert agent_spec(parse_args(["--device", "cpu"])) == DEFAULT_AGENT
    assert dus_gym.EPISODE_STEPS == parse_args([]).n_steps
    # Another episode length or method: skipped, saying which setting differs.
    assert agent_spec(parse_args(["--n-steps", "7"])) is None
    assert "trained with n_steps 30 (this job: 7); skipping it" in capsys.readouterr().err
    assert agent_spec(parse_args(["--method", "mla"])) is None
    assert "trained with method 'joint' (this job: 'mla'); skipping it" in capsys.readouterr().err
    # No DUS-v0 in the job, or --agent none: nothing to say.
    assert agent_spec(parse_args(["--env-ids", "DUS-Synthetic-v0"])) is None
    assert agent_spec(parse_args(["--agent", "none"])) is None
    assert capsys.readouterr().err == ""
    # An agent of another env (the shortcut family's) is skipped on DUS-v0 too.
    assert agent_spec(parse_args(["--agent", "pretrained:shortcut_ppo", "--n-steps", "15"])) is None
    assert "trained with env_id 'DUS-Synthetic-v0' (this job: 'DUS-v0')" in capsys.readouterr().err
    # An install without the shipped agent: the default is skipped with a note, not an error.
    monkeypatch.setattr(dus_gym.agent_io, "PRETRAINED_DIR", tmp_path)
    assert agent_spec(parse_args([])) is None
    assert capsys.readouterr().err == f"No trained agent in {tmp_path / 'dus_v0_ppo'}; skipping it\n"


def test_an_agent_trained_across_families_plays_every_env_id(tmp_path: Path) -> None:
    """--general-agent: a run folder trained with --families matches any data set of the same setting."""
    from dus_gym.__main__ import general_agent_spec

    folder = tmp_path / "general"
    folder.mkdir()
    config = {"algo": "ppo", "env_id": "DUS-v0", "env_kwargs": {"device": "cpu"}, "families": ["shortcut_a"]}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.zip").write_bytes(b"")
    args = parse_args(["--general-agent", str(folder), "--device", "cpu"])
    assert general_agent_spec(args, "DUS-v0") == str(folder)
    assert general_agent_spec(args, "DUS-Synthetic-v0") == str(folder)
    assert general_agent_spec(parse_args(["--general-agent", str(folder), "--n-steps", "7"]), "DUS-v0") is None
    assert general_agent_spec(parse_args(["--general-agent", "none"]), "DUS-v0") is None
