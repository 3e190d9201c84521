"""benchmarks/compare.py and throughput.py end to end on a tiny synthetic grid."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import compare
from dus_gym.cli import field_docs, parse_args

REPO = Path(__file__).resolve().parents[1]
# Few linear-probe iterations: the final test metrics are only compared, not judged, here.
TINY = ["--datasets", "synthetic:tiny", "--n-steps", "2", "--iterations-per-step", "2", "--base-batch", "8",
        "--no-progress", "--n-resamples", "200", "--env-kwargs", '{"run_config": {"probe_steps": 5}}']


def tiny_argv(
    output: Path, *extra: str, policies: tuple[str, ...] = ("uniform", "fixed:1,2"), seeds: int = 2
) -> list[str]:
    return [*TINY, "--output", str(output), "--policies", *policies, "--methods", "joint",
            "--num-seeds", str(seeds), *extra]


def read_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.endswith("\n"), "every result line ends with a newline"
    return [json.loads(line) for line in text.splitlines()]


def test_tiny_grid_writes_results_summary_and_plots(tmp_path: Path) -> None:
    serial = tmp_path / "serial"
    rows = compare.main(tiny_argv(serial))
    records = read_lines(serial / "results.jsonl")
    assert sorted((r["policy"], r["seed"]) for r in records) == [
        ("fixed:1,2", 0), ("fixed:1,2", 1), ("uniform", 0), ("uniform", 1)
    ]
    for r in records:
        assert r["steps"] == 2 and len(r["val_accuracy"]) == 3 and len(r["quantities"]) == 2
        assert set(r["test"]) >= {"accuracy", "macro_f1", "branch_accuracy", "probe_accuracy"}
        assert sum(r["quantities"][0]) == 2 * 8  # fixed budget M * B
    fixed = [r for r in records if r["policy"] == "fixed:1,2"]
    assert all(q[0] < q[1] for r in fixed for q in r["quantities"])  # modality a gets fewer examples

    # The summary agrees with the records it summarises.
    by_policy = {row.policy: row for row in rows}
    for policy, row in by_policy.items():
        acc = [r["test"]["accuracy"] for r in records if r["policy"] == policy]
        assert row.n == 2 and row.accuracy_mean == pytest.approx(np.mean(acc))
    assert by_policy["uniform"].improvement.estimate == pytest.approx(0.5)
    assert by_policy["uniform"].gain_mean == 0.0
    with (serial / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["policy"] for t in table] == ["uniform", "fixed:1,2"]
    assert float(table[1]["accuracy_mean"]) == pytest.approx(by_policy["fixed:1,2"].accuracy_mean, rel=1e-5)
    assert "| synthetic:tiny | joint | fixed:1,2 | 2 |" in (serial / "summary.md").read_text()
    for name in ("final_metrics.png", "val_curves.png", "quantities.png"):
        assert (serial / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_process_pool_gives_the_serial_results(tmp_path: Path) -> None:
    # Each cell is seeded on its own, so where it runs does not change it.
    compare.main(tiny_argv(tmp_path / "serial", "--no-plots", seeds=1))
    compare.main(tiny_argv(tmp_path / "pool", "--workers", "2", "--no-plots", seeds=1))
    serial, pool = (
        {compare._record_key(r): r["test"] for r in read_lines(tmp_path / d / "results.jsonl")}
        for d in ("serial", "pool")
    )
    assert len(pool) == 2 and pool == serial


def test_batched_groups_give_the_episodes_one_by_one(tmp_path: Path) -> None:
    """--batched: a grid point's seeds as one vector env; same instances and counts, results to float rounding."""
    policies = ("uniform", "random", "dus_h")
    compare.main(tiny_argv(tmp_path / "single", "--no-plots", policies=policies, seeds=3))
    compare.main(tiny_argv(tmp_path / "batched", "--no-plots", "--batched", policies=policies, seeds=3))
    single, batched = (
        {compare._record_key(r): r for r in read_lines(tmp_path / d / "results.jsonl")} for d in ("single", "batched")
    )
    assert single.keys() == batched.keys() and len(single) == 9
    for key, r in single.items():
        b = batched[key]
        assert b["batched"] == 3 and b["instance"] == r["instance"] and b["quantities"] == r["quantities"]
        assert b["test"]["accuracy"] == pytest.approx(r["test"]["accuracy"], abs=0.05)
    cells = compare.make_cells(parse_args(compare.Args, tiny_argv(tmp_path, seeds=3)))
    assert [len(unit) for unit in compare.make_units(cells, batched=True)] == [3, 3]


def test_rerun_skips_finished_cells_and_runs_only_new_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compare.main(tiny_argv(tmp_path, "--no-plots", seeds=1))
    calls: list[tuple[str, str, str, int]] = []
    real = compare.run_cell

    def counting(cell: compare.Cell, threads: int | None = None) -> dict[str, Any]:
        calls.append(cell.key)
        return real(cell, threads)

    monkeypatch.setattr(compare, "run_cell", counting)
    compare.main(tiny_argv(tmp_path, "--no-plots", seeds=1))
    assert calls == []
    compare.main(tiny_argv(tmp_path, "--no-plots", seeds=2))
    assert sorted(calls) == [("fixed:1,2", "synthetic:tiny", "joint", 1), ("uniform", "synthetic:tiny", "joint", 1)]
    assert len(read_lines(tmp_path / "results.jsonl")) == 4
    # Other settings on the same output are refused, not mixed in.
    with pytest.raises(ValueError, match=r"was run with settings .*'n_steps': 2.*'n_steps': 3"):
        compare.main([*tiny_argv(tmp_path, "--no-plots", seeds=1), "--n-steps", "3"])


def test_killed_sweep_leaves_only_whole_lines_and_resumes(tmp_path: Path) -> None:
    argv = tiny_argv(tmp_path, "--no-plots", policies=("uniform", "fixed:1,2", "fixed:2,1"), seeds=3)
    script = [sys.executable, "-m", "benchmarks.compare", *argv]
    results = tmp_path / "results.jsonl"
    proc = subprocess.Popen(script, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (results.exists() and results.stat().st_size > 0):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-sweep: the next cell is running
    finally:
        proc.wait()
    first = read_lines(results)
    assert 1 <= len(first) < 9
    rows = compare.main(argv)
    final = read_lines(results)
    assert len(final) == 9 and len({compare._record_key(r) for r in final}) == 9
    assert final[: len(first)] == first  # finished episodes kept as they were
    assert sum(row.n for row in rows) == 9


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid``, read from /proc (no psutil)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "pid (comm)": state, ppid, ...
        except OSError:  # the process ended meanwhile
            continue
        if fields[1] == str(pid) and fields[0] not in "ZX":
            kids.add(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    """Running, not a zombie: an orphan's zombie waits for a reaper that a container may not have."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in "ZX"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_pool_workers_end_when_the_sweep_is_killed(tmp_path: Path) -> None:
    # Enough cells that the pool is still busy when it is killed.
    argv = tiny_argv(tmp_path, "--no-plots", "--workers", "2", "--n-steps", "50", seeds=20)
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.compare", *argv], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2:
            assert proc.poll() is None, "the sweep ended before its workers started"
            assert time.monotonic() < deadline, "no pool workers after 120 s"
            time.sleep(0.05)
            workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)], "pool workers outlived their killed parent"
    finally:
        proc.kill()
        proc.wait()
        for w in workers:  # never leave orphans behind, even when the test fails
            if _alive(w):
                os.kill(w, signal.SIGKILL)


WATCHED_CHILD = """
import os, sys, time
from dus_gym import evaluation
sys.platform = "other"  # no prctl: the portable parent watcher
child = os.fork()
if child == 0:
    evaluation._end_with_parent(os.getppid(), interval=0.05)
    time.sleep(120)
    os._exit(0)
print(child, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/stat").exists(), reason="fork and /proc")
def test_portable_parent_watcher_ends_an_orphaned_worker() -> None:
    proc = subprocess.Popen([sys.executable, "-c", WATCHED_CHILD], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the worker outlived its killed parent"
    finally:
        proc.kill()
        proc.wait()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_unfinished_last_line_is_dropped_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    compare.append_record(path, {"a": 1})
    with path.open("ab") as f:
        f.write(b'{"a": 2, "trunc')  # a writer that died mid-line (not append_record)
    with pytest.warns(UserWarning, match="dropping an unfinished last line"):
        assert compare.read_records(path) == [{"a": 1}]
    compare.append_record(path, {"a": 3})
    assert compare.read_records(path) == [{"a": 1}, {"a": 3}]
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"results.jsonl:2: not a JSON result line"):
        compare.read_records(path)


def test_trained_agent_run_folder_is_a_policy(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    from dus_gym.envs import DUSEnv

    env_kwargs: dict[str, Any] = {"dataset": "synthetic:tiny", "n_steps": 2, "iterations_per_step": 2, "base_batch": 8}
    model = PPO("MlpPolicy", DUSEnv(**env_kwargs), n_steps=8, batch_size=8, seed=0, device="cpu")
    model.learn(8)
    run_dir = tmp_path / "ppo_tiny"
    run_dir.mkdir()
    model.save(run_dir / "model.zip")
    (run_dir / "config.json").write_text(json.dumps({"algo": "ppo", "env_id": "DUS-v0", "env_kwargs": env_kwargs}))
    out = tmp_path / "out"
    rows = compare.main(tiny_argv(out, "--no-plots", policies=("uniform", str(run_dir)), seeds=1))
    assert {r["policy"] for r in read_lines(out / "results.jsonl")} == {"uniform", str(run_dir)}
    assert "| ppo_tiny |" in (out / "summary.md").read_text()
    assert len(rows) == 2
    # An agent for other spaces is refused before any episode, with the folder and both spaces named.
    with pytest.raises(ValueError, match=rf"agent in {run_dir} was trained for the action_space MultiDiscrete"):
        compare.main([*tiny_argv(tmp_path / "o2", "--no-plots", policies=(str(run_dir),), seeds=1),
                      "--env-kwargs", '{"levels": 5, "run_config": {"probe_steps": 5}}'])


def fake_record(policy: str, dataset: str, seed: int, accuracy: float) -> dict[str, Any]:
    test = {"accuracy": accuracy, "macro_f1": accuracy, "branch_accuracy": {"a": 0.5, "b": accuracy},
            "probe_accuracy": {"a": 0.6, "b": 0.7}}
    return {"policy": policy, "dataset": dataset, "method": "joint", "seed": seed, "test": test,
            "modalities": ["a", "b"], "diverged": False}


def test_summary_and_aggregate_on_known_answers() -> None:
    records = [fake_record("uniform", d, s, 0.5) for d in ("d1", "d2") for s in range(4)]
    records += [fake_record("x", "d1", s, 0.6) for s in range(4)] + [fake_record("x", "d2", s, 0.4) for s in range(4)]
    rows = {(r.dataset, r.policy): r for r in compare.summarise(records, n_resamples=200)}
    d1 = rows[("d1", "x")]
    assert d1.accuracy_mean == pytest.approx(0.6) and d1.gain_mean == pytest.approx(0.1)
    assert d1.improvement.estimate == 1.0 and rows[("d2", "x")].improvement.estimate == 0.0
    assert (d1.branch["b"].low, d1.branch["b"].high) == pytest.approx((0.6, 0.6))
    assert d1.probe["a"].estimate == pytest.approx(0.6)
    # Over datasets: gains +0.1 (d1) and -0.1 (d2); each stratum keeps its 4 runs, so the IQM stays 0.
    ((method, policy, datasets, gain),) = compare.aggregate_gains(records, n_resamples=200)
    assert (method, policy, datasets) == ("joint", "x", ["d1", "d2"])
    assert (gain.estimate, gain.low, gain.high) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)


def test_cells_are_picklable_and_the_grid_is_complete() -> None:
    args = parse_args(compare.Args, tiny_argv(Path("unused"), seeds=3))
    cells = compare.make_cells(args)
    assert len(cells) == 2 * 3 and len({c.key for c in cells}) == 6
    cell = pickle.loads(pickle.dumps(cells[0]))
    assert cell == cells[0] and pickle.loads(pickle.dumps(compare.run_cell)) is compare.run_cell
    with pytest.raises(ValueError, match=r"--env-kwargs: '\[1\]' is a JSON array; expected an object"):
        compare.make_cells(parse_args(compare.Args, [*tiny_argv(Path("unused")), "--env-kwargs", "[1]"]))
    with pytest.raises(ValueError, match=r"--backend 'dask': expected one of \['local', 'ray'\]"):
        compare.execute(cells, "dask")


@pytest.mark.parametrize("module", ["compare", "throughput"])
def test_help_explains_every_flag(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    args_cls = importlib.import_module(f"benchmarks.{module}").Args
    docs = field_docs(args_cls)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(args_cls, ["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, doc in docs.items():
        assert "--" + name.replace("_", "-") in text
        assert doc[:30] in text


TINY_THROUGHPUT = [
    "--datasets", "synthetic:tiny", "--families", "synthetic:tiny", "--n-steps", "2", "--repeats", "2",
    "--episode-steps", "2", "--iterations-per-step", "2", "--base-batch", "8", "--device", "cpu",
    "--thread-settings", "auto", "1", "none", "--threads-steps", "1", "--threads-cnn-steps", "0",
    "--threads-iterations", "1", "--threads-probe-steps", "2", "--threads-repeats", "1",
]


def test_throughput_runs_and_reports_the_four_variants(tmp_path: Path) -> None:
    import torch

    from benchmarks import throughput

    threads_before = torch.get_num_threads()
    result = throughput.main([*TINY_THROUGHPUT, "--skip", "scaling", "batched", "--output", str(tmp_path)])
    assert torch.get_num_threads() == threads_before, "the caller's torch thread count is restored"
    assert result["parts"] == ["overhead", "threads", "episodes"]
    (row,) = result["overhead"]
    # The same work: iterations, parameters and counts checked equal across the variants.
    assert set(row["iterations_by_variant"].values()) == {2} and row["iterations_per_step"] == 2
    assert len(set(row["parameters"].values())) == 1
    assert row["counts"] == {"env": [8, 8], "run": [8, 8]} and row["examples_per_step"] == 2 * 8 * 2
    assert row["timed_steps_per_variant"] == 2 * 2
    cpu = row["cpu_s_per_step"]
    assert set(cpu) == set(throughput.VARIANTS) and all(v > 0 for v in cpu.values())
    for key, ratio in row["ratios"].items():
        num, den = key.split("/")
        assert ratio["cpu"] == pytest.approx(cpu[num] / cpu[den])
        assert ratio["cpu_by_repeat_min"] <= ratio["cpu_by_repeat_max"]
    (mlp,) = result["threads"]  # --threads-cnn-steps 0: the CNN is skipped
    assert mlp["model"] == "mlp" and mlp["steps"] == 1 and set(mlp["settings"]) == {"auto", "1", "none"}
    assert mlp["settings"]["auto"]["threads_used"] == 1 and mlp["settings"]["1"]["threads_used"] == 1
    assert mlp["settings"]["none"]["threads_used"] == throughput.TORCH_DEFAULT_THREADS
    for measure in ("cpu_s", "wall_s"):
        verdict = mlp[f"auto_vs_best_{measure}"]
        assert verdict["best"] in {"1", "none"} and verdict["within_1.2x"] == (verdict["factor"] <= 1.2)
    assert result["episodes"][0]["family"] == "synthetic:tiny"
    text = (tmp_path / "throughput.md").read_text()
    assert "(a)/(d) plain/env" in text and "(b)/(d) plain_scores/env" in text and "score cost (a)/(b)" in text
    assert "the default 'auto' is" in text
    assert json.loads((tmp_path / "throughput.json").read_text())["overhead"][0]["dataset"] == "synthetic:tiny"


def test_threads_mode_runs_only_the_thread_comparison(tmp_path: Path) -> None:
    from benchmarks import throughput

    result = throughput.main([*TINY_THROUGHPUT, "--threads", "--thread-settings", "auto", "2",
                              "--output", str(tmp_path)])
    assert result["parts"] == ["threads"] and "overhead" not in result
    assert result["threads"][0]["settings"]["2"]["threads_used"] == 2
    with pytest.raises(ValueError, match=r"--thread-settings '0': expected auto, none or an integer >= 1"):
        throughput.main([*TINY_THROUGHPUT, "--threads", "--thread-settings", "0", "--output", str(tmp_path)])


def test_plain_loop_trains_tracks_scores_and_matches_the_run_model() -> None:
    from benchmarks.throughput import PlainLoop
    from dus_gym.data import load_dataset
    from dus_gym.run import RunConfig, TrainingRun

    config = RunConfig(base_batch=8, device="cpu")
    loop = PlainLoop("synthetic:tiny", config, 6, seed=0, with_scores=True)
    first = loop.step()
    for _ in range(5):
        last = loop.step()
    m = len(loop.inputs)
    assert last.shape == (2 + 2 * m,)
    assert last[0] > max(first[0], 0.25 + 0.1)  # fused val accuracy above chance (4 classes) and rising
    assert loop.t == 6 * 6 and ((loop.scores > 0) & (loop.scores < 1)).all()
    assert (last[2 + m:] > 0).all()  # the step's mean per-modality cross-entropy
    run = TrainingRun(load_dataset("synthetic:tiny"), config)
    assert loop.num_parameters == sum(p.numel() for p in run.model.parameters())  # the same model sizes
    assert PlainLoop("synthetic:tiny", config).iterations == run.iterations_per_epoch
    plain = PlainLoop("synthetic:tiny", config, 2, seed=0)
    assert plain.step().shape == (2,) and plain.t == 0
    with pytest.raises(ValueError, match="the plain loop takes vectors"):
        PlainLoop("digits", config, views=["pix_image", "zer"])


@pytest.mark.slow
def test_parallel_env_scaling_measures_each_count(tmp_path: Path) -> None:
    from benchmarks import throughput

    args = parse_args(throughput.Args, ["--scaling-steps", "2", "--iterations-per-step", "2", "--base-batch", "8",
                                        "--num-envs", "1", "2", "--device", "cpu"])
    rows = throughput.scaling(args, "synthetic:tiny")
    assert [r["num_envs"] for r in rows] == [1, 2] and rows[0]["speedup"] == pytest.approx(1.0)


@pytest.mark.slow
def test_ray_backend_runs_a_tiny_grid(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        compare.main(tiny_argv(tmp_path, "--backend", "ray", "--no-plots"))
    finally:
        ray.shutdown()
    assert len(read_lines(tmp_path / "results.jsonl")) == 4
    assert os.path.getsize(tmp_path / "summary.csv") > 0


def test_throughput_batched_part_measures_each_mode(tmp_path: Path) -> None:
    from benchmarks import throughput

    result = throughput.main([
        "--batched", "--datasets", "synthetic:tiny", "--batched-envs", "2", "--batched-steps", "1",
        "--iterations-per-step", "1", "--base-batch", "8", "--batched-workers", "2", "--device", "cpu",
        "--stacking-datasets", "synthetic:tiny", "--autoreset-envs", "2", "--autoreset-repeats", "1",
        "--output", str(tmp_path),
    ])
    assert result["parts"] == ["batched"]
    modes = [(r["mode"], r["num_envs"]) for r in result["batched"]]
    assert modes[:2] == [("one env (1 thread)", 1), ("SubprocVecEnv x2 (1 thread each)", 2)]
    assert ("batched (1 thread = auto)", 2) in modes  # two runs: auto gives one thread
    assert all(r["env_steps_per_s"] > 0 for r in result["batched"]) and result["batched"][0]["x_one_env"] == 1.0
    assert "(r) Batched runs" in (tmp_path / "throughput.md").read_text()
    same, nxt = result["autoreset"]  # whole episodes under each autoreset mode, at the same work
    assert (same["mode"], nxt["mode"]) == ("SameStep", "NextStep") and same["x_same_step"] == 1.0
    assert nxt["transitions_per_s"] > 0 and "| NextStep |" in (tmp_path / "throughput.md").read_text()
    (row,) = result["stacking"]  # N = 2 stacked MLP runs against one single run
    assert row["num_runs"] == 2 and row["single_ms"] > 0 and row["stacked_ms"] > 0
    assert row["make_run_batch"] == "stacked" and "Stacked against single" in (tmp_path / "throughput.md").read_text()


def test_batched_runs_the_oracle_cell_by_cell(tmp_path: Path) -> None:
    """The oracle restores snapshots of its own env, which a batched sub-env cannot: its cells stay single."""
    cells = compare.make_cells(parse_args(compare.Args, tiny_argv(tmp_path, policies=("uniform", "oracle:2"), seeds=2)))
    units = compare.make_units(cells, batched=True)
    assert sorted((len(u), u[0].policy) for u in units) == [(1, "oracle:2"), (1, "oracle:2"), (2, "uniform")]
    records = list(compare.execute([c for c in cells if c.policy == "oracle:2"][:1], batched=True))
    assert len(records) == 1 and records[0]["test"]["accuracy"] > 0
