"""Compare sampling policies: a grid of policies x datasets x methods x seeds.

Each grid point with one seed is a *cell*; it runs one episode (one training
run from scratch) and appends one JSON line to ``OUTPUT/results.jsonl`` when it
finishes. A rerun with the same output skips the cells already there, so an
interrupted sweep loses only the episodes that were running. Then it writes
``summary.md``, ``summary.csv`` and the plots (``benchmarks/plots.py``).

    python -m benchmarks.compare --datasets synthetic:shortcut --num-seeds 10
    python -m benchmarks.compare --policies uniform dus_h pretrained:shortcut_ppo runs/my_run --workers 2
    RAY_ADDRESS=ray://head:10001 python -m benchmarks.compare --backend ray

Run it from the repository root as a module (``python -m benchmarks.compare``):
it imports ``benchmarks.stats``, which a script run as a file cannot see.

A policy is a built-in spec (``uniform``, ``random``, ``fixed:1,2``,
``dus_h:2.0``; see :mod:`dus_gym.policies`), the path of a run folder written
by ``agents/train.py``, or a shipped agent (``pretrained:NAME``); see
:func:`dus_gym.agent_io.load_policy`. Every policy sees the same instances:
the env is reset with the cell's seed.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dus_gym import EPISODE_STEPS
from dus_gym.agent_io import load_policy, policy_label
from dus_gym.cli import UsageError, fail, json_object, parse_args, run, setting_up
from dus_gym.run import RunConfig

try:
    from benchmarks.stats import Interval
except ModuleNotFoundError as err:  # run as a file: sys.path has benchmarks/, not the repository root
    # "benchmarks.stats" too: another distribution's top-level benchmarks/ folder (torchrl ships one) is a
    # namespace package, found before ours when the file is run as a script.
    if err.name not in ("benchmarks", "benchmarks.stats"):
        raise
    fail("benchmarks/compare.py", "run it from the repository root as a module: python -m benchmarks.compare ...")

# benchmarks.stats loads scipy; the functions that need it import it themselves,
# so worker processes that only run cells start faster.

__all__ = [
    "PROG",
    "Args",
    "Cell",
    "aggregate_gains",
    "compact_table",
    "append_record",
    "check_policies",
    "main",
    "make_env",
    "make_cells",
    "read_records",
    "run_cell",
    "run_grid",
    "summarise",
    "write_summary",
]

PROG = "python -m benchmarks.compare"
RESULTS_FILE = "results.jsonl"
REFERENCE_POLICY = "uniform"
BACKENDS = ("local", "ray")


@dataclass
class Args:
    """Compare sampling policies on a grid of datasets, methods and seeds."""

    policies: list[str] = field(
        default_factory=lambda: ["uniform", "random", "fixed:1,2", "fixed:2,1", "dus_h:0.5", "dus_h", "dus_h:2.0"]
    )
    """policies: uniform, random, fixed:W1,W2 (one weight per modality), dus_h[:LAM], gap[:MARGIN], a run-folder path,
    or pretrained:NAME (a shipped agent)"""
    datasets: list[str] = field(
        default_factory=lambda: ["digits", "synthetic:shortcut", "synthetic:memorization", "synthetic:complementary"]
    )
    """datasets: digits, synthetic:PRESET, bundle:PATH, or family:NAME (the held-out instances of a family
    of dus_gym.instances: seed k plays the k-th instance of NAME:eval)"""
    methods: list[str] = field(default_factory=lambda: ["joint", "mla"])
    """multimodal training methods (joint, mla, ogm_ge where available)"""
    num_seeds: int = 10
    """seeds (instances) per grid point; every policy sees the same ones"""
    seed: int = 0
    """first seed; the seeds are seed, seed+1, ..., seed+num_seeds-1"""
    n_steps: int = EPISODE_STEPS
    """steps (epochs) per episode"""
    iterations_per_step: int | None = None
    """training iterations per step; none: one epoch"""
    base_batch: int = RunConfig.base_batch
    """B, examples per modality per iteration under uniform sampling"""
    device: str = "cpu"
    """torch device of the training runs (cpu, cuda, auto)"""
    dataset_kwargs: str = "{}"
    """JSON object of synthetic-config overrides, e.g. '{"shortcut_rho": 0.9}'"""
    env_kwargs: str = "{}"
    """JSON object of further DUSEnv arguments, e.g. '{"instances": "eval"}' for held-out instances"""
    output: str = "benchmarks/results/latest"
    """output folder: results.jsonl, summary.md, summary.csv, plots"""
    backend: str = "local"
    """local (serial or a process pool) or ray (ray.init(); a cluster when RAY_ADDRESS is set)"""
    workers: int = 1
    """local backend: parallel worker processes (1: serial, in this process)"""
    torch_threads: int = 1
    """torch intra-op threads per worker process"""
    batched: bool = False
    """run the seeds of each grid point as one batched group: one vector env whose runs train as one
    computation (docs/batched.md), the same instances as the episodes one by one"""
    n_resamples: int = 2000
    """bootstrap resamples of each interval"""
    plots: bool = True
    """write the PNG plots"""
    run: bool = True
    """run the missing cells (--no-run only summarises what the output holds)"""
    progress: bool = True
    """show progress bars over cells and episodes"""


# -- cells ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One episode of the grid: a policy on a dataset with a method and a seed.

    ``settings`` is a JSON string of everything else that shapes the episode
    (steps, batch, device, dataset and env overrides); a results file holds
    one settings value only. Picklable, so any backend can ship it.
    """

    policy: str
    dataset: str
    method: str
    seed: int
    settings: str

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.policy, self.dataset, self.method, self.seed)

    @property
    def group(self) -> tuple[str, str, str]:
        """The grid point without its seed (a row of the summary)."""
        return (self.dataset, self.method, self.policy)


def settings_json(args: Args) -> str:
    """The settings every cell of a run shares, as canonical JSON."""
    settings = {
        "n_steps": args.n_steps,
        "iterations_per_step": args.iterations_per_step,
        "base_batch": args.base_batch,
        "device": args.device,
        "dataset_kwargs": json_object(args.dataset_kwargs, "--dataset-kwargs"),
        "env_kwargs": json_object(args.env_kwargs, "--env-kwargs"),
    }
    return json.dumps(settings, sort_keys=True)


def make_cells(args: Args) -> list[Cell]:
    """Every cell of the grid, seeds innermost (so summaries fill up evenly)."""
    if args.num_seeds < 1:
        raise ValueError(f"--num-seeds must be >= 1, got {args.num_seeds}")
    settings = settings_json(args)
    seeds = range(args.seed, args.seed + args.num_seeds)
    return [
        Cell(p, d, m, s, settings) for d in args.datasets for m in args.methods for p in args.policies for s in seeds
    ]


FAMILY_PREFIX = "family:"
"""A ``--datasets`` entry ``family:NAME`` plays the held-out instances of an instance family
(:data:`dus_gym.instances.FAMILIES`): seed k is the k-th instance of ``NAME:eval``."""


def env_kwargs(dataset: str, method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The :class:`~dus_gym.envs.DUSEnv` arguments of a grid point, with the settings every cell shares."""
    data: dict[str, Any] = {"dataset": dataset, "dataset_kwargs": settings["dataset_kwargs"]}
    if dataset.startswith(FAMILY_PREFIX):
        from dus_gym.instances import family_env_kwargs

        own = family_env_kwargs(dataset[len(FAMILY_PREFIX) :], "eval")
        own.pop("instances")  # each cell resets with its own instance (cell_instance)
        data = {**own, "dataset_kwargs": {**own.get("dataset_kwargs", {}), **settings["dataset_kwargs"]}}
    return {
        **data,
        "method": method,
        "n_steps": settings["n_steps"],
        "iterations_per_step": settings["iterations_per_step"],
        "base_batch": settings["base_batch"],
        "device": settings["device"],
        **settings["env_kwargs"],
    }


def cell_instance(cell: Cell) -> dict[str, Any] | None:
    """The instance a cell's episode runs: for ``family:NAME`` the seed-th held-out instance, else None
    (the env draws it from the seed)."""
    if not cell.dataset.startswith(FAMILY_PREFIX):
        return None
    from dus_gym.instances import instance_set

    return instance_set(f"{cell.dataset[len(FAMILY_PREFIX):]}:eval", cell.seed + 1)[cell.seed]


def make_env(dataset: str, method: str, settings: dict[str, Any]) -> Any:
    """The env of a grid point (a :class:`~dus_gym.envs.DUSEnv`)."""
    from dus_gym.envs import DUSEnv

    return DUSEnv(**env_kwargs(dataset, method, settings))


def check_policies(cells: Sequence[Cell]) -> None:
    """Build each grid point's env and load every policy on it, before any episode runs.

    An unknown policy, data set or env argument, a missing run folder or an
    agent trained for other spaces is then one error at once, not a failed
    worker minutes later. Building an env is cheap: the data and the model
    come at its first reset.
    """
    policies: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for cell in cells:
        policies[(cell.dataset, cell.method, cell.settings)].setdefault(cell.policy, cell.seed)
    for (dataset, method, settings), specs in policies.items():
        env = make_env(dataset, method, json.loads(settings))
        for spec, seed in specs.items():
            load_policy(spec, env, seed)
        env.close()

def run_cell(cell: Cell, torch_threads: int | None = None) -> dict[str, Any]:
    """Run one cell's episode and return its result record (one JSON line).

    The record is :func:`dus_gym.evaluation.run_episode`'s (instance, return,
    rewards, per-step validation accuracies from the reset on and quantities,
    final test metrics; a diverged model's test metrics too) plus the grid point.
    A module-level function, so process pools and Ray can ship it.
    """
    import torch

    from dus_gym.evaluation import run_episode

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    settings = json.loads(cell.settings)
    env = make_env(cell.dataset, cell.method, settings)
    start = time.perf_counter()
    policy = load_policy(cell.policy, env, cell.seed)
    instance = cell_instance(cell)
    record = run_episode(env, policy, seed=cell.seed, options=None if instance is None else {"instance": instance})
    if record["test"] is None:  # diverged: the broken model's test metrics still count
        record["test"] = env.test_metrics()
    return {
        **record,
        "policy": cell.policy,
        "dataset": cell.dataset,
        "method": cell.method,
        "seed": cell.seed,
        "settings": settings,
        "modalities": list(env.modalities),
        "wall_s": time.perf_counter() - start,
    }


def run_group(cells: Sequence[Cell], torch_threads: int | None = None) -> list[dict[str, Any]]:
    """Run the cells of one grid point (its seeds) as one batched group; one record per cell.

    Sub-env i of a :class:`~dus_gym.envs.DUSVectorEnv` is reset with cell i's
    seed, as :func:`run_cell` resets its env, and played by cell i's own
    policy object (a ``random`` policy keeps its per-seed stream).
    """
    import torch
    from gymnasium.vector import AutoresetMode

    from dus_gym.envs import DUSVectorEnv
    from dus_gym.evaluation import run_episodes_batched

    first = cells[0]
    if any((c.policy, c.dataset, c.method, c.settings) != (first.policy, first.dataset, first.method, first.settings)
           for c in cells):
        raise ValueError(f"run_group: cells of different grid points {sorted({c.group for c in cells})}")
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    settings = json.loads(first.settings)
    # SAME_STEP: a run that ends early (diverged) goes on training at once, as the results so far were made.
    kwargs = env_kwargs(first.dataset, first.method, settings)
    venv = DUSVectorEnv(len(cells), autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
    start = time.perf_counter()
    policies = [load_policy(c.policy, env, c.seed) for c, env in zip(cells, venv.envs)]
    instances = [cell_instance(c) for c in cells]
    options = None if instances[0] is None else {"instance": instances}
    records = run_episodes_batched(venv, policies, [c.seed for c in cells], options)
    wall = (time.perf_counter() - start) / len(cells)
    return [
        {
            **record, "policy": c.policy, "dataset": c.dataset, "method": c.method, "seed": c.seed,
            "settings": settings, "modalities": list(venv.modalities), "wall_s": wall, "batched": len(cells),
        }
        for c, record in zip(cells, records)
    ]


# -- results file -----------------------------------------------------------------


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as one line, atomically: a single ``write`` on an ``O_APPEND`` file.

    Readers never see half a line from this call, and concurrent appenders
    never interleave within a line.
    """
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(f"{path}: wrote {written} of {len(data)} bytes of a result line (disk full?)")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a results file; ``[]`` when it does not exist.

    A last line without its newline can only come from a writer that died
    mid-write outside :func:`append_record`; it is cut off (with a warning), so
    the next append starts a fresh line.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        warnings.warn(f"{path}: dropping an unfinished last line ({len(data) - end} bytes)", stacklevel=2)
        with path.open("r+b") as f:
            f.truncate(end)
        data = data[:end]
    records = []
    for number, line in enumerate(data.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON result line ({err})") from None
    return records


def _record_key(record: dict[str, Any]) -> tuple[str, str, str, int]:
    return (record["policy"], record["dataset"], record["method"], int(record["seed"]))


def pending_cells(cells: Sequence[Cell], records: Iterable[dict[str, Any]], path: str | Path) -> list[Cell]:
    """The cells with no record yet; a record with other settings is an error (not silently mixed)."""
    done: dict[tuple[str, str, str, int], dict[str, Any]] = {_record_key(r): r for r in records}
    pending = []
    for cell in cells:
        record = done.get(cell.key)
        if record is None:
            pending.append(cell)
        elif record["settings"] != json.loads(cell.settings):
            raise ValueError(
                f"{path}: cell {cell.key} was run with settings {record['settings']}, this run asks for "
                f"{json.loads(cell.settings)}; use another --output (or the same settings)"
            )
    return pending


# -- backends ---------------------------------------------------------------------


Unit = tuple[Cell, ...]
"""Cells run together: one cell, or the seeds of a grid point as one batched group."""


def make_units(cells: Sequence[Cell], batched: bool = False) -> list[Unit]:
    """One unit per cell, or with ``batched`` one per grid point (same policy, data, method, settings)."""
    if not batched:
        return [(c,) for c in cells]
    groups: dict[tuple[tuple[str, str, str], str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.group, c.settings), []).append(c)
    return [tuple(g) for g in groups.values()]


def _run_named(unit: Unit, threads: int | None) -> list[dict[str, Any]]:
    try:
        return run_group(unit, threads) if len(unit) > 1 else [run_cell(unit[0], threads)]
    except Exception as err:
        keys = [c.key for c in unit]
        raise RuntimeError(f"cell{'s' if len(keys) > 1 else ''} {keys if len(keys) > 1 else keys[0]} failed: "
                           f"{type(err).__name__}: {err}") from err


def _local_serial(units: Sequence[Unit], threads: int) -> Iterator[list[dict[str, Any]]]:
    for unit in units:
        yield _run_named(unit, threads)


def _local_pool(units: Sequence[Unit], workers: int, threads: int) -> Iterator[list[dict[str, Any]]]:
    from concurrent.futures import FIRST_COMPLETED, wait

    from dus_gym.evaluation import episode_pool

    # Each worker sets its own thread count in run_cell; the workers end with this process.
    with episode_pool(workers) as pool:
        futures = {pool.submit(_run_named, unit, threads) for unit in units}
        try:
            while futures:
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _ray(units: Sequence[Unit], threads: int) -> Iterator[list[dict[str, Any]]]:
    try:
        import ray
    except ImportError:
        raise ImportError("--backend ray needs ray: pip install 'dus_gym[ray]'") from None
    if not ray.is_initialized():
        ray.init()  # connects to RAY_ADDRESS when set, else starts a local instance
    remote = ray.remote(num_cpus=threads)(_run_named)
    refs = [remote.remote(unit, threads) for unit in units]
    try:
        while refs:
            finished, refs = ray.wait(refs, num_returns=1)
            for ref in finished:
                yield ray.get(ref)
    finally:
        for ref in refs:
            ray.cancel(ref)


def check_backend(backend: str, workers: int) -> None:
    """Raise a ValueError naming the flag for an unknown backend or a worker count below 1."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: expected one of {list(BACKENDS)}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")


def execute(
    cells: Sequence[Cell], backend: str = "local", workers: int = 1, threads: int = 1, batched: bool = False
) -> Iterator[dict[str, Any]]:
    """Run ``cells`` on a backend (each grid point's seeds as one batched group with ``batched``);
    yields each record as its episode (or group) finishes, in any order."""
    check_backend(backend, workers)
    units = make_units(cells, batched)
    if backend == "ray":
        results = _ray(units, threads)
    elif workers == 1:
        results = _local_serial(units, threads)
    else:
        results = _local_pool(units, workers, threads)
    return (record for records in results for record in records)


def run_grid(
    cells: Sequence[Cell],
    output: str | Path,
    backend: str = "local",
    workers: int = 1,
    threads: int = 1,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    batched: bool = False,
) -> list[dict[str, Any]]:
    """Run the cells missing from ``output/results.jsonl``, appending each record as it comes
    (with ``batched``, each grid point's missing seeds as one batched group).

    Returns all records of the file that belong to ``cells``.
    """
    from tqdm.auto import tqdm

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / RESULTS_FILE
    todo = pending_cells(cells, read_records(path), path)
    groups: dict[tuple[str, str, str], int] = {}
    for cell in todo:
        groups[cell.group] = groups.get(cell.group, 0) + 1
    n_groups = len({c.group for c in cells})
    cell_bar = tqdm(total=n_groups, initial=n_groups - len(groups), desc="cells", position=0, disable=not progress)
    episode_bar = tqdm(
        total=len(cells), initial=len(cells) - len(todo), desc="episodes", position=1, disable=not progress
    )
    with cell_bar, episode_bar:
        for record in execute(todo, backend, workers, threads, batched):
            append_record(path, record)
            episode_bar.update()
            group = (record["dataset"], record["method"], record["policy"])
            groups[group] -= 1
            if groups[group] == 0:
                cell_bar.update()
            if on_record is not None:
                on_record(record)
    wanted = {c.key for c in cells}
    return [r for r in read_records(path) if _record_key(r) in wanted]


# -- summary ----------------------------------------------------------------------


@dataclass
class Row:
    """Summary of one grid point over its seeds."""

    dataset: str
    method: str
    policy: str
    n: int
    diverged: int
    accuracy_mean: float
    accuracy: Interval
    """IQM of fused test accuracy and its 95% bootstrap interval"""
    macro_f1_mean: float
    branch: dict[str, Interval]
    """mean branch accuracy per modality, with its interval"""
    probe: dict[str, Interval]
    """mean linear-probe accuracy per modality, with its interval"""
    improvement: Interval
    """probability that a run of this policy beats a run of uniform (fused test accuracy)"""
    gain_mean: float
    """mean fused-accuracy gain over uniform, paired by seed (NaN without uniform)"""


def summarise(records: Sequence[dict[str, Any]], n_resamples: int = 2000, seed: int = 0) -> list[Row]:
    """One :class:`Row` per (dataset, method, policy), in the records' first-seen order."""
    from benchmarks.stats import probability_of_improvement, stratified_bootstrap_ci

    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["method"], r["policy"]), []).append(r)
    rows = []
    for (dataset, method, policy), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        acc = np.array([r["test"]["accuracy"] for r in runs])
        ci = {"n_resamples": n_resamples, "seed": seed}
        modalities = runs[0]["modalities"]
        branch = {
            m: stratified_bootstrap_ci([[r["test"]["branch_accuracy"][m] for r in runs]], "mean", **ci)
            for m in modalities
        }
        probe = {
            m: stratified_bootstrap_ci([[r["test"]["probe_accuracy"][m] for r in runs]], "mean", **ci)
            for m in modalities
        }
        reference = {r["seed"]: r["test"]["accuracy"] for r in groups.get((dataset, method, REFERENCE_POLICY), [])}
        if reference:
            ref = np.array(list(reference.values()))
            improvement = probability_of_improvement(acc, ref, **ci)
            paired = [r["test"]["accuracy"] - reference[r["seed"]] for r in runs if r["seed"] in reference]
            gain = float(np.mean(paired)) if paired else float("nan")
        else:
            improvement, gain = Interval(float("nan"), float("nan"), float("nan")), float("nan")
        rows.append(
            Row(
                dataset, method, policy, len(runs), sum(bool(r["diverged"]) for r in runs),
                float(acc.mean()), stratified_bootstrap_ci([acc], "iqm", **ci),
                float(np.mean([r["test"]["macro_f1"] for r in runs])), branch, probe, improvement, gain,
            )
        )
    return rows


def compact_table(rows: Sequence[Row]) -> str:
    """Fused test accuracy (IQM [95% CI], percent) as a policy x (dataset, method) Markdown table."""
    columns = list(dict.fromkeys((r.dataset, r.method) for r in rows))
    policies = list(dict.fromkeys(r.policy for r in rows))
    cell = {(r.policy, r.dataset, r.method): r for r in rows}
    lines = [
        "| policy | " + " | ".join(f"{d} {m}" for d, m in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for policy in policies:
        values = []
        for d, m in columns:
            row = cell.get((policy, d, m))
            values.append("-" if row is None else row.accuracy.format())
        lines.append(f"| {policy_label(policy)} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def aggregate_gains(
    records: Sequence[dict[str, Any]], n_resamples: int = 2000, seed: int = 0
) -> list[tuple[str, str, list[str], Interval]]:
    """Per (method, policy): the IQM over all datasets of the per-seed fused-accuracy gain over
    ``uniform`` (paired by seed), with a 95% stratified-bootstrap interval, each dataset a stratum.

    Returns ``(method, policy, datasets, interval)`` rows; policies without a
    uniform reference on some dataset are left out of that dataset.
    """
    from benchmarks.stats import stratified_bootstrap_ci

    reference = {
        (r["dataset"], r["method"], r["seed"]): r["test"]["accuracy"]
        for r in records
        if r["policy"] == REFERENCE_POLICY
    }
    strata: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in records:
        ref = reference.get((r["dataset"], r["method"], r["seed"]))
        if ref is not None and r["policy"] != REFERENCE_POLICY:
            gains = strata.setdefault((r["method"], r["policy"]), {}).setdefault(r["dataset"], [])
            gains.append(r["test"]["accuracy"] - ref)
    return [
        (method, policy, list(by_dataset),
         stratified_bootstrap_ci(list(by_dataset.values()), "iqm", n_resamples=n_resamples, seed=seed))
        for (method, policy), by_dataset in strata.items()
    ]


def aggregate_table(aggregates: Sequence[tuple[str, str, list[str], Interval]]) -> str:
    """The aggregate gains as a Markdown table (points of accuracy)."""
    lines = ["| method | policy | datasets | gain vs uniform, IQM [95% stratified CI] |", "|---|---|---|---|"]
    for method, policy, datasets, iv in aggregates:
        gain = iv.format(1) if np.isfinite(iv.estimate) else "-"
        lines.append(f"| {method} | {policy_label(policy)} | {len(datasets)} | {gain} |")
    return "\n".join(lines) + "\n"


def _csv_rows(rows: Sequence[Row]) -> tuple[list[str], list[list[Any]]]:
    modalities = sorted({m for row in rows for m in row.branch})
    header = [
        "dataset", "method", "policy", "n", "diverged", "accuracy_mean", "accuracy_iqm", "accuracy_iqm_low",
        "accuracy_iqm_high", "macro_f1_mean", "gain_over_uniform_mean", "p_improvement", "p_improvement_low",
        "p_improvement_high",
    ]
    for kind in ("branch", "probe"):
        for m in modalities:
            header += [f"{kind}_{m}_mean", f"{kind}_{m}_low", f"{kind}_{m}_high"]
    table = []
    for row in rows:
        line: list[Any] = [
            row.dataset, row.method, row.policy, row.n, row.diverged, row.accuracy_mean, row.accuracy.estimate,
            row.accuracy.low, row.accuracy.high, row.macro_f1_mean, row.gain_mean, row.improvement.estimate,
            row.improvement.low, row.improvement.high,
        ]
        for values in (row.branch, row.probe):
            for m in modalities:
                iv = values.get(m, Interval(float("nan"), float("nan"), float("nan")))
                line += [iv.estimate, iv.low, iv.high]
        table.append(line)
    return header, table


def markdown_table(rows: Sequence[Row]) -> str:
    """The summary as a Markdown table (accuracies in percent)."""
    lines = [
        "| dataset | method | policy | n | fused acc. mean | fused acc. IQM [95% CI] | gain vs uniform "
        "| P(improve) [95% CI] | branch acc. mean [95% CI] | probe acc. mean [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        branch = "<br>".join(f"{m}: {iv.format()}" for m, iv in row.branch.items())
        probe = "<br>".join(f"{m}: {iv.format()}" for m, iv in row.probe.items())
        poi = "-" if not np.isfinite(row.improvement.estimate) else row.improvement.format(2, 1.0)
        gain = "-" if not np.isfinite(row.gain_mean) else f"{100 * row.gain_mean:+.1f}"
        n = f"{row.n}" + (f" ({row.diverged} diverged)" if row.diverged else "")
        lines.append(
            f"| {row.dataset} | {row.method} | {policy_label(row.policy)} | {n} | {100 * row.accuracy_mean:.1f} "
            f"| {row.accuracy.format()} | {gain} | {poi} | {branch} | {probe} |"
        )
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_summary(
    rows: Sequence[Row],
    output: str | Path,
    note: str = "",
    aggregates: Sequence[tuple[str, str, list[str], Interval]] = (),
) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``summary.csv`` into ``output`` (each replaced atomically)."""
    import csv
    import io

    output = Path(output)
    header, table = _csv_rows(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[f"{v:.6g}" if isinstance(v, float) else v for v in line] for line in table])
    md = (
        "# Benchmark summary\n\n"
        + (note + "\n\n" if note else "")
        + "Fused test accuracy in percent, interquartile mean (IQM) over seeds with a 95% percentile-bootstrap "
        "interval:\n\n"
        + compact_table(rows)
        + "\n## Every cell\n\n"
        "Fused accuracy mean and IQM [95% CI]; gain vs uniform is the mean paired difference (same seeds); "
        "P(improve) is the probability that a run of the policy beats a run of uniform; branch and probe "
        "accuracies are means with 95% bootstrap intervals.\n\n"
        + markdown_table(rows)
    )
    if aggregates:
        md += (
            "\n## Over datasets\n\nPer-seed gain of fused test accuracy over uniform (points), IQM over all "
            "seeds of all datasets, with a 95% stratified-bootstrap interval (each dataset a stratum).\n\n"
            + aggregate_table(aggregates)
        )
    md_path, csv_path = output / "summary.md", output / "summary.csv"
    _write_atomic(md_path, md)
    _write_atomic(csv_path, buffer.getvalue())
    return md_path, csv_path


# -- main -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Run the grid's missing cells, then write and print the summary; returns its rows.

    Every flag, policy, data set and run folder is checked before the first
    episode (a bad one raises :class:`dus_gym.cli.UsageError`).
    """
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    # Seeding: every cell's randomness comes from its own seed (env.reset(seed=...) draws the
    # instance, the random policy uses the same seed); the bootstrap resamples from args.seed.
    output = Path(args.output)
    results = output / RESULTS_FILE
    with setting_up():
        cells = make_cells(args)
        if args.run:
            check_backend(args.backend, args.workers)
            check_policies(pending_cells(cells, read_records(results), results))
    if args.run:
        records = run_grid(
            cells, output, args.backend, args.workers, args.torch_threads, args.progress, batched=args.batched
        )
    else:
        wanted = {c.key for c in cells}
        records = [r for r in read_records(results) if _record_key(r) in wanted]
    if not records:
        raise UsageError(f"{results}: no results for this grid yet (--no-run only summarises what is there)")
    rows = summarise(records, args.n_resamples, args.seed)
    note = f"Settings: {settings_json(args)}; {len(records)} episodes."
    aggregates = aggregate_gains(records, args.n_resamples, args.seed) if len(args.datasets) > 1 else []
    md_path, _ = write_summary(rows, output, note, aggregates)
    if args.plots:
        from benchmarks.plots import plot_all

        plot_all(records, rows, output)
    print(md_path.read_text())
    print(f"written to {output}/", json.dumps(asdict(args)))
    return rows


if __name__ == "__main__":
    run(main, PROG)
