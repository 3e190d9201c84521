"""Episode records and their replay: a result anyone can rerun and check.

An :class:`EpisodeRecord` holds what it takes to rerun an episode (the env id
and keyword arguments, the reset seed and options, the actions) and what it
gave (the rewards). It is plain JSON, written atomically (a temporary file in
the same folder, then a rename), so a crash never leaves half a record.

:func:`replay` makes the env again, resets it with the recorded seed, takes
the recorded actions and compares every reward:

- on the CPU (recorded and replayed there) rewards must match **exactly**:
  a run is bit-for-bit reproducible from its seeds;
- otherwise within ``GPU_TOLERANCE`` (absolute, in reward units). CUDA
  kernels such as ``index_add`` (joint training's fusion of partial batches)
  add with atomics in a varying order, so a GPU run drifts by float rounding
  and can flip a few validation predictions; one prediction of a validation
  split of N examples moves an accuracy reward by 1/N. The default was not
  measured on a GPU; pass ``tolerance`` to set your own.

A mismatch is reported with the first step that differs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from dus_gym.evaluation import Predictor, run_episode

__all__ = ["GPU_TOLERANCE", "EpisodeRecord", "ReplayReport", "record_episode", "replay"]

GPU_TOLERANCE = 0.01
"""Default absolute reward tolerance when either run used a GPU (one accuracy point)."""
_FORMAT = 1


@dataclass
class EpisodeRecord:
    """One episode: how to rerun it and the rewards it gave.

    Attributes:
        env_id: registered id, e.g. ``"DUS-v0"``.
        env_kwargs: keyword arguments of ``gym.make`` (JSON values only).
        seed: the ``reset`` seed.
        actions: one action per step, as lists (ints for discrete actions).
        rewards: one reward per step.
        options: the ``reset`` options, if any.
        max_episode_steps: the ``TimeLimit`` of the recorded env.
        device: where the recorded run trained (``"cpu"``, ``"cuda"``, ...);
            decides whether :func:`replay` asks for exact equality.
    """

    env_id: str
    env_kwargs: dict[str, Any]
    seed: int
    actions: list[list[Any]]
    rewards: list[float]
    options: dict[str, Any] | None = None
    max_episode_steps: int | None = None
    device: str = "cpu"
    format: int = field(default=_FORMAT)

    def __post_init__(self) -> None:
        if len(self.actions) != len(self.rewards):
            raise ValueError(
                f"EpisodeRecord: {len(self.actions)} actions but {len(self.rewards)} rewards; expected one per step"
            )
        try:
            json.dumps({"env_kwargs": self.env_kwargs, "options": self.options})
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"EpisodeRecord: env_kwargs/options must be JSON values ({err}); a dataset object cannot be "
                "recorded, pass the dataset by name"
            ) from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> EpisodeRecord:
        data = json.loads(text)
        if data.get("format") != _FORMAT:
            raise ValueError(f"EpisodeRecord: format {data.get('format')!r}; this version reads format {_FORMAT}")
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record as JSON, atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EpisodeRecord:
        return cls.from_json(Path(path).read_text())


def _device_of(env: gym.Env[Any, Any]) -> str:
    run = getattr(env.unwrapped, "run", None)
    return "cpu" if run is None else run.device.type


def _plain(action: Any) -> list[Any]:
    """A JSON list from an action; float32 widens to float64 exactly, so it round-trips."""
    return np.asarray(action).ravel().tolist()


class _ActionRecorder:
    """Wraps a policy and keeps every action it answers, as JSON lists."""

    def __init__(self, policy: Predictor) -> None:
        self.policy = policy
        self.actions: list[list[Any]] = []

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        action, state = self.policy.predict(observation, state, episode_start, deterministic)
        self.actions.append(_plain(action))
        return action, state


def record_episode(
    env: gym.Env[Any, Any],
    policy: Predictor,
    seed: int,
    options: Mapping[str, Any] | None = None,
    deterministic: bool = True,
) -> EpisodeRecord:
    """Run one episode of ``policy`` in ``env`` and record it.

    Args:
        env: made with ``gym.make`` (its ``spec`` names the id and keyword
            arguments that replay needs).
        policy: anything with SB3's ``predict`` (built-in policies,
            :class:`~dus_gym.oracle.LookaheadOracle`, SB3 models).
        seed: the reset seed.
        options: the reset options (JSON values).
    """
    spec = env.spec
    if spec is None:
        raise ValueError("record_episode: env has no spec; make it with gym.make(env_id, ...) so it can be replayed")
    recorder = _ActionRecorder(policy)
    played = run_episode(env, recorder, seed, None if options is None else dict(options), deterministic)
    return EpisodeRecord(
        env_id=spec.id,
        env_kwargs=dict(spec.kwargs),
        seed=int(seed),
        actions=recorder.actions,
        rewards=played["rewards"],
        options=None if options is None else dict(options),
        max_episode_steps=spec.max_episode_steps,
        device=_device_of(env),
    )


@dataclass
class ReplayReport:
    """What :func:`replay` found; true in a boolean context when every reward matched.

    Attributes:
        matches: every recorded step was replayed and its reward matched.
        steps: steps replayed.
        first_mismatch: 0-based index (into ``actions``) of the first step
            that differs, or None; the env's ``info["step"]`` is one more.
        expected, got: the recorded and replayed reward at that step (``got``
            is None when the replayed episode had already ended).
        tolerance: the absolute tolerance used (0.0: exact).
        device: where the replay trained.
        rewards: the replayed rewards.
        message: one readable line.
    """

    matches: bool
    steps: int
    first_mismatch: int | None
    expected: float | None
    got: float | None
    tolerance: float
    device: str
    rewards: list[float]
    message: str

    def __bool__(self) -> bool:
        return self.matches


def replay(record: EpisodeRecord | str | os.PathLike[str], tolerance: float | None = None) -> ReplayReport:
    """Rerun a recorded episode and compare its rewards step by step.

    Args:
        record: the record, or the path of its JSON file.
        tolerance: absolute reward tolerance; default 0.0 (exact) when both
            the recording and the replay ran on the CPU, else ``GPU_TOLERANCE``.
    """
    if not isinstance(record, EpisodeRecord):
        record = EpisodeRecord.load(record)
    env = gym.make(record.env_id, max_episode_steps=record.max_episode_steps, **record.env_kwargs)
    try:
        env.reset(seed=record.seed, options=record.options)
        device = _device_of(env)
        if tolerance is None:
            tolerance = 0.0 if device == record.device == "cpu" else GPU_TOLERANCE
        got: list[float] = []
        done = False
        for k, (action, expected) in enumerate(zip(record.actions, record.rewards)):
            if done:
                return _report(record, got, k, expected, None, tolerance, device, "the replayed episode ended early")
            _, reward, terminated, truncated, _ = env.step(np.asarray(action))
            got.append(float(reward))
            done = terminated or truncated
            if not abs(got[-1] - expected) <= tolerance:
                return _report(record, got, k, expected, got[-1], tolerance, device, "rewards differ")
        return _report(record, got, None, None, None, tolerance, device, "")
    finally:
        env.close()


def _report(
    record: EpisodeRecord,
    got: Sequence[float],
    k: int | None,
    expected: float | None,
    value: float | None,
    tolerance: float,
    device: str,
    why: str,
) -> ReplayReport:
    how = "exactly" if tolerance == 0.0 else f"within {tolerance:g}"
    if k is None:
        message = f"{record.env_id} seed {record.seed}: all {len(got)} rewards match {how} on {device}"
    else:
        message = (
            f"{record.env_id} seed {record.seed}: step {k + 1} (actions[{k}] = {record.actions[k]}): {why}; "
            f"recorded {expected!r}, replayed {value!r} (compared {how} on {device})"
        )
    return ReplayReport(k is None, len(got), k, expected, value, tolerance, device, list(got), message)
