"""Throughput of the environment: what the env and the run cost over plain training.

(a) **Overhead.** Four variants do the same work (the same data, the same
    model sizes, the same B, the same iterations per step, one validation
    pass per step, uniform counts), stepped in lockstep, with one torch thread:

    1. ``plain``: the leanest honest training loop, written here and
       independent of dus_gym's model, method and run code (two MLPs ending in
       linear heads, sum-of-logits fusion, one ``F.cross_entropy``, SGD with
       the run's momentum and weight decay, batches drawn with replacement by
       index from device tensors, no DataLoader, one validation pass under
       ``torch.inference_mode``);
    2. ``plain_scores``: the same loop plus what DUS computes every
       iteration, written plainly: each modality's cross-entropy and score
       ``s_t`` (mean true-class probability) and the running mean ``S_t``;
    3. ``run``: :meth:`TrainingRun.step <dus_gym.run.TrainingRun.step>`;
    4. ``env``: ``DUSEnv.step``.

    ``plain / env`` is the fraction of plain-training speed the env keeps;
    ``plain_scores / env`` the same with the score computation counted as the
    method's cost (target >= 0.95); ``plain / plain_scores`` is that cost.
    The episode's last step also computes the test metrics and the linear
    probes (work no plain loop does): it is timed apart.
(t) **Threads.** A default ``DUS-v0`` episode, and a few steps of the small CNN
    (``views=["pix_image", "zer"]``), with ``run_config={"threads": t}`` for t
    in 1, 2, None (torch's own setting) and with the env's default ``"auto"``,
    called from a process left at torch's default thread count, as a user's
    script is. ``--threads`` runs this part alone.
(b) **Scaling.** Env steps per second with 1, 2 and 4 envs in parallel
    (Stable-Baselines3's ``SubprocVecEnv``, one torch thread per env).
(r) **Batched runs.** Env steps per second (wall time) of N sub-envs of the
    batched vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point")``,
    docs/batched.md) for N in ``--batched-envs``, side by side with one env
    (one thread) and SB3's ``SubprocVecEnv`` with ``--batched-workers``
    processes (one thread each), on the same work; the batched env with one
    thread (its default) and with torch's own count. On a GPU also the
    memory per run. On the CPU a second table gives the CPU time per run
    and iteration of N stacked runs (``BatchedTrainingRun`` itself) against
    a single run, per ``--stacking-datasets`` data set, and what
    ``make_run_batch`` picks there (stacked, or a loop where stacking costs more).
    A third table times whole episodes at ``--autoreset-envs`` sub-envs under
    each autoreset mode: transitions per second, counting only the steps of
    episodes (not the reset step of ``NEXT_STEP``, which trains nothing),
    best of ``--autoreset-repeats`` interleaved repeats.
    ``--batched`` runs this part alone; ``python -m benchmarks.throughput
    --batched --device cuda --batched-envs 1 16 64 256 1024`` is the GPU check.
(c) **Episodes.** Wall and CPU time of one full episode (reset, ``n_steps``
    steps, test and probes) per built-in instance family.

CPU time (of this process, all its threads) is the measure of work on a
machine shared with other jobs; wall time is listed beside it. Runs on the
GPU when there is one (``--device auto``). The default run takes about two
minutes on 2 CPU cores; ``--repeats``, ``--n-steps``, ``--threads-repeats``
and ``--threads-cnn-steps`` lengthen it.

    python -m benchmarks.throughput
    python -m benchmarks.throughput --skip threads scaling episodes --repeats 30
    python -m benchmarks.throughput --threads --threads-steps 30 --threads-cnn-steps 5 --threads-repeats 3
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import dus_gym  # noqa: F401  (registers DUS-v0)

if __package__ in (None, ""):  # run as a file (python benchmarks/throughput.py): its parts from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._throughput_common import (
    CNN_VIEWS,
    PARTS,
    THREAD_SETTINGS,
    TORCH_DEFAULT_THREADS,
    VARIANTS,
    Args,
    _thread_setting,
)
from benchmarks._throughput_overhead import PlainLoop, episode, episode_times, overhead
from benchmarks._throughput_parallel import autoreset, batched, scaling, stacking, threads
from benchmarks._throughput_tables import machine, to_markdown
from dus_gym.cli import parse_args, run, setting_up
from dus_gym.data import load_dataset
from dus_gym.run import resolve_device

# The parts live in benchmarks/_throughput_*.py; every name below stays importable from here.
__all__ = [
    "CNN_VIEWS", "PARTS", "THREAD_SETTINGS", "TORCH_DEFAULT_THREADS",
    "Args", "PROG", "PlainLoop", "VARIANTS", "autoreset", "batched", "episode", "episode_times", "machine", "main",
    "overhead", "scaling", "stacking", "threads", "to_markdown",
]

PROG = "python -m benchmarks.throughput"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the parts asked for, write ``throughput.json`` and ``throughput.md`` to ``--output``, print the tables.

    Bad flags (an unknown part, thread setting or data set, a data set
    with non-vector modalities for (a)) raise :class:`dus_gym.cli.UsageError`
    before anything is measured.
    """
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    parts = ["threads"] if args.threads else ["batched"] if args.batched else [
        p for p in PARTS if p not in args.skip
    ]
    with setting_up():
        unknown = set(args.skip) - set(PARTS)
        if unknown:
            raise ValueError(f"--skip {sorted(unknown)}: expected any of {', '.join(PARTS)}")
        for s in args.thread_settings:
            _thread_setting(s)
        if "overhead" in parts:
            for d in args.datasets:
                shapes = {k: tuple(x.shape[1:]) for k, x in load_dataset(d).modalities.items()}
                if any(len(shape) != 1 for shape in shapes.values()):
                    raise ValueError(f"--datasets {d}: modalities of shapes {shapes}; (a)'s plain loop takes vectors")
    # Seeding: every run takes its split, initialisation and batch-order seeds from --seed.
    device = resolve_device(args.device)
    result: dict[str, Any] = {
        "args": asdict(args), "machine": machine(), "device": str(device), "parts": parts,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    before = torch.get_num_threads()
    torch.set_num_threads(args.torch_threads)
    try:
        if "overhead" in parts:
            result["overhead"] = [overhead(args, d) for d in args.datasets]
        if "threads" in parts:
            result["threads"] = threads(args)
        if "scaling" in parts:
            result["scaling_dataset"] = args.datasets[0]
            result["scaling"] = scaling(args, args.datasets[0])
        if "episodes" in parts:
            result["episodes"] = episode_times(args)
        if "batched" in parts:
            result["batched_dataset"] = args.datasets[0]
            result["batched"] = batched(args, args.datasets[0])
            result["autoreset"] = autoreset(args, args.datasets[0])
            if resolve_device(args.device).type == "cpu":
                result["stacking"] = stacking(args)
    finally:
        torch.set_num_threads(before)
    result["load_average_end"] = os.getloadavg()[0]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = to_markdown(result)
    (output / "throughput.md").write_text(markdown)
    print(markdown)
    return result


if __name__ == "__main__":
    run(main, PROG)
