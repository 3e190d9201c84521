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

__all__ = ["Predictor", "episode_pool", "mean_std", "run_episode", "run_episodes_batched"]


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
    record = _start_record(info, getattr(env.unwrapped, "instance", {}))
    state = None
    episode_start = np.ones(1, dtype=bool)
    while True:
        action, state = policy.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        episode_start = np.zeros(1, dtype=bool)
        obs, reward, terminated, truncated, info = env.step(action)
        _add_step(record, float(reward), info)
        if terminated or truncated:
            return _finish_record(record, info, info.get("test"))


def run_episodes_batched(
    venv: Any,
    policies: Sequence[Predictor],
    seeds: Sequence[int | None],
    options: dict[str, Any] | None = None,
    deterministic: bool = True,
) -> list[dict[str, Any]]:
    """One episode on each sub-env of a batched vector env (:class:`~dus_gym.envs.DUSVectorEnv`),
    sub-env i played by ``policies[i]`` from ``seeds[i]``: the records :func:`run_episode`
    gives for the same seeds, except that a diverged run's record keeps its test metrics.

    The runs train in lock-step; a sub-env whose episode ends before the
    others (a diverged run) goes on training uniformly, its steps unrecorded.
    """
    if len(policies) != venv.num_envs or len(seeds) != venv.num_envs:
        raise ValueError(
            f"run_episodes_batched: {len(policies)} policies and {len(seeds)} seeds for {venv.num_envs} sub-envs"
        )
    obs, _ = venv.reset(seed=list(seeds), options=options)
    records = [_start_record(info, env.instance) for info, env in zip(venv.reset_infos, venv.envs)]
    states: list[Any] = [None] * venv.num_envs
    done = [False] * venv.num_envs
    while not all(done):
        actions = []
        for i, policy in enumerate(policies):
            if done[i]:
                actions.append(venv.envs[i].rule.uniform_action)
                continue
            start = np.array([not records[i]["rewards"]])
            action, states[i] = policy.predict(
                obs[i], state=states[i], episode_start=start, deterministic=deterministic
            )
            actions.append(action)
        obs, rewards, terminated, truncated, _ = venv.step(np.stack(actions))
        for i, record in enumerate(records):
            if done[i]:
                continue
            info = venv.sub_infos[i]
            _add_step(record, float(rewards[i]), info)
            if terminated[i] or truncated[i]:
                done[i] = True
                _finish_record(record, info, venv.final_tests[i])
    return records


def _start_record(info: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
    return {
        "instance": dict(instance),
        "quantities": [],
        "val_accuracy": [float(info["val_accuracy"])],
        "rewards": [],
        "test": None,
        "diverged": False,
    }


def _add_step(record: dict[str, Any], reward: float, info: dict[str, Any]) -> None:
    record["rewards"].append(reward)
    record["quantities"].append(np.asarray(info["quantities"]).tolist())
    record["val_accuracy"].append(float(info["val_accuracy"]))


def _finish_record(record: dict[str, Any], info: dict[str, Any], test: dict[str, Any] | None) -> dict[str, Any]:
    record["diverged"] = bool(info.get("diverged", False))
    record["test"] = test
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
