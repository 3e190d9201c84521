"""Episode records and replay: a recorded episode replays exactly on the CPU; tampering is located."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch

import dus_gym
from dus_gym import EpisodeRecord, make_policy, record_episode, replay
from dus_gym.records import machine_fingerprint


@pytest.fixture
def recorded(tiny_env_kwargs) -> EpisodeRecord:
    env = gym.make("DUS-Synthetic-v0", **tiny_env_kwargs, method="ogm_ge", method_kwargs={"alpha": 0.3})
    return record_episode(env, make_policy("random", env, seed=1), seed=4)


def test_a_recorded_episode_replays_exactly(recorded, tmp_path) -> None:
    assert len(recorded.actions) == len(recorded.rewards) == 3
    assert recorded.device == "cpu" and recorded.env_kwargs["method_kwargs"] == {"alpha": 0.3}
    path = recorded.save(tmp_path / "runs" / "episode.json")
    assert [p.name for p in path.parent.iterdir()] == ["episode.json"]  # no temporary file left behind
    loaded = EpisodeRecord.load(path)
    assert loaded == recorded
    report = dus_gym.replay(path)
    assert report and report.matches and report.steps == 3 and report.tolerance == 0.0
    assert report.rewards == recorded.rewards
    assert report.first_mismatch is None and "match exactly" in report.message


def test_a_tampered_reward_is_reported_at_its_step(recorded) -> None:
    tampered = EpisodeRecord.from_json(recorded.to_json())
    tampered.rewards[1] += 1e-12  # even the smallest change: the CPU comparison is exact
    report = replay(tampered)
    assert not report
    assert report.first_mismatch == 1 and report.steps == 2
    assert report.expected == tampered.rewards[1] and report.got == recorded.rewards[1]
    assert "step 2" in report.message
    assert replay(tampered, tolerance=1e-9).matches  # a stated tolerance absorbs it


def test_a_record_names_its_machine_and_a_mismatch_elsewhere_says_so(recorded) -> None:
    assert recorded.machine == machine_fingerprint()
    assert torch.backends.cpu.get_cpu_capability() in recorded.machine and torch.__version__ in recorded.machine
    report = replay(recorded)
    assert report and report.same_machine is True and report.machine == recorded.machine
    # Made elsewhere: a float may round otherwise there, and the first reward that differs says so.
    elsewhere = EpisodeRecord.from_json(recorded.to_json())
    elsewhere.machine = "aarch64, another CPU, torch 2.13.0 (DEFAULT), numpy 2.0.0"
    elsewhere.rewards[0] += 1e-9
    report = replay(elsewhere)
    assert not report and report.same_machine is False and report.first_mismatch == 0
    assert "recorded on 'aarch64, another CPU" in report.message and "bit-equal only on one machine" in report.message
    assert replay(elsewhere, tolerance=1e-6)  # what the note asks for


def test_a_record_from_before_machines_were_kept_still_replays(recorded) -> None:
    old = json.loads(recorded.to_json())
    del old["machine"]
    report = replay(EpisodeRecord.from_json(json.dumps(old)))
    assert report and report.same_machine is None


def test_a_record_longer_than_the_episode_is_reported(recorded) -> None:
    longer = EpisodeRecord.from_json(recorded.to_json())
    longer.actions.append(longer.actions[-1])
    longer.rewards.append(0.0)
    report = replay(longer)
    assert not report.matches and report.first_mismatch == 3 and report.got is None
    assert "ended early" in report.message


def test_continuous_actions_round_trip_through_json(tiny_env_kwargs, tmp_path) -> None:
    env = gym.make("DUS-Synthetic-v0", **{**tiny_env_kwargs, "n_steps": 2}, action_type="continuous")
    record = record_episode(env, make_policy("random", env, seed=0), seed=0)
    assert all(isinstance(a, float) for a in record.actions[0])
    assert replay(EpisodeRecord.load(record.save(tmp_path / "c.json"))).matches


def test_bad_records_are_refused(tiny_env_kwargs, tiny_dataset, tmp_path) -> None:
    with pytest.raises(ValueError, match="one per step"):
        EpisodeRecord("DUS-v0", {}, 0, [[4, 4]], [])
    with pytest.raises(ValueError, match="JSON"):
        EpisodeRecord("DUS-v0", {"dataset": tiny_dataset}, 0, [], [])
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        EpisodeRecord.load(path)
    with pytest.raises(ValueError, match=r"gym\.make"):
        record_episode(dus_gym.DUSEnv(**tiny_env_kwargs), make_policy("uniform", gym.make("DUS-v0")), seed=0)
