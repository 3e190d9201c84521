"""benchmarks/general.py: the general sampler's verdicts on known answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import general
from benchmarks.compare import RESULTS_FILE, append_record

pytest.importorskip("scipy")


def _record(family: str, policy: str, seed: int, accuracy: float) -> dict[str, Any]:
    return {
        "dataset": f"family:{family}", "policy": policy, "seed": seed, "method": "joint",
        "test": {"accuracy": accuracy}, "quantities": [[40, 88], [64, 64]], "modalities": ["a", "b"],
        # Validation ranks the other way round: --metric val must read it, not the test accuracy.
        "val_accuracy": [0.1, 1.0 - accuracy],
    }


def _records(agent_gain: dict[str, float]) -> list[dict[str, Any]]:
    out = []
    for family, gain in agent_gain.items():
        for seed in range(6):
            base = 0.5 + 0.01 * seed
            out += [
                _record(family, "uniform", seed, base),
                _record(family, "dus_h", seed, base + 0.02),
                _record(family, "fixed:1,2", seed, base + 0.05),
                _record(family, "pretrained:general_ppo", seed, base + 0.02 + gain),
            ]
    return out


def test_judge_computes_hindsight_differences_and_verdicts() -> None:
    result = general.judge(_records({"shortcut_a": 0.03, "complementary": 0.01}), "general_ppo")
    short = result["families"]["shortcut_a"]
    assert short["n"] == 6
    assert short["iqm"][general.HINDSIGHT]["estimate"] == pytest.approx(0.525 + 0.05)  # the best fixed per seed
    assert short["agent_minus_reference"]["estimate"] == pytest.approx(0.03)
    assert short["agent_minus_best_rule"]["estimate"] == pytest.approx(0.03)
    assert result["families"]["complementary"]["target_uniform_minus_1pt"]
    assert result["overall_agent_minus_reference"]["estimate"] == pytest.approx(0.02)
    assert result["target_overall_positive"] and result["targets_met"]


def test_a_family_lost_by_more_than_a_point_misses_the_target() -> None:
    result = general.judge(_records({"shortcut_a": 0.05, "redundant": -0.03}), "general_ppo")
    assert not result["families"]["redundant"]["target_best_rule_minus_1pt"]
    assert not result["targets_met"]
    assert "missed" in general.markdown(result)


def test_main_writes_the_summary_and_refuses_what_it_cannot_judge(tmp_path: Path) -> None:
    for r in _records({"shortcut_a": 0.02}):
        append_record(tmp_path / RESULTS_FILE, r)
    general.main(["--output", str(tmp_path), "--no-plots", "--no-save"])
    assert not (tmp_path / "general.md").exists()
    result = general.main(["--output", str(tmp_path), "--no-plots"])
    assert (tmp_path / "general.md").read_text().startswith("| family |")
    assert result["families"]["shortcut_a"]["n"] == 6
    with pytest.raises(ValueError, match=r"no records of \['nope'\]"):
        general.judge(_records({"shortcut_a": 0.0}), "nope")


def test_validation_metric_reads_the_final_validation_accuracy(tmp_path: Path) -> None:
    # Test: agent 3 points above DUS-H; validation (1 - accuracy): 3 points below.
    result = general.judge(_records({"shortcut_a": 0.03}), "general_ppo", metric="val")
    assert result["families"]["shortcut_a"]["agent_minus_reference"]["estimate"] == pytest.approx(-0.03)
    assert not result["targets_met"]
    assert general.markdown(result).startswith("Final fused **validation** accuracy")
    with pytest.raises(ValueError, match="--metric 'train'"):
        general.judge(_records({"shortcut_a": 0.0}), "general_ppo", metric="train")


def test_equivalence_runs_both_ways_on_the_same_instances(tmp_path: Path) -> None:
    from benchmarks import equivalence

    rows = equivalence.main([
        "--datasets", "synthetic:tiny", "--policies", "uniform", "--num-seeds", "2", "--n-steps", "2",
        "--iterations-per-step", "2", "--base-batch", "8", "--output", str(tmp_path),
    ])
    (row,) = rows
    assert row["n"] == 2 and abs(row["batched"] - row["single"]) <= 0.05
    assert (tmp_path / "single" / RESULTS_FILE).is_file() and (tmp_path / "batched" / RESULTS_FILE).is_file()
