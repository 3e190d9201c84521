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
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.backends import check_backend, map_units
from dus_gym import EPISODE_STEPS
from dus_gym.agent_io import load_policy
from dus_gym.cli import UsageError, fail, json_object, parse_args, run, setting_up
from dus_gym.run import RunConfig

try:
    # The results file and the summary live in their own modules; these names stay importable from here.
    from benchmarks.results_file import RESULTS_FILE, append_record, pending_cells, read_records, record_key
    from benchmarks.summary import (
        REFERENCE_POLICY,
        Row,
        aggregate_gains,
        compact_table,
        summarise,
        write_summary,
    )
except ModuleNotFoundError as err:  # run as a file: sys.path has benchmarks/, not the repository root
    # Another distribution's top-level benchmarks/ folder (torchrl ships one) is a namespace package, found
    # before ours when the file is run as a script: then the module missing is one of ours.
    if err.name is None or not (err.name == "benchmarks" or err.name.startswith("benchmarks.")):
        raise
    fail("benchmarks/compare.py", "run it from the repository root as a module: python -m benchmarks.compare ...")

_record_key = record_key  # the name tests and benchmarks/equivalence.py have used

__all__ = [
    "PROG",
    "REFERENCE_POLICY",
    "RESULTS_FILE",
    "Args",
    "Cell",
    "aggregate_gains",
    "compact_table",
    "append_record",
    "check_policies",
    "main",
    "make_env",
    "make_cells",
    "pending_cells",
    "read_records",
    "run_cell",
    "run_grid",
    "summarise",
    "write_summary",
]

PROG = "python -m benchmarks.compare"


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


# -- backends ---------------------------------------------------------------------


Unit = tuple[Cell, ...]
"""Cells run together: one cell, or the seeds of a grid point as one batched group."""


def make_units(cells: Sequence[Cell], batched: bool = False) -> list[Unit]:
    """One unit per cell, or with ``batched`` one per grid point (same policy, data, method, settings).

    The lookahead oracle always runs cell by cell: it restores snapshots of its own env between
    candidate actions, which a sub-env of a batched vector env cannot do.
    """
    if not batched:
        return [(c,) for c in cells]
    groups: dict[tuple[tuple[str, str, str], str], list[Cell]] = {}
    singles: list[Unit] = []
    for c in cells:
        if c.policy.split(":")[0] == "oracle":
            singles.append((c,))
        else:
            groups.setdefault((c.group, c.settings), []).append(c)
    return [tuple(g) for g in groups.values()] + singles


def _run_named(unit: Unit, threads: int | None) -> list[dict[str, Any]]:
    try:
        return run_group(unit, threads) if len(unit) > 1 else [run_cell(unit[0], threads)]
    except Exception as err:
        keys = [c.key for c in unit]
        raise RuntimeError(f"cell{'s' if len(keys) > 1 else ''} {keys if len(keys) > 1 else keys[0]} failed: "
                           f"{type(err).__name__}: {err}") from err


def execute(
    cells: Sequence[Cell], backend: str = "local", workers: int = 1, threads: int = 1, batched: bool = False
) -> Iterator[dict[str, Any]]:
    """Run ``cells`` on a backend (each grid point's seeds as one batched group with ``batched``);
    yields each record as its episode (or group) finishes, in any order."""
    results = map_units(_run_named, make_units(cells, batched), backend, workers, threads)
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
