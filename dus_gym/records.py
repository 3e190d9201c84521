"""Episode records and their replay: a result anyone can rerun and check.

An :class:`EpisodeRecord` holds what it takes to rerun an episode (the env id
and keyword arguments, the reset seed and options, the actions) and what it
gave (the rewards). It is plain JSON, written atomically (a temporary file in
the same folder, then a rename), so a crash never leaves half a record.

:func:`replay` makes the env again, resets it with the recorded seed, takes
the recorded actions and compares every reward:

- on the CPU rewards must match **exactly**: a run is bit-for-bit
  reproducible from its seeds on the machine that ran it. A record names that
  machine (:func:`machine_fingerprint`); on another one (another CPU, or other
  torch or NumPy builds) a float may round otherwise (other kernels sum in
  another order) and the rewards may part from the first validation
  prediction that flips. The comparison stays exact unless you pass
  ``tolerance``, and a mismatch says that the machines differ;
- otherwise within ``GPU_TOLERANCE`` (absolute, in reward units). CUDA
  kernels such as ``index_add`` (joint training's fusion of partial batches)
  add with atomics in a varying order, so a GPU run drifts by float rounding
  and can flip a few validation predictions; one prediction of a validation
  split of N examples moves an accuracy reward by 1/N. The default was not
  measured on a GPU; pass ``tolerance`` to set your own.

A mismatch is reported with the first step that differs; a record whose
episode had not ended after its last step (one that lacks its last steps) is a
mismatch too, with the number of steps it has and the episode length it
declares. A record file that is not a complete, valid record is refused with a
:class:`RecordError` naming the file.
"""

from __future__ import annotations

import json
import os
import platform
import reprlib
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dus_gym.evaluation import Predictor, run_episode

__all__ = [
    "GPU_TOLERANCE", "EpisodeRecord", "RecordError", "ReplayReport", "machine_fingerprint", "record_episode", "replay",
]

GPU_TOLERANCE = 0.01
"""Default absolute reward tolerance when either run used a GPU (one accuracy point)."""
_FORMAT = 1


def machine_fingerprint() -> str:
    """What decides whether two CPU runs of one seed are bit-equal: the architecture, the CPU model, the
    vector width of torch's kernels and the torch and NumPy builds, as one line, e.g.
    ``"x86_64, AMD EPYC, torch 2.13.0+cpu (AVX512), numpy 2.4.6"``."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:  # not Linux
        pass
    kernels = torch.backends.cpu.get_cpu_capability()
    cpu = model or "unknown CPU"
    return f"{platform.machine()}, {cpu}, torch {torch.__version__} ({kernels}), numpy {np.__version__}"


class RecordError(ValueError):
    """A record that cannot be read: the message names the file, what was found and what was expected."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a seed


# What each field of a record's JSON must hold, checked on reading so that a
# hand-edited or damaged file is refused by name rather than failing mid-replay.
_FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "env_id": (lambda v: isinstance(v, str), "a string such as 'DUS-v0'"),
    "env_kwargs": (lambda v: isinstance(v, dict), "an object of gym.make keyword arguments"),
    "seed": (_is_int, "an integer"),
    "actions": (lambda v: isinstance(v, list) and all(isinstance(a, list) for a in v), "a list of lists, one per step"),
    "rewards": (
        lambda v: isinstance(v, list) and all(_is_int(r) or isinstance(r, float) for r in v),
        "a list of numbers, one per step",
    ),
    "options": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "max_episode_steps": (lambda v: v is None or _is_int(v), "an integer or null"),
    "device": (lambda v: isinstance(v, str), "a string such as 'cpu'"),
    "machine": (lambda v: v is None or isinstance(v, str), "a string (machine_fingerprint()) or null"),
    "format": (_is_int, f"the integer {_FORMAT}"),
}


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
        machine: the machine that recorded it (:func:`machine_fingerprint`);
            None in records written before dus_gym kept it.
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
    machine: str | None = None

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
    def from_json(cls, text: str, source: str = "EpisodeRecord") -> EpisodeRecord:
        """The record in ``text`` (as :meth:`to_json` writes it), validated.

        Args:
            source: what to call the text in messages (:meth:`load` passes the file).

        Raises:
            RecordError: text that is not JSON (a truncated file: said so), not
                an object, of another format, with an unknown or a missing
                field (naming it and the valid ones) or a field of the wrong type.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            problem = _json_problem(text, err)
            raise RecordError(f"{source}: {problem}; expected a record as EpisodeRecord.save writes") from None
        if not isinstance(data, dict):
            raise RecordError(f"{source}: the JSON is a {type(data).__name__}; expected an object of record fields")
        if data.get("format") != _FORMAT:
            raise RecordError(f"{source}: format {data.get('format')!r}; this version reads format {_FORMAT}")
        valid = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in valid]
        if unknown:
            raise RecordError(f"{source}: unknown field {unknown[0]!r}; valid fields: {valid}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise RecordError(f"{source}: field {missing[0]!r} is missing; required fields: {required}")
        for key, value in data.items():
            check, expected = _FIELD_CHECKS.get(key, (lambda v: True, ""))
            if not check(value):
                raise RecordError(f"{source}: field {key!r} is {reprlib.repr(value)}; expected {expected}")
        try:
            return cls(**data)
        except ValueError as err:  # __post_init__: actions and rewards disagree, ...
            raise RecordError(f"{source}: {str(err).removeprefix('EpisodeRecord: ')}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record as JSON, atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
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
        """The record in the JSON file ``path``.

        Raises:
            FileNotFoundError: no file there.
            RecordError: a folder, or a file that is not a valid record (see
                :meth:`from_json`); the message names the file.
        """
        path = Path(path)
        source = f"episode record {str(path)!r}"
        expected = "expected a JSON file written by EpisodeRecord.save"
        if not path.exists():
            raise FileNotFoundError(f"{source} does not exist; {expected}")
        if path.is_dir():
            raise RecordError(f"{source} is a folder; {expected}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise RecordError(f"{source} is not UTF-8 text ({err}); {expected}") from None
        return cls.from_json(text, source)


def _json_problem(text: str, err: json.JSONDecodeError) -> str:
    """What is wrong with JSON ``text``, saying so when it merely stops early (a truncated file)."""
    if not text.strip():
        return "it is empty"
    # The parser stops at the end of the text, or inside a string left open: the text was cut.
    if err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string"):
        return f"the JSON ends early, after {len(text)} characters (truncated?)"
    return f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"


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
        machine=machine_fingerprint(),
    )


@dataclass
class ReplayReport:
    """What :func:`replay` found; true in a boolean context when every reward matched.

    Attributes:
        matches: every recorded step was replayed, its reward matched, and
            the episode ended with the record's last step.
        steps: steps replayed.
        first_mismatch: 0-based index (into ``actions``) of the first step
            that differs, or None; the env's ``info["step"]`` is one more.
            ``len(actions)`` when the record lacks the episode's last steps.
        expected, got: the recorded and replayed reward at that step (``got``
            is None when the replayed episode had already ended; both are
            None when the record lacks that step).
        tolerance: the absolute tolerance used (0.0: exact).
        device: where the replay trained.
        rewards: the replayed rewards.
        message: one readable line.
        machine: the machine that replayed (:func:`machine_fingerprint`).
        same_machine: whether the record names this machine (None: the
            record does not say which machine made it).
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
    machine: str = ""
    same_machine: bool | None = None

    def __bool__(self) -> bool:
        return self.matches


def replay(record: EpisodeRecord | str | os.PathLike[str], tolerance: float | None = None) -> ReplayReport:
    """Rerun a recorded episode and compare its rewards step by step.

    Args:
        record: the record, or the path of its JSON file.
        tolerance: absolute reward tolerance; default 0.0 (exact) when both
            the recording and the replay ran on the CPU, else ``GPU_TOLERANCE``.
            Exact equality holds on the machine that recorded; the report
            says when the record names another one (``same_machine``).
    """
    if not isinstance(record, EpisodeRecord):
        record = EpisodeRecord.load(record)
    here = machine_fingerprint()
    report = _replay(record, tolerance)
    report.machine = here
    report.same_machine = None if record.machine is None else record.machine == here
    if not report and report.same_machine is False and report.first_mismatch is not None and report.got is not None:
        report.message += (
            f"; recorded on {record.machine!r}, replayed on {here!r}: runs are bit-equal only on one machine "
            "(another CPU's kernels round otherwise), so pass tolerance= to compare across machines"
        )
    return report


def _replay(record: EpisodeRecord, tolerance: float | None) -> ReplayReport:
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
        if not done:
            # A record of a whole episode ends where the episode does: this one was cut short.
            return _short_report(record, env, got, tolerance, device)
        return _report(record, got, None, None, None, tolerance, device, "")
    finally:
        env.close()


def _short_report(
    record: EpisodeRecord, env: gym.Env[Any, Any], got: Sequence[float], tolerance: float, device: str
) -> ReplayReport:
    """The mismatch of a record that lacks its last steps: how many it has, how many its episode declares."""
    n = len(record.actions)
    limits: list[tuple[int, str]] = []
    n_steps = getattr(env.unwrapped, "n_steps", None)
    if isinstance(n_steps, int):
        origin = "" if "n_steps" in record.env_kwargs else ", the env's default"
        limits.append((n_steps, f"n_steps={n_steps}{origin}"))
    if record.max_episode_steps is not None:
        limits.append((record.max_episode_steps, f"max_episode_steps={record.max_episode_steps}"))
    if limits:
        length = min(limit for limit, _ in limits)
        declared = f"its settings declare {length} ({'; '.join(why for _, why in limits)})"
        lacks = f"; the record lacks its last {length - n} step(s)" if length > n else ""
    else:
        declared, lacks = "its settings declare no length", ""
    message = (
        f"{record.env_id} seed {record.seed}: the record has {n} step(s) but the replayed episode had not ended "
        f"after them: {declared}{lacks}"
    )
    return ReplayReport(False, len(got), n, None, None, tolerance, device, list(got), message)


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
