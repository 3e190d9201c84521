"""Learn one open-loop sampling schedule per family by the cross-entropy method (docs/agents.md).

The simplest learned sampler that can take the room ``benchmarks.ceiling``
measures: a K-segment schedule (one discrete action per segment, as in the
ceiling search) shared by every instance of a family, learned on the family's
**training** instances (objective: mean final validation accuracy over the
instances of a generation, each candidate played on the same instances and
seeds) and judged on its **held-out** instances, on the very runs the ceiling
and the rules were played on (instance k from seed k), so the comparison is
paired. It reads only the episode's progress, never the run's state: what it
captures is the part of the room a fixed timing can take.

    python agents/cem_schedule.py --family shortcut_switch --seed 0 --output runs/cem/shortcut_switch-0
    python -m benchmarks.ceiling ...   # the ceiling and rules on the same held-out runs

Writes ``OUTPUT/schedule.json`` (the schedule, its search history and its
held-out results), atomically, at the end.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ceiling import SchedulePolicy, action_grid, play
from dus_gym.cli import parse_args, run, setting_up
from dus_gym.instances import FAMILIES
from dus_gym.run import EPISODE_STEPS

PROG = "python agents/cem_schedule.py"


@dataclass
class Args:
    """Learn one K-segment schedule for a family's instances by CEM; judge it on held-out instances."""

    family: str = "shortcut_switch"
    """instance family (dus_gym.instances)"""
    segments: int = 3
    """K segments of equal length, one action each"""
    population: int = 12
    """candidate schedules per generation"""
    instances: int = 4
    """training instances per generation (fresh ones each generation)"""
    generations: int = 4
    """CEM generations (each one batched episode of population x instances runs)"""
    elite: float = 0.25
    """fraction of a generation's candidates the next one is fitted to"""
    eval_instances: int = 20
    """held-out instances the learned schedule is judged on (the first k of FAMILY:eval, seed k)"""
    seed: int = 0
    """seed of the search"""
    n_steps: int = EPISODE_STEPS
    """steps (epochs) per episode"""
    output: str = "runs/cem"
    """folder for schedule.json"""
    torch_threads: int = 1
    """torch threads (1: the batches share the machine with other work; dus_gym.batched.batch_threads)"""


def learn(args: Args) -> dict[str, Any]:
    """The CEM search on training instances, then the held-out judgement; JSON-ready."""
    levels, modalities = action_grid(args.family)
    shape = (args.segments, len(modalities))
    rng = np.random.default_rng(args.seed)
    mid = (levels - 1) / 2
    mean, std = np.full(shape, mid), np.full(shape, levels / 3)
    history = []
    for gen in range(args.generations):
        start = time.perf_counter()
        cands = [np.clip(np.rint(rng.normal(mean, std)), 0, levels - 1).astype(np.int64)
                 for _ in range(args.population)]
        if gen == 0:
            cands[0] = np.full(shape, int(mid))  # uniform is always a candidate
        first = gen * args.instances  # fresh training instances every generation
        idx = [first + i for _ in cands for i in range(args.instances)]
        players = [partial(SchedulePolicy, c, args.n_steps) for c in cands for _ in range(args.instances)]
        res = play(args.family, "train", idx, players, n_steps=args.n_steps)
        val = np.array([r["val"] for r in res]).reshape(len(cands), args.instances).mean(axis=1)
        order = np.argsort(-val)
        elite = np.array([cands[i] for i in order[: max(2, round(args.elite * len(cands)))]], dtype=np.float64)
        mean, std = elite.mean(axis=0), np.maximum(elite.std(axis=0), 0.5)
        history.append({"generation": gen, "val": val.tolist(), "candidates": [c.tolist() for c in cands],
                        "wall_s": time.perf_counter() - start})
        print(f"generation {gen}: best mean val {100 * val.max():.1f}% {cands[order[0]].tolist()}, "
              f"mean over candidates {100 * val.mean():.1f}% ({history[-1]['wall_s']:.0f} s)", flush=True)
    schedule = np.clip(np.rint(mean), 0, levels - 1).astype(np.int64)
    players = [partial(SchedulePolicy, schedule, args.n_steps)] * args.eval_instances
    held_out = play(args.family, "eval", list(range(args.eval_instances)), players, n_steps=args.n_steps)
    print(f"learned schedule {schedule.tolist()}: held-out test "
          f"{100 * np.mean([r['test'] for r in held_out]):.1f}% over {args.eval_instances} instances")
    return {"args": asdict(args), "schedule": schedule.tolist(), "history": history, "held_out": held_out}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    with setting_up():
        if args.family not in FAMILIES or args.family == "seeds":
            raise ValueError(f"--family {args.family!r}: expected one of {[f for f in FAMILIES if f != 'seeds']}")
        for name in ("segments", "population", "instances", "generations", "eval_instances", "torch_threads"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    import torch

    torch.set_num_threads(args.torch_threads)
    out = learn(args)
    path = Path(args.output)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / ".schedule.json.tmp"
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path / "schedule.json")
    print(f"written to {path / 'schedule.json'}")
    return out


if __name__ == "__main__":
    run(main, PROG)
