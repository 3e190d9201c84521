"""The main job: built-in sampling policies on the built-in digits and the shortcut family.

    python -m dus_gym                 # a few minutes on 2 CPU cores
    python -m dus_gym --seeds 10 --policies uniform dus_h:2

Every policy meets the same instances (seed k gives the same split, model
initialisation and batch order to each policy), and the table reports fused
test accuracy, each modality's branch accuracy and linear-probe accuracy,
mean +- standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import gymnasium as gym
import torch
from tqdm.auto import tqdm

import dus_gym
from dus_gym.evaluation import mean_std, run_episode
from dus_gym.policies import make_policy


@dataclass
class Args:
    env_ids: list[str] = field(default_factory=lambda: list(dus_gym.ENV_IDS))
    """environment ids: DUS-v0 (digits, views pix and zer) and DUS-Synthetic-v0 (shortcut family)"""
    policies: list[str] = field(default_factory=lambda: ["uniform", "fixed:1,2", "fixed:2,1", "dus_h"])
    """built-in policies: uniform, random, fixed:W1,W2 (the first modality is the dominant one), dus_h[:LAM]"""
    seeds: int = 5
    """instances per cell (seeds 0 .. seeds-1), shared by all policies"""
    n_steps: int = 30
    """epochs per episode"""
    method: str = "joint"
    """multimodal method: joint or mla"""
    device: str = "auto"
    """torch device: auto (CUDA if present), cpu, cuda"""
    json_out: str | None = None
    """also write every episode's record to this JSON file"""


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(
        prog="python -m dus_gym", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    docs = _field_docs()
    for f in fields(Args):
        default = f.default_factory() if callable(f.default_factory) else f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, list):
            parser.add_argument(flag, nargs="+", default=default, help=f"{docs[f.name]} (default: %(default)s)")
        else:
            kind = int if isinstance(default, int) else str
            parser.add_argument(flag, type=kind, default=default, help=f"{docs[f.name]} (default: %(default)s)")
    return Args(**vars(parser.parse_args(argv)))


def _field_docs() -> dict[str, str]:
    """The docstring under each Args field, read from the source (as CleanRL's tyro does)."""
    import ast
    import inspect
    import itertools

    tree = ast.parse(inspect.getsource(Args))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in itertools.pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = str(nxt.value.value)  # type: ignore[union-attr]
    return docs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # small models: one thread is fastest and reproducible
    cells = [(env_id, policy) for env_id in args.env_ids for policy in args.policies]
    records: list[dict[str, Any]] = []
    with tqdm(total=len(cells) * args.seeds, desc="episodes", unit="ep") as bar:
        for env_id, spec in cells:
            env = gym.make(env_id, n_steps=args.n_steps, method=args.method, device=args.device)
            policy = make_policy(spec, env, seed=0)
            for seed in range(args.seeds):
                bar.set_postfix_str(f"{env_id} {spec} seed {seed}")
                record = run_episode(env, policy, seed=seed)
                records.append({"env_id": env_id, "policy": spec, "seed": seed, **record})
                bar.update()
            env.close()
    print_table(records)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(records, f, indent=1)
    return 0


def print_table(records: list[dict[str, Any]]) -> None:
    """One row per (env, policy): fused test accuracy, branch and probe accuracy per modality."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["env_id"], r["policy"]), []).append(r)
    header_for = None
    for (env_id, policy), rs in groups.items():
        done = [r["test"] for r in rs if r["test"] is not None]
        if len(done) < len(rs):
            print(f"{env_id:18} {policy:12} {len(rs) - len(done)} of {len(rs)} runs diverged")
        if not done:
            continue
        names = list(done[0]["branch_accuracy"])
        cols = [("fused", [t["accuracy"] for t in done])]
        cols += [(f"branch {m}", [t["branch_accuracy"][m] for t in done]) for m in names]
        cols += [(f"probe {m}", [t["probe_accuracy"][m] for t in done]) for m in names]
        if header_for != env_id:
            header_for = env_id
            print(f"\n{env_id} ({len(done)} seeds, test accuracy %, mean +- std)")
            print(f"{'policy':12} " + " ".join(f"{c:>14}" for c, _ in cols))
        cells = []
        for _, values in cols:
            mean, std = mean_std(values)
            cells.append(f"{100 * mean:7.1f} +-{100 * std:4.1f}")
        print(f"{policy:12} " + " ".join(f"{c:>14}" for c in cells))
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
