"""The main job: built-in sampling policies on the built-in digits and the shortcut family.

    python -m dus_gym                 # a few minutes on 2 CPU cores
    python -m dus_gym --seeds 10 --policies uniform dus_h:2

Every policy meets the same instances (seed k gives the same split, model
initialisation and batch order to each policy: the k-th instance of the
held-out ``eval`` set of :mod:`dus_gym.instances`, so the shipped PPO agent
of ``agents/pretrained/dus_v0_ppo``, played on DUS-v0, never trained on
them), and the table reports fused test accuracy, each modality's branch
accuracy and linear-probe accuracy, mean +- standard deviation over the seeds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from tqdm.auto import tqdm

import dus_gym
from dus_gym import cli
from dus_gym.agent_io import load_agent
from dus_gym.evaluation import mean_std, run_episode
from dus_gym.instances import instance_set
from dus_gym.policies import make_policy

PRETRAINED_AGENT = Path(__file__).resolve().parents[1] / "agents" / "pretrained" / "dus_v0_ppo"
"""The shipped PPO sampler for DUS-v0 (agents/train.py; docs/agents.md), in a source checkout."""
AGENT_LABEL = "ppo-agent"


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
    agent: str = str(PRETRAINED_AGENT)
    """run folder of a trained DUS-v0 agent played beside the built-in policies on DUS-v0 ('none' skips it)"""


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``--help`` and flags generated from :class:`Args` (:mod:`dus_gym.cli`)."""
    return cli.parse_args(Args, argv, description=__doc__, prog="python -m dus_gym")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # small models: one thread is fastest and reproducible
    cells = [(env_id, policy) for env_id in args.env_ids for policy in args.policies]
    # Every policy meets the same held-out instances (the 'eval' set): the agent never trained on them.
    held_out = instance_set("eval", args.seeds)
    agent_dir = Path(args.agent)
    if args.agent != "none" and "DUS-v0" in args.env_ids:
        if not (agent_dir / "model.zip").is_file():
            print(f"no trained agent in {agent_dir} (agents/train.py writes one); skipping it", file=sys.stderr)
        elif args.n_steps != 30 or args.method != "joint":
            print("the pretrained agent plays DUS-v0 with 30 epochs, joint training; skipping it", file=sys.stderr)
        else:
            cells.insert(max(k for k, c in enumerate(cells) if c[0] == "DUS-v0") + 1, ("DUS-v0", AGENT_LABEL))
    records: list[dict[str, Any]] = []
    with tqdm(total=len(cells) * args.seeds, desc="episodes", unit="ep") as bar:
        for env_id, spec in cells:
            env = gym.make(env_id, n_steps=args.n_steps, method=args.method, device=args.device)
            policy: Any = load_agent(agent_dir) if spec == AGENT_LABEL else make_policy(spec, env, seed=0)
            for seed in range(args.seeds):
                bar.set_postfix_str(f"{env_id} {spec} seed {seed}")
                record = run_episode(env, policy, seed=seed, options={"instance": held_out[seed]})
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
