"""Learn a residual on the gap rule, across families, by the cross-entropy method (docs/agents.md).

A general closed-loop sampler: :class:`~dus_gym.builtin_policies.ResidualGapPolicy`
plays ``log2 w_j = log2 gap_j + theta . phi_j``, where ``phi_j`` are six
features of modality j read from the observation (its validation accuracy,
training fit, generalisation gap, and each times the episode's progress),
centred over the modalities. ``theta = 0`` is the gap rule, and the search
starts there.

Each generation draws ``population`` values of ``theta`` from a Gaussian,
plays every one of them *and* the gap rule on the same fresh training
instances of every family (one batched vector env per family; every
candidate on the same instance and seed, so they differ only in ``theta``:
a paired baseline), and scores a candidate by its mean gain in final
validation accuracy over the gap rule on the same runs. The Gaussian is
refitted to the best quarter. The learned ``theta`` (the last mean) is
written as a run folder that every tool loads (``"algo": "cem_residual"``):

    python agents/cem_residual.py --seed 0 --output runs/cem_residual/0
    python -m benchmarks.ceiling --families shortcut_timing --output benchmarks/results/ceiling \\
        --no-run --judge runs/cem_residual/0     # its share of the room, on the held-out runs

Writes ``OUTPUT/config.json`` (the policy) and ``OUTPUT/history.json`` (every
generation: candidates, their gains, env steps so far), atomically, after
every generation: a killed search leaves the last finished generation's
policy.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ceiling import play
from dus_gym.builtin_policies import RESIDUAL_FEATURES, ResidualGapPolicy
from dus_gym.cli import parse_args, run, setting_up
from dus_gym.instances import FAMILIES
from dus_gym.run import EPISODE_STEPS

PROG = "python agents/cem_residual.py"
TRAIN_FAMILIES = (
    "shortcut_a", "shortcut_b", "memorization", "complementary", "redundant",
    "shortcut_switch", "memorization_switch", "shortcut_timing", "memorization_timing",
)
"""The synthetic families of the general distribution (the real-data ones cost 5-20x more per run and have no
measured room above the rules)."""


@dataclass
class Args:
    """Learn a residual on the gap rule over several families by CEM, with the gap rule as paired baseline."""

    families: list[str] = field(default_factory=lambda: list(TRAIN_FAMILIES))
    """instance families (dus_gym.instances) to train on; their training instances"""
    population: int = 12
    """candidate thetas per generation (the gap rule is played beside them)"""
    instances: int = 2
    """fresh training instances per family and generation"""
    generations: int = 8
    """CEM generations"""
    elite: float = 0.25
    """fraction of a generation's candidates the next Gaussian is fitted to"""
    init_std: float = 8.0
    """initial standard deviation of each coefficient (log2 weight per unit of feature)"""
    min_std: float = 1.0
    """floor of the standard deviation (keeps the search from collapsing early)"""
    start: str = ""
    """a cem_residual run folder whose theta is the initial mean (default: 0, the gap rule)"""
    worst_weight: float = 0.0
    """fitness = mean gain + worst_weight * min(0, the worst family's mean gain): a candidate that loses on
    one family pays for it beyond its share of the mean"""
    seed: int = 0
    """seed of the search"""
    n_steps: int = EPISODE_STEPS
    """steps (epochs) per episode"""
    output: str = "runs/cem_residual"
    """run folder: config.json (loadable policy), history.json"""
    validation: int = 8
    """training-split instances per family (never searched on) that the learned theta and the gap rule are
    played on afterwards, paired: the validation result that tells seeds apart (0: none)"""
    only_validate: bool = False
    """skip the search: validate the theta already in OUTPUT/config.json"""
    torch_threads: int = 1
    """torch threads (1: the batches share the machine with other work; dus_gym.batched.batch_threads)"""


def generation(args: Args, gen: int, cands: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Play the gap rule and every candidate on fresh training instances of every family.

    Returns each candidate's mean gain over the gap rule in final validation accuracy (fraction) and its
    worst family's mean gain, and the per-family details (validation and test accuracy of the rule and of
    every candidate)."""
    thetas = [np.zeros(len(RESIDUAL_FEATURES)), *cands]
    k = args.instances
    gains, families = [], {}
    for family in args.families:
        first = gen * k  # fresh training instances every generation
        idx = [first + i for _ in thetas for i in range(k)]
        players = [partial(ResidualGapPolicy, theta=t) for t in thetas for _ in range(k)]
        res = play(family, "train", idx, players, n_steps=args.n_steps)
        val = np.array([r["val"] for r in res]).reshape(len(thetas), k)
        test = np.array([r["test"] for r in res]).reshape(len(thetas), k)
        gains.append((val[1:] - val[0]).mean(axis=1))
        families[family] = {"val": val.tolist(), "test": test.tolist()}
    per_family = np.array(gains)  # (families, candidates)
    return per_family.mean(axis=0), per_family.min(axis=0), families


def learn(args: Args) -> None:
    """The search; writes the run folder after every generation."""
    rng = np.random.default_rng(args.seed)
    dim = len(RESIDUAL_FEATURES)
    mean, std = np.zeros(dim), np.full(dim, args.init_std)
    env_steps = 0
    if args.start:  # go on from another search: its theta, and its env steps on the curves' axis
        started = json.loads((Path(args.start) / "config.json").read_text())
        mean, env_steps = np.asarray(started["theta"], dtype=np.float64), int(started["env_steps"])
    history: list[dict[str, Any]] = []
    for gen in range(args.generations):
        start = time.perf_counter()
        cands = [rng.normal(mean, std) for _ in range(args.population)]
        if gen == 0:
            cands[0] = mean.copy()  # the start itself (the rule, by default) is a candidate
        gain, worst, families = generation(args, gen, cands)
        fitness = gain + args.worst_weight * np.minimum(worst, 0.0)
        env_steps += (len(cands) + 1) * args.instances * len(args.families) * args.n_steps
        order = np.argsort(-fitness)
        elite = np.array([cands[i] for i in order[: max(2, round(args.elite * len(cands)))]])
        mean, std = elite.mean(axis=0), np.maximum(elite.std(axis=0), args.min_std)
        history.append({
            "generation": gen, "env_steps": env_steps, "candidates": [c.tolist() for c in cands],
            "gain_over_gap": gain.tolist(), "worst_family_gain": worst.tolist(),
            "fitness": fitness.tolist(), "mean": mean.tolist(), "std": std.tolist(), "families": families,
            "wall_s": time.perf_counter() - start,
        })
        print(f"generation {gen} ({env_steps} env steps, {history[-1]['wall_s']:.0f} s): best gain over "
              f"gap {100 * gain.max():+.2f} points, mean {100 * gain.mean():+.2f}, best fitness "
              f"{100 * fitness.max():+.2f}; new mean theta "
              f"{np.round(mean, 1).tolist()}", flush=True)
        write(Path(args.output), args, mean, history)


VALIDATION_FIRST = 100_000
"""Index of the first validation instance of a family's training set: far past any generation's."""


def validate(args: Args, theta: np.ndarray) -> dict[str, Any]:
    """``theta`` and the gap rule on ``args.validation`` unsearched training instances of every family
    (the same runs for both): per family and overall, the mean gain in final validation and test accuracy
    (percentage points) with a 95% bootstrap interval over the instances."""
    from benchmarks.stats import stratified_bootstrap_ci

    idx = [VALIDATION_FIRST + i for i in range(args.validation)]
    gains: dict[str, dict[str, np.ndarray]] = {}
    for family in args.families:
        players = [partial(ResidualGapPolicy, theta=t) for t in (np.zeros_like(theta), theta) for _ in idx]
        res = play(family, "train", idx + idx, players, n_steps=args.n_steps)
        gains[family] = {key: 100 * (np.array([r[key] for r in res[len(idx):]]) - [r[key] for r in res[: len(idx)]])
                         for key in ("val", "test")}

    def ci(rows: list[np.ndarray]) -> dict[str, float]:
        iv = stratified_bootstrap_ci(rows, "mean", n_resamples=2000, seed=0)
        return {"mean": iv.estimate, "low": iv.low, "high": iv.high}

    out: dict[str, Any] = {"instances_per_family": args.validation, "families": {}}
    for key in ("val", "test"):
        out[f"{key}_gain_over_gap"] = ci([g[key] for g in gains.values()])
        for family, g in gains.items():
            out["families"].setdefault(family, {})[f"{key}_gain_over_gap"] = ci([g[key]])
    return out


def write(folder: Path, args: Args, theta: np.ndarray, history: list[dict[str, Any]]) -> None:
    """The run folder: ``config.json`` (what :func:`dus_gym.agent_io.load_policy` reads) and the history."""
    config = {
        "algo": "cem_residual", "env_id": "DUS-Synthetic-v0", "env_kwargs": {}, "theta": theta.tolist(),
        "features": list(RESIDUAL_FEATURES), "margin": 0.15, "families": list(args.families), "args": asdict(args),
        "env_steps": history[-1]["env_steps"],
    }
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "history.json", history)
    _write_json(folder / "config.json", config)


def _write_json(path: Path, value: Any) -> None:
    """``value`` as JSON at ``path``, atomically: a killed run leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    with setting_up():
        unknown = [f for f in args.families if f not in FAMILIES or f == "seeds"]
        if unknown or not args.families:
            raise ValueError(f"--families {unknown or args.families}: expected names from "
                             f"{[f for f in FAMILIES if f != 'seeds']}")
        for name in ("population", "instances", "generations", "torch_threads"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if not (args.init_std > 0 and args.min_std > 0 and 0 < args.elite <= 1):
            raise ValueError(f"--init-std and --min-std must be > 0 and --elite in (0, 1], got "
                             f"{args.init_std}, {args.min_std}, {args.elite}")
    import torch

    torch.set_num_threads(args.torch_threads)
    if not args.only_validate:
        learn(args)
    if args.validation:
        path = Path(args.output) / "config.json"
        config = json.loads(path.read_text())
        config["validation"] = validate(args, np.asarray(config["theta"], dtype=np.float64))
        v = config["validation"]["val_gain_over_gap"]
        print(f"validation ({args.validation} unsearched training instances per family): gain over gap "
              f"{v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}] points of validation accuracy", flush=True)
        _write_json(path, config)
    print(f"written to {args.output}/config.json")
    return Path(args.output)


if __name__ == "__main__":
    run(main, PROG)
