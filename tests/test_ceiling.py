"""The schedule search of benchmarks.ceiling: schedules, pairing with the rules, resume, summary."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

from benchmarks import ceiling
from benchmarks.ceiling import SchedulePolicy, constant_label, pick, search_instance, summarise
from dus_gym.agent_io import load_policy

SMALL = {
    "segments": 2, "population": 8, "generations": 2, "elite": 0.25, "method": "joint", "n_steps": 2,
    "search_seed": 0, "rules": ["uniform", "fixed:2,1"],
}


def test_schedule_policy_plays_its_segments_and_restarts_with_the_episode() -> None:
    policy = SchedulePolicy(np.array([[1, 7], [4, 4], [8, 0]]), n_steps=7)
    state, played = None, []
    for t in range(7):
        action, state = policy.predict(np.zeros(3), state, episode_start=np.array([t == 0]))
        played.append(action.tolist())
    # segments of 7 steps in 3: [0, 3), [3, 5), [5, 7)
    assert played == [[1, 7]] * 3 + [[4, 4]] * 2 + [[8, 0]] * 2
    action, _ = policy.predict(np.zeros(3), state, episode_start=np.array([True]))
    assert action.tolist() == [1, 7]
    with pytest.raises(ValueError, match="expected \\(K, M\\)"):
        SchedulePolicy(np.zeros((8, 2)), n_steps=7)


@pytest.mark.parametrize(("diff", "label"), [(2, "fixed:2,1"), (-2, "fixed:1,2"), (4, "fixed:4,1"), (-4, "fixed:1,4")])
def test_constant_labels_name_the_ratio(diff: int, label: str) -> None:
    assert constant_label(diff) == label


@pytest.fixture(scope="module")
def searched() -> dict:
    return search_instance("shortcut_switch", 0, SMALL)


def test_every_schedule_trains_the_same_run(searched: dict) -> None:
    """The constant schedule of ratio 2 is the rule fixed:2,1 played in another sub-env of the same
    batch: same instance, seed and batch order give the same run, so their results agree."""
    constant = [p for p in searched["played"] if p["generation"] == 0][2]  # CONSTANT_RATIOS[2] == 2
    assert constant["actions"][0][0] - constant["actions"][0][1] == 2
    rule = searched["rules"]["fixed:2,1"]
    assert (constant["val"], constant["test"]) == pytest.approx((rule["val"], rule["test"]), abs=1e-6)


def test_the_ceiling_is_the_best_on_validation_and_the_bound_the_best_on_test(searched: dict) -> None:
    played = searched["played"]
    assert len(played) == 2 * int(SMALL["population"]) - len(SMALL["rules"])  # type: ignore[call-overload, arg-type]
    assert searched["ceiling"]["val"] == max(p["val"] for p in played)
    assert searched["best_on_test"]["test"] == max(p["test"] for p in played)
    assert searched["best_on_test"]["test"] >= searched["ceiling"]["test"]
    assert searched["instance"]["dataset_kwargs"]["shortcut_rho"] in (0.775, 0.825)


def _record(family: str, index: int, uniform: float, gap: float, ceil: float, bound: float) -> dict:
    return {
        "family": family, "index": index, "settings": {}, "wall_s": 1.0,
        # the agent is best on validation but is never the ceiling; a diverged run never counts
        "rules": {"uniform": {"val": 0.1, "test": uniform}, "gap": {"val": 0.2, "test": gap},
                  "pretrained:x": {"val": 0.99, "test": gap + 0.01}},
        "played": [{"val": 0.9, "test": ceil, "diverged": False}, {"val": 0.5, "test": bound, "diverged": False},
                   {"val": 0.95, "test": 1.0, "diverged": True}],
    }


def test_summary_pairs_the_ceiling_with_the_best_rule_and_normalises() -> None:
    records = [_record("f", i, 0.60, 0.70 + 0.01 * i, 0.80, 0.85) for i in range(4)]
    (row,) = summarise(records, n_resamples=200)
    assert row["best_rule"] == "gap"  # the agent is not a rule
    assert row["ceiling_minus_best_rule"]["mean"] == pytest.approx(100 * (0.80 - 0.715))
    assert row["bound_minus_best_rule"]["mean"] == pytest.approx(100 * (0.85 - 0.715))
    assert row["normalised"]["uniform"] == pytest.approx(0.0)
    assert row["normalised"]["gap"] == pytest.approx((0.715 - 0.60) / (0.80 - 0.60))
    assert row["normalised"]["pretrained:x"] == pytest.approx((0.725 - 0.60) / (0.80 - 0.60))
    assert list(row["agents"]) == ["pretrained:x"]
    assert row["agents"]["pretrained:x"]["minus_gap"]["mean"] == pytest.approx(1.0)
    assert row["agents"]["pretrained:x"]["share_of_room"] == pytest.approx((0.725 - 0.715) / (0.80 - 0.715))


def test_overall_pools_the_families_each_against_its_own_best_rule() -> None:
    from benchmarks.ceiling import markdown, overall

    # f: room above gap (its best rule), the agent 1 point above gap; g: no room, uniform best, gap far below
    records = [_record("f", i, 0.60, 0.70, 0.80, 0.85) for i in range(4)]
    records += [_record("g", i, 0.90, 0.60, 0.90, 0.90) for i in range(4)]
    rows = summarise(records, n_resamples=200)
    assert [r["best_rule"] for r in rows] == ["gap", "uniform"]
    pooled = overall(records, rows, n_resamples=200)["pretrained:x"]
    assert pooled["minus_gap"] == pytest.approx({"mean": 1.0, "low": 1.0, "high": 1.0})
    assert pooled["minus_best_rule"]["mean"] == pytest.approx((4 * 1.0 + 4 * (61 - 90)) / 8)
    assert pooled["worst_minus_best_rule"] == pytest.approx(61 - 90)
    # only f has >= 1 point of room (10 points), and the agent takes a tenth of it
    assert (pooled["families_with_room"], pooled["half_the_room_taken"]) == (1, 0)
    assert "| x | 2 | +1.0 [+1.0, +1.0] | -14.0" in markdown(rows, {"pretrained:x": pooled})


def test_a_rule_best_on_validation_is_the_ceiling() -> None:
    record = _record("f", 0, 0.60, 0.70, 0.80, 0.85)
    record["rules"]["gap"]["val"] = 0.93
    assert pick(record, "val") == {"val": 0.93, "test": 0.70, "policy": "gap"}
    assert pick(record, "test")["test"] == 0.85


def test_main_resumes_and_refuses_other_settings(tmp_path, monkeypatch, capsys) -> None:
    calls: list[tuple[str, int]] = []

    def fake(family: str, index: int, settings: dict) -> dict:
        calls.append((family, index))
        return {**_record(family, index, 0.5, 0.6, 0.7, 0.75), "settings": settings, "instance": {}}

    monkeypatch.setattr(ceiling, "search_instance", fake)
    argv = ["--families", "shortcut_switch", "--instances", "3", "--output", str(tmp_path), "--no-progress",
            "--n-resamples", "100"]
    ceiling.main(argv)
    assert calls == [("shortcut_switch", i) for i in range(3)]
    lines = (tmp_path / "ceiling.jsonl").read_text().splitlines()
    (tmp_path / "ceiling.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if killed after two
    ceiling.main(argv)
    assert calls[3:] == [("shortcut_switch", 2)]
    assert json.loads((tmp_path / "ceiling.json").read_text())["rows"][0]["instances"] == 3
    with pytest.raises(ValueError, match="searched with settings"):
        ceiling.main([*argv, "--segments", "4"])
    with pytest.raises(ValueError, match="unknown"):
        ceiling.main([*argv, "--families", "nope"])


def test_without_probes_the_test_metrics_are_the_same_run() -> None:
    import gymnasium as gym

    import dus_gym  # noqa: F401

    results = []
    for probe in (True, False):
        env = gym.make("DUS-v0", dataset="synthetic:tiny", n_steps=2, test_probe=probe)
        env.reset(seed=3)
        for _ in range(2):
            *_, info = env.step(env.action_space.sample() * 0 + 4)
        results.append(info["test"])
    assert "probe_accuracy" in results[0] and "probe_accuracy" not in results[1]
    assert results[1] == {k: v for k, v in results[0].items() if k != "probe_accuracy"}


def test_cem_schedule_learns_on_training_instances_and_judges_on_held_out(tmp_path) -> None:
    from agents import cem_schedule as cem

    out = cem.main(["--family", "shortcut_switch", "--n-steps", "2", "--segments", "2", "--population", "3",
                    "--instances", "2", "--generations", "2", "--eval-instances", "2", "--output", str(tmp_path)])
    assert json.loads((tmp_path / "schedule.json").read_text())["schedule"] == out["schedule"]
    assert np.shape(out["schedule"]) == (2, 2) and len(out["held_out"]) == 2
    assert [len(h["val"]) for h in out["history"]] == [3, 3]
    # generation 0 always tries uniform
    assert out["history"][0]["candidates"][0] == [[4, 4], [4, 4]]
    with pytest.raises(ValueError, match="--family 'nope'"):
        cem.main(["--family", "nope", "--output", str(tmp_path)])

    from benchmarks import cem_curves

    table = cem_curves.main(["--runs", str(tmp_path), "--output", str(tmp_path / "curves.png")])
    rows = table.splitlines()[2:]
    # env steps per generation: 3 candidates x 2 instances x 2 steps
    assert [row.split(" | ")[2] for row in rows] == ["12", "24"]
    assert (tmp_path / "curves.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no run folder"):
        cem_curves.main(["--runs", str(tmp_path / "none"), "--output", str(tmp_path / "x.png")])


def _square(unit: int, threads: int) -> tuple[int, int, int]:
    import os

    return unit, unit * unit, os.getpid()


def test_map_units_runs_every_unit_once_in_this_process_or_on_a_pool() -> None:
    import os

    from benchmarks.backends import map_units

    serial = list(map_units(_square, [3, 1, 2]))
    assert serial == [(3, 9, os.getpid()), (1, 1, os.getpid()), (2, 4, os.getpid())]  # in order, here
    pooled = list(map_units(_square, list(range(6)), workers=2))
    assert sorted(r[:2] for r in pooled) == [(u, u * u) for u in range(6)]
    assert os.getpid() not in {r[2] for r in pooled}
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        map_units(_square, [1], workers=0)
    with pytest.raises(ValueError, match="--backend 'dask'"):
        map_units(_square, [1], backend="dask")


def test_a_learned_schedule_is_paired_with_the_ceiling_on_the_same_instances() -> None:
    from benchmarks.cem_curves import against_ceiling

    records = [_record("shortcut_switch", i, 0.60, 0.70, 0.80, 0.85) for i in range(4)]
    records.append(_record("other", 0, 0.1, 0.1, 0.1, 0.1))
    run = {"args": {"family": "shortcut_switch"}, "held_out": [{"test": 0.76}] * 3}  # instances 0-2
    out = against_ceiling(run, records)
    assert out["instances"] == 3 and out["best_rule"] == "gap"
    assert out["minus_gap"]["mean"] == pytest.approx(6.0)
    assert out["share_of_room"] == pytest.approx(6.0 / 10.0)
    with pytest.raises(ValueError, match="no instance of 'shortcut_switch'"):
        against_ceiling(run, records[4:])


def test_judge_plays_an_agent_on_the_searched_runs_once(tmp_path, monkeypatch) -> None:
    records = [_record("shortcut_switch", i, 0.60, 0.70, 0.80, 0.85) for i in (0, 2)]
    settings = {"method": "joint", "n_steps": 2}
    path = tmp_path / "judged.jsonl"
    judged = ceiling.judge(records, ["pretrained:general_ppo"], path, settings)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(j["index"], j["policy"]) for j in lines] == [(0, "pretrained:general_ppo"), (2, "pretrained:general_ppo")]
    # the same run as a search's generation 0 would play: instance k from seed k
    (direct,) = ceiling.play("shortcut_switch", "eval", [2], [partial(load_policy, "pretrained:general_ppo", seed=2)],
                             n_steps=2)
    assert judged[1]["rules"]["pretrained:general_ppo"]["test"] == direct["test"]
    assert "pretrained:general_ppo" not in records[0]["rules"]  # copies
    (row,) = summarise(judged, n_resamples=100)
    assert "pretrained:general_ppo" in row["agents"]

    def no_play(*args, **kwargs):
        raise AssertionError("judged again")

    monkeypatch.setattr(ceiling, "play", no_play)
    again = ceiling.judge(records, ["pretrained:general_ppo"], path, settings)
    assert again == judged
    with pytest.raises(ValueError, match="--judge \\['gap'\\]"):
        ceiling.main(["--families", "shortcut_switch", "--output", str(tmp_path), "--judge", "gap"])


def test_cem_residual_pairs_every_candidate_with_the_gap_rule_and_writes_a_loadable_policy(tmp_path) -> None:
    import gymnasium as gym

    from agents import cem_residual
    from dus_gym.builtin_policies import ResidualGapPolicy

    argv = ["--families", "shortcut_a", "--n-steps", "2", "--population", "3", "--instances", "2",
            "--generations", "2", "--validation", "2", "--output", str(tmp_path)]
    cem_residual.main(argv)
    history = json.loads((tmp_path / "history.json").read_text())
    first = history[0]
    # generation 0 tries the rule itself (theta = 0): the same runs as the baseline, so no gain at all
    assert first["candidates"][0] == [0.0] * 6 and first["gain_over_gap"][0] == 0.0
    val = np.array(first["families"]["shortcut_a"]["val"])  # (gap + 3 candidates, 2 instances)
    assert val.shape == (4, 2)
    np.testing.assert_allclose(first["gain_over_gap"], (val[1:] - val[0]).mean(axis=1))
    assert [h["env_steps"] for h in history] == [16, 32]  # 4 policies x 2 instances x 2 steps per generation
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["algo"] == "cem_residual" and config["theta"] == history[-1]["mean"]

    env = gym.make("DUS-v0", dataset="synthetic:shortcut", n_steps=1, iterations_per_step=1, device="cpu")
    policy = load_policy(str(tmp_path), env)
    assert isinstance(policy, ResidualGapPolicy) and policy.theta.tolist() == config["theta"]
    assert set(config["validation"]["families"]) == {"shortcut_a"}
    # validated again with theta = 0 (the gap rule on the same runs as the gap rule): exactly no gain
    (tmp_path / "config.json").write_text(json.dumps({**config, "theta": [0.0] * 6}))
    cem_residual.main([*argv, "--only-validate"])
    validation = json.loads((tmp_path / "config.json").read_text())["validation"]
    assert validation["val_gain_over_gap"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert validation["families"]["shortcut_a"]["test_gain_over_gap"]["mean"] == 0.0
    assert json.loads((tmp_path / "history.json").read_text()) == history  # no search this time

    from benchmarks import residual_curves

    rows = residual_curves.main(["--runs", str(tmp_path), "--output", str(tmp_path / "curves.png")]).splitlines()[2:]
    assert [row.split(" | ")[1] for row in rows] == ["16", "32"]
    assert rows[-1].split(" | ")[-1] == "+0.00 [+0.00, +0.00] |"  # the validation of theta = 0
    assert (tmp_path / "curves.png").stat().st_size > 0
    # going on from a run: its theta is the first candidate, its env steps go on; the worst family's loss is charged
    (tmp_path / "config.json").write_text(json.dumps({**config, "theta": [0.5] * 6}))
    cem_residual.main([*argv[:-1], str(tmp_path / "on"), "--start", str(tmp_path), "--generations", "1",
                       "--worst-weight", "2", "--validation", "0"])
    (on,) = json.loads((tmp_path / "on" / "history.json").read_text())
    assert on["candidates"][0] == [0.5] * 6 and on["env_steps"] == 32 + 16
    np.testing.assert_allclose(on["fitness"], np.add(on["gain_over_gap"], 2 * np.minimum(on["worst_family_gain"], 0)))
    (tmp_path / "config.json").write_text(json.dumps({**config, "theta": [1.0]}))
    with pytest.raises(ValueError, match=r"config.json: ResidualGapPolicy: theta=\[1.0\]"):
        load_policy(str(tmp_path), env)
    with pytest.raises(ValueError, match=r"--families \['nope'\]"):
        cem_residual.main(["--families", "nope", "--output", str(tmp_path)])
