"""The main job: built-in sampling policies on every registered env id (the digits, the shortcut family,
the audio-visual digits and AV-MNIST).

    python -m dus_gym                 # about 8 minutes on 2 CPU cores
    python -m dus_gym --seeds 10 --policies uniform dus_h:2
    python -m dus_gym --workers 1     # every episode in this process, one after the other

Every policy meets the same instances (seed k gives the same split, model
initialisation and batch order to each policy: the k-th instance of the
held-out ``eval`` set of :mod:`dus_gym.instances`, so the shipped PPO agent
``pretrained:dus_v0_ppo`` (in ``dus_gym/pretrained/``), played on DUS-v0,
and the sampler trained across instance families, ``pretrained:general_ppo``,
played on every env id, never trained on them), and the table reports fused test accuracy, each
modality's branch accuracy and linear-probe accuracy, mean +- standard
deviation over the seeds. A bad flag, policy or env id is one error line and
exit status 2.

The episodes run in ``--workers`` processes (default: two, or one on a
one-core machine), each with one torch thread: an episode's record depends
only on its env, policy and seed, so the table is the same with any number of
workers (the records of one-thread CPU runs, bit for bit). A policy that draws
(``random``) is seeded with its episode's seed, so its actions do not depend
on which episodes the same process played before.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch
from tqdm.auto import tqdm

import dus_gym
from dus_gym import cli
from dus_gym.agent_io import (
    MODEL_FILE,
    PRETRAINED_PREFIX,
    agent_folder,
    load_policy,
    pretrained_agents,
    read_run_config,
    setting_differences,
)
from dus_gym.evaluation import episode_pool, mean_std, run_episode
from dus_gym.instances import instance_set

PROG = "python -m dus_gym"
DEFAULT_AGENT = "pretrained:dus_v0_ppo"
"""The shipped PPO sampler for DUS-v0 (agents/train.py; docs/agents.md), package data of dus_gym."""
AGENT_ENV = "DUS-v0"
AGENT_LABEL = "ppo-agent"
DEFAULT_GENERAL_AGENT = "pretrained:general_ppo"
"""The shipped sampler trained across instance families (docs/agents.md), played on every env id."""
GENERAL_LABEL = "general-ppo"


@dataclass
class Args:
    env_ids: list[str] = field(default_factory=lambda: list(dus_gym.ENV_IDS))
    """environment ids: DUS-v0 (digits, views pix and zer), DUS-Synthetic-v0 (shortcut family),
    DUS-AVDigits-v0 (spoken + 8 x 8 handwritten digits), DUS-AVMNIST-v0 (spoken + PCA-reduced MNIST digits)"""
    policies: list[str] = field(default_factory=lambda: ["uniform", "fixed:1,2", "fixed:2,1", "dus_h", "gap"])
    """built-in policies: uniform, random, fixed:W1,W2 (the first modality is the dominant one), dus_h[:LAM],
    gap[:MARGIN]"""
    seeds: int = 5
    """instances per cell (seeds 0 .. seeds-1), shared by all policies"""
    n_steps: int = dus_gym.EPISODE_STEPS
    """epochs per episode"""
    method: str = "joint"
    """multimodal method: joint or mla"""
    device: str = "auto"
    """torch device: auto (CUDA if present), cpu, cuda"""
    json_out: str | None = None
    """also write every episode's record to this JSON file"""
    agent: str = DEFAULT_AGENT
    """trained agent played beside the built-in policies on DUS-v0 when it was trained on the job's setting:
    pretrained:NAME (a shipped agent) or a run folder ('none' skips it)"""
    general_agent: str = DEFAULT_GENERAL_AGENT
    """agent trained across instance families, played on every env id of the job when its setting (episode
    length, method, ...) is the job's: pretrained:NAME or a run folder ('none' skips it)"""
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    """processes playing episodes in parallel, one torch thread each (1: all in this process); the records
    are the same with any number"""


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``--help`` and flags generated from :class:`Args` (:mod:`dus_gym.cli`)."""
    return cli.parse_args(Args, argv, description=__doc__, prog=PROG)


def env_kwargs(args: Args) -> dict[str, Any]:
    """The keyword arguments of every env of the job."""
    return {"n_steps": args.n_steps, "method": args.method, "device": args.device}


def agent_spec(args: Args) -> str | None:
    """The agent to play on DUS-v0, or None when the job leaves it out (saying why on stderr).

    It is left out when the job plays no DUS-v0, with ``--agent none``, when
    the default agent is missing (an install without its package data), and
    when the agent was trained on another setting than the job's (episode
    length, method, ...): it would be judged on runs it never learnt to steer.
    A missing or broken ``--agent`` given on purpose is an error.
    """
    if AGENT_ENV not in args.env_ids:
        return None
    return _playable(args.agent, DEFAULT_AGENT, "--agent", AGENT_ENV, args)


def general_agent_spec(args: Args, env_id: str) -> str | None:
    """The general agent to play on ``env_id``, or None (saying why on stderr), as :func:`agent_spec` decides."""
    return _playable(args.general_agent, DEFAULT_GENERAL_AGENT, "--general-agent", env_id, args)


def _playable(spec: str, default_spec: str, flag: str, env_id: str, args: Args) -> str | None:
    if spec == "none":
        return None
    default = spec == default_spec
    folder = agent_folder(spec, check=not default)  # a pretrained:NAME given on purpose must exist
    if folder is None:
        shipped = ", ".join(PRETRAINED_PREFIX + name for name in pretrained_agents()) or "none"
        raise cli.UsageError(f"{flag} {spec!r}: expected a run folder, pretrained:NAME (shipped: {shipped}) or none")
    if default and not (folder / MODEL_FILE).is_file():
        print(f"No trained agent in {folder}; skipping it", file=sys.stderr)
        return None
    differences = setting_differences(read_run_config(folder), env_id, env_kwargs(args))
    if differences:
        what = ", ".join(f"{k} {trained!r} (this job: {here!r})" for k, (trained, here) in differences.items())
        print(f"the agent in {folder} was trained with {what}; skipping it on {env_id}", file=sys.stderr)
        return None
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job and print its table; returns 0. A bad flag or name exits with status 2 and one line."""
    args = parse_args(argv)
    with cli.usage_errors(PROG):
        return play(args)


def play(args: Args) -> int:
    """Every (env, policy) cell on the same held-out instances, then the table (and ``--json-out``)."""
    torch.set_num_threads(1)  # small models: one thread is fastest and reproducible
    if args.workers < 1:
        raise cli.UsageError(f"--workers {args.workers}: expected at least 1")
    # Everything that can be misnamed is built before the first episode, so a typo costs no run.
    with cli.setting_up():
        # Every policy meets the same held-out instances (the 'eval' set): the agent never trained on them.
        held_out = instance_set("eval", args.seeds)
        cells: list[tuple[str, str, str]] = []  # (env id, label, policy spec)
        for env_id in args.env_ids:
            for spec in args.policies:
                load_policy(spec, gym.make(env_id, **env_kwargs(args)), seed=0)
                cells.append((env_id, spec, spec))
        agents = [(AGENT_ENV, AGENT_LABEL, agent_spec(args))]
        agents += [(env_id, GENERAL_LABEL, general_agent_spec(args, env_id)) for env_id in args.env_ids]
        for env_id, label, agent in agents:
            if agent is None:
                continue
            load_policy(agent, gym.make(env_id, **env_kwargs(args)))
            last = max(k for k, cell in enumerate(cells) if cell[0] == env_id)
            cells.insert(last + 1, (env_id, label, agent))
    episodes = [(env_id, spec, env_kwargs(args), seed, held_out[seed])
                for env_id, _, spec in cells for seed in range(args.seeds)]
    labels = [(env_id, label, seed) for env_id, label, _ in cells for seed in range(args.seeds)]
    results: list[dict[str, Any] | None] = [None] * len(episodes)
    with tqdm(total=len(episodes), desc="episodes", unit="ep") as bar:
        if args.workers == 1:
            for k, episode in enumerate(episodes):
                bar.set_postfix_str(f"{episode[0]} {labels[k][1]} seed {episode[3]}")
                results[k] = play_episode(*episode)
                bar.update()
        else:
            # Workers that end with this process, one torch thread each (dus_gym.evaluation.episode_pool).
            with episode_pool(min(args.workers, len(episodes))) as pool:
                futures = {pool.submit(play_episode, *episode): k for k, episode in enumerate(episodes)}
                for future in as_completed(futures):
                    k = futures[future]
                    results[k] = future.result()
                    bar.set_postfix_str(f"{labels[k][0]} {labels[k][1]} seed {labels[k][2]} done")
                    bar.update()
    records = [{"env_id": env_id, "policy": label, "seed": seed, **result}
               for (env_id, label, seed), result in zip(labels, results) if result is not None]
    print_table(records)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(records, f, indent=1)
    return 0


_PLAYERS: dict[tuple[str, str, str], tuple[gym.Env[Any, Any], Any]] = {}
"""The env and policy of each (env id, policy spec, env kwargs) this process has played: built once."""


def play_episode(env_id: str, spec: str, kwargs: dict[str, Any], seed: int, instance: Any) -> dict[str, Any]:
    """One episode of ``spec`` on ``env_id`` from ``seed`` on the held-out ``instance`` (its record).

    The env and a deterministic policy are built once per process and reused;
    a ``random`` policy is seeded with ``seed``, so the record is the same
    whichever process plays it and whatever it played before.
    """
    torch.set_num_threads(1)
    key = (env_id, spec, json.dumps(kwargs, sort_keys=True))
    if key not in _PLAYERS:
        env = gym.make(env_id, **kwargs)
        _PLAYERS[key] = (env, load_policy(spec, env, seed=0))
    env, policy = _PLAYERS[key]
    if spec.split(":")[0] == "random":
        policy = load_policy(spec, env, seed=seed)
    return run_episode(env, policy, seed=seed, options={"instance": instance})


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
