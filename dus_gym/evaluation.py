"""Run whole episodes with any policy that has SB3's ``predict``, in parallel too, and summarise them."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

__all__ = ["Predictor", "episode_pool", "mean_std", "run_episode"]


class Predictor(Protocol):
    """Anything with SB3's ``predict``: an SB3 model, a built-in policy, a loaded agent."""

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]: ...


def run_episode(
    env: gym.Env[Any, Any],
    policy: Predictor,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    deterministic: bool = True,
) -> dict[str, Any]:
    """Play one episode and return what a report needs, as JSON-ready values.

    Returns a dict with ``return`` (sum of rewards), ``steps``, ``diverged``,
    ``instance`` (the seeds of the run), per-step lists ``quantities``
    (``steps x M`` counts), ``val_accuracy`` (``steps + 1`` values, from the
    reset on) and ``rewards``, and ``test``: the final test metrics
    (``None`` if the run diverged).
    """
    obs, info = env.reset(seed=seed, options=options)
    record: dict[str, Any] = {
        "instance": info.get("instance"),
        "quantities": [],
        "val_accuracy": [info["val_accuracy"]],
        "rewards": [],
        "test": None,
        "diverged": False,
    }
    state = None
    episode_start = np.ones(1, dtype=bool)
    while True:
        action, state = policy.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        episode_start = np.zeros(1, dtype=bool)
        obs, reward, terminated, truncated, info = env.step(action)
        record["rewards"].append(float(reward))
        record["quantities"].append(list(info["quantities"]))
        record["val_accuracy"].append(info["val_accuracy"])
        if terminated or truncated:
            record["diverged"] = bool(info.get("diverged", False))
            record["test"] = info.get("test")
            break
    record["steps"] = len(record["rewards"])
    record["return"] = float(sum(record["rewards"]))
    return record


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value). Intervals live in ``benchmarks/``."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _watch_parent(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _end_with_parent(parent: int, interval: float = 0.5) -> None:
    """Pool initializer: make this worker end when ``parent`` does, however it ends (SIGKILL included).

    A pool's workers otherwise wait forever for work from a parent that was
    killed (its shutdown code never ran), each holding its memory and any GPU.
    On Linux the kernel sends SIGKILL when the parent goes
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls the parent
    pid. A worker whose parent is already gone ends at once.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
        if armed:
            # The parent may have died between the fork and the prctl: then no signal comes.
            if os.getppid() != parent:
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent, interval), daemon=True, name="end-with-parent").start()


def episode_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool for episodes whose workers end with this process, even when it is SIGKILLed.

    Workers are forked where ``fork`` exists (they start without importing
    torch again; dus_gym gives forked children one torch thread) and spawned
    elsewhere. Submit from the main thread: on Linux the kernel ties a worker
    to the thread that forked it, and the pool forks at the first submit.
    """
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context(method), initializer=_end_with_parent, initargs=(os.getpid(),)
    )
