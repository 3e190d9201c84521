"""Parts (t), (b) and (r) of :mod:`benchmarks.throughput`: thread settings, envs in parallel processes,
and the batched vector env (against one env and SubprocVecEnv; stacked runs; autoreset modes)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from benchmarks._throughput_common import CNN_VIEWS, TORCH_DEFAULT_THREADS, Args, _sync, _thread_setting
from dus_gym.batched import batch_threads
from dus_gym.data import load_dataset
from dus_gym.envs import DUSEnv
from dus_gym.run import RunConfig, TrainingRun, resolve_device, torch_threads


@contextmanager
def _background(n: int) -> Iterator[None]:
    """``n`` busy processes (a Python loop each) for the duration of the block, ended by their handles."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def _thread_episode(setting: str, views: Sequence[str] | None, n_steps: int, args: Args, seed: int) -> dict[str, Any]:
    """Reset and step one ``DUS-v0`` episode to its end (uniform sampling) under one threads setting."""
    value = _thread_setting(setting)
    run_config: dict[str, Any] = {} if value == "auto" else {"threads": value}
    if args.threads_probe_steps is not None:
        run_config["probe_steps"] = args.threads_probe_steps
    kwargs: dict[str, Any] = {"run_config": run_config} if run_config else {}
    if views is not None:
        kwargs["views"] = list(views)
    env = gym.make(
        "DUS-v0", n_steps=n_steps, iterations_per_step=args.threads_iterations, device=args.device, **kwargs
    )
    base = env.unwrapped
    assert isinstance(base, DUSEnv)
    action = base.rule.uniform_action
    device = resolve_device(args.device)
    wall, cpu = time.perf_counter(), time.process_time()
    env.reset(seed=seed)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    _sync(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert base.run is not None
    used = base.run.threads or torch.get_num_threads()
    env.close()
    return {"wall_s": wall, "cpu_s": cpu, "threads_used": used}


def threads(args: Args) -> list[dict[str, Any]]:
    """Part (t): episodes under each threads setting, called with torch's default thread count.

    For each model (the default MLPs, then the small CNN), every repeat runs
    one episode per setting, rotating their order; the table holds the
    medians and says whether the default ``"auto"`` is within 1.2x of the
    best setting, in CPU time and in wall time.
    """
    for s in args.thread_settings:
        _thread_setting(s)
    models = [("mlp", None, args.threads_steps), ("cnn", CNN_VIEWS, args.threads_cnn_steps)]
    before = torch.get_num_threads()
    torch.set_num_threads(TORCH_DEFAULT_THREADS)
    rows = []
    try:
        with _background(args.threads_background):
            for model, views, n_steps in models:
                if n_steps < 1:
                    continue
                _thread_episode("1", views, 1, args, args.seed)  # warm-up: data files, first-call costs
                runs: dict[str, list[dict[str, Any]]] = {s: [] for s in args.thread_settings}
                settings = list(args.thread_settings)
                for r in range(args.threads_repeats):
                    shift = r % len(settings)
                    for s in settings[shift:] + settings[:shift]:
                        runs[s].append(_thread_episode(s, views, n_steps, args, args.seed))
                table = {
                    s: {
                        "cpu_s": statistics.median(x["cpu_s"] for x in v),
                        "wall_s": statistics.median(x["wall_s"] for x in v),
                        "cpu_s_all": [x["cpu_s"] for x in v],
                        "wall_s_all": [x["wall_s"] for x in v],
                        "threads_used": v[0]["threads_used"],
                    }
                    for s, v in runs.items()
                }
                row: dict[str, Any] = {
                    "model": model, "views": list(views) if views else ["pix", "zer"], "steps": n_steps,
                    "caller_threads": TORCH_DEFAULT_THREADS, "settings": table,
                }
                counts = [s for s in table if s != "auto"]  # the explicit thread counts
                if "auto" in table and counts:
                    for measure in ("cpu_s", "wall_s"):
                        best = min(counts, key=lambda s: table[s][measure])
                        factor = table["auto"][measure] / table[best][measure]
                        row[f"auto_vs_best_{measure}"] = {"best": best, "factor": factor, "within_1.2x": factor <= 1.2}
                rows.append(row)
    finally:
        torch.set_num_threads(before)
    return rows


def _make_worker_env(dataset: str, args_dict: dict[str, Any], threads: int) -> DUSEnv:
    torch.set_num_threads(threads)
    return DUSEnv(dataset=dataset, **args_dict)


def scaling(args: Args, dataset: str) -> list[dict[str, Any]]:
    """Part (b): env steps per second with ``n`` envs stepping in parallel processes."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    kwargs = {
        "n_steps": args.scaling_steps + 2, "iterations_per_step": args.iterations_per_step,
        "base_batch": args.base_batch, "device": args.device,
    }
    rows = []
    for n in args.num_envs:
        venv = SubprocVecEnv([partial(_make_worker_env, dataset, kwargs, args.torch_threads) for _ in range(n)])
        try:
            venv.seed(args.seed)
            venv.reset()
            action = np.stack([venv.get_attr("rule", [i])[0].uniform_action for i in range(n)])
            venv.step(action)  # warm-up step, untimed
            start = time.perf_counter()
            for _ in range(args.scaling_steps):  # the episode's last step (test, probes) stays out
                venv.step(action)
            wall = time.perf_counter() - start
        finally:
            venv.close()
        rows.append({"num_envs": n, "env_steps_per_s": n * args.scaling_steps / wall})
    base = rows[0]["env_steps_per_s"] / rows[0]["num_envs"]
    for row in rows:
        row["speedup"] = row["env_steps_per_s"] / base
        row["efficiency"] = row["speedup"] / row["num_envs"]
    return rows


def _env_steps_per_s(step: Callable[[], Any], n: int, steps: int, device: torch.device) -> float:
    """``n`` env steps per call of ``step``: their rate over ``steps`` calls after one untimed warm-up call."""
    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return n * steps / (time.perf_counter() - start)


def batched(args: Args, dataset: str) -> list[dict[str, Any]]:
    """Part (r): env steps per second of the batched vector env against one env and SubprocVecEnv."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    device = resolve_device(args.device)
    kwargs: dict[str, Any] = {
        "n_steps": args.batched_steps + 2, "iterations_per_step": args.iterations_per_step,
        "base_batch": args.base_batch, "device": args.device,
    }
    rows: list[dict[str, Any]] = []
    # On a GPU the reference is also one env on the CPU: the question is what the GPU buys.
    for where in ["cpu"] + ([args.device] if device.type != "cpu" else []):
        one = DUSEnv(dataset=dataset, **{**kwargs, "device": where})
        one.reset(seed=args.seed)
        uniform = one.rule.uniform_action
        with torch_threads(1):
            speed = _env_steps_per_s(partial(one.step, uniform), 1, args.batched_steps, resolve_device(where))
        rows.append({"mode": f"one env ({'1 thread' if where == 'cpu' else where})", "num_envs": 1,
                     "env_steps_per_s": speed})
    workers = args.batched_workers
    if workers > 1 and device.type == "cpu":
        venv = SubprocVecEnv([partial(_make_worker_env, dataset, kwargs, 1) for _ in range(workers)])
        try:
            venv.seed(args.seed)
            venv.reset()
            actions = np.stack([uniform] * workers)
            speed = _env_steps_per_s(lambda: venv.step(actions), workers, args.batched_steps, device)
        finally:
            venv.close()
        mode = f"SubprocVecEnv x{workers} (1 thread each)"
        rows.append({"mode": mode, "num_envs": workers, "env_steps_per_s": speed})
    for n in args.batched_envs:
        # On a GPU the CPU threads only launch kernels: measure the default alone (half the device time).
        for threads in sorted({1, TORCH_DEFAULT_THREADS}) if device.type == "cpu" else [batch_threads("auto", n) or 1]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            vec = gym.make_vec(
                "DUS-v0", num_envs=n, vectorization_mode="vector_entry_point", dataset=dataset,
                **{**kwargs, "run_config": {"threads": threads}},
            )
            vec.reset(seed=args.seed)
            actions = np.stack([uniform] * n)
            speed = _env_steps_per_s(partial(vec.step, actions), n, args.batched_steps, device)
            auto = " = auto" if batch_threads("auto", n) == threads else ""
            row = {"mode": f"batched ({threads} thread{'s' if threads > 1 else ''}{auto})", "num_envs": n,
                   "env_steps_per_s": speed}
            if device.type == "cuda":
                row["memory_per_run_mb"] = torch.cuda.max_memory_allocated(device) / n / 2**20
            vec.close()
            rows.append(row)
    for row in rows:
        row["x_one_env"] = row["env_steps_per_s"] / rows[0]["env_steps_per_s"]
    return rows


def autoreset(args: Args, dataset: str) -> list[dict[str, Any]]:
    """Part (r), third table: transitions per second over whole episodes, SAME_STEP against NEXT_STEP.

    Each measurement times ``episodes`` episodes of ``steps`` steps after one
    untimed episode, with as many resets in the window for both modes (SAME_STEP
    resets within the last step of each; NEXT_STEP in one more call each).
    """
    from gymnasium.vector import AutoresetMode

    device = resolve_device(args.device)
    n, steps, episodes = args.autoreset_envs, 4, 3
    kwargs: dict[str, Any] = {
        "n_steps": steps, "iterations_per_step": args.iterations_per_step, "base_batch": args.base_batch,
        "device": args.device, "dataset": dataset,
    }
    modes = [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP]
    best = dict.fromkeys(modes, float("inf"))
    for _ in range(args.autoreset_repeats):  # interleaved, so that the machine's load weighs on both alike
        for mode in modes:
            vec = gym.make_vec("DUS-v0", num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode,
                               **kwargs)
            vec.reset(seed=args.seed)
            actions = np.stack([vec.unwrapped.envs[0].rule.uniform_action] * n)  # type: ignore[attr-defined]
            calls = steps if mode == AutoresetMode.SAME_STEP else steps + 1  # per episode, its reset included
            for _ in range(calls):
                vec.step(actions)
            _sync(device)
            start = time.perf_counter()
            for _ in range(calls * episodes):
                vec.step(actions)
            _sync(device)
            best[mode] = min(best[mode], time.perf_counter() - start)
            vec.close()
    rate = {m: n * steps * episodes / t for m, t in best.items()}
    return [
        {"mode": m.value, "num_envs": n, "episode_steps": steps, "transitions_per_s": r,
         "x_same_step": r / rate[AutoresetMode.SAME_STEP]}
        for m, r in rate.items()
    ]


def stacking(args: Args) -> list[dict[str, Any]]:
    """Part (r), second table: CPU time per run-iteration of N stacked runs
    (:class:`~dus_gym.batched.BatchedTrainingRun` itself, whatever
    :func:`~dus_gym.batched.make_run_batch` would pick) against one single run, one thread."""
    from dus_gym.batched import BatchedTrainingRun, loop_reason

    config = RunConfig(base_batch=args.base_batch, device=args.device, threads=1)
    iterations = args.iterations_per_step or 10
    rows = []
    for name in args.stacking_datasets:
        data = load_dataset(name)
        m = data.num_modalities
        run = TrainingRun(data, config, args.seed, args.seed, args.seed)
        run.step(np.full(m, args.base_batch), 2)
        cpu = time.process_time()
        run.step(np.full(m, args.base_batch), iterations)
        single = (time.process_time() - cpu) / iterations
        for n in args.batched_envs:
            if n < 2:
                continue
            seeds = [dict.fromkeys(("split_seed", "init_seed", "sample_seed"), args.seed + i) for i in range(n)]
            batch = BatchedTrainingRun([data] * n, config, seeds)
            counts = np.full((n, m), args.base_batch)
            batch.step(counts, 2)
            cpu = time.process_time()
            batch.step(counts, iterations)
            stacked = (time.process_time() - cpu) / iterations / n
            rows.append({
                "dataset": name, "encoders": [type(e).__name__ for e in run.model.encoders], "num_runs": n,
                "single_ms": 1e3 * single, "stacked_ms": 1e3 * stacked, "ratio": stacked / single,
                "make_run_batch": "loop" if loop_reason(config, data, n) else "stacked",
            })
    return rows

