"""What the parts of :mod:`benchmarks.throughput` share: their flags (:class:`Args`), constants and
timing helpers."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dus_gym.run import EPISODE_STEPS, RunConfig

TORCH_DEFAULT_THREADS = torch.get_num_threads()
"""torch's own intra-op thread count in this process, read before the benchmark sets any."""
VARIANTS = ("plain", "plain_scores", "run", "env")
"""(a)'s variants, in the order of the report."""
THREAD_SETTINGS = ("auto", "1", "2", "none")
CNN_VIEWS = ("pix_image", "zer")


@dataclass
class Args:
    """Measure env throughput against a plain training loop, thread counts, parallel scaling and episode times."""

    datasets: list[str] = field(default_factory=lambda: ["digits"])
    """datasets of the overhead measurement (a), vector modalities only (the plain loop's encoders are MLPs);
    the first one is also the scaling measurement's (b)"""
    families: list[str] = field(
        default_factory=lambda: ["digits", "synthetic:shortcut", "synthetic:memorization", "synthetic:complementary"]
    )
    """instance families whose full-episode time (c) is measured"""
    n_steps: int = 10
    """timed steps of each variant per repeat in (a), after one warm-up step"""
    repeats: int = 10
    """repeats of (a), each with fresh objects and seed --seed + repeat; every step of a repeat runs the four
    variants one after the other, rotating which goes first"""
    episode_steps: int = EPISODE_STEPS
    """steps of the full episodes timed in (c)"""
    iterations_per_step: int | None = None
    """training iterations per step in (a), (b) and (c); none: one epoch"""
    base_batch: int = RunConfig.base_batch
    """B, examples per modality per iteration"""
    threads: bool = False
    """run only the thread-count comparison (t)"""
    thread_settings: list[str] = field(default_factory=lambda: list(THREAD_SETTINGS))
    """run_config threads values compared in (t): auto (the env default), an integer, none (torch's own setting)"""
    threads_steps: int = 10
    """steps of the DUS-v0 episode timed per thread setting in (t) (dus_gym.EPISODE_STEPS: a whole default
    episode); 0 skips it"""
    threads_cnn_steps: int = 2
    """steps of the small-CNN episode (views pix_image zer) timed per thread setting in (t); 0 skips it"""
    threads_iterations: int | None = None
    """training iterations per step in (t); none: one epoch, as the default env"""
    threads_probe_steps: int | None = None
    """L-BFGS iterations of the linear probes of the episode's last step in (t); none: the default"""
    threads_repeats: int = 2
    """repeats of (t), rotating the order of the settings; the median counts"""
    threads_background: int = 0
    """busy processes (one Python loop each) kept running during (t), to measure under other work"""
    num_envs: list[int] = field(default_factory=lambda: [1, 2, 4])
    """numbers of parallel envs in (b)"""
    scaling_steps: int = 20
    """steps per env timed in (b), after one warm-up step"""
    device: str = "auto"
    """torch device: auto (CUDA when available), cpu, cuda"""
    torch_threads: int = 1
    """torch intra-op threads of this process in (a), (b) and (c), and of each parallel env"""
    seed: int = 0
    """seed of the instances (split, initialisation, batch order)"""
    output: str = "benchmarks/results/throughput"
    """folder of throughput.json and throughput.md"""
    skip: list[str] = field(default_factory=list)
    """parts to skip: overhead, threads, scaling, episodes, batched"""
    batched: bool = False
    """run only the batched-runs comparison (r)"""
    batched_envs: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    """numbers of sub-envs of the batched vector env in (r) (on a GPU: up to 1024)"""
    batched_steps: int = 6
    """steps (epochs) timed per measurement in (r), after one warm-up step"""
    batched_workers: int = 2
    """SB3 SubprocVecEnv workers measured beside the batched env in (r)"""
    stacking_datasets: list[str] = field(default_factory=lambda: ["digits", "avdigits"])
    """datasets of (r)'s second table: CPU time per run-iteration of N stacked runs against single runs"""
    autoreset_envs: int = 16
    """sub-envs of (r)'s third table: whole episodes under each autoreset mode"""
    autoreset_repeats: int = 3
    """interleaved repeats of each mode in (r)'s third table (the best counts)"""


PARTS = ("overhead", "threads", "scaling", "episodes", "batched")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)



def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu



def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return (values[0],) * 3
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3



def _thread_setting(text: str) -> int | str | None:
    if text == "auto":
        return "auto"
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--thread-settings {text!r}: expected auto, none or an integer >= 1")
    return value

