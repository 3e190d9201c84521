"""Evaluate saved agents and built-in policies on held-out instances.

    python -m agents.evaluate --policies pretrained:dus_v0_ppo uniform fixed:all dus_h --n-episodes 10

Run it from the repository root as a module (it imports ``benchmarks.stats``).
Every policy plays the same ``--n-episodes`` instances, the first ones of the
held-out set (``eval`` by default, the agent's own family set for a family
agent), with the same batch orders: the comparison is paired. A policy is a
run folder (written by ``agents/train.py``), a shipped agent
(``pretrained:NAME``) or a built-in spec (``uniform``, ``random``,
``fixed:W1,W2``, ``dus_h[:LAM]``, ``gap[:MARGIN]``; :func:`dus_gym.agent_io.load_policy`);
``fixed:all`` stands for every fixed ratio of two modalities ``a:b = 2**k``,
``k = -4..4, k != 0``.

Writes one JSON line per episode (policy, instance, final test metrics,
return, the quantities of every step) to ``--output``, and ``summary.json``
beside it: per policy the mean and 95% bootstrap interval of the fused test
accuracy, macro-F1, branch and probe accuracies; and per policy its paired
difference to ``dus_h`` and to the best fixed ratio of each instance
(``uniform`` counts as the ratio 1:1).
Prints the summary as a Markdown table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dus_gym.agent_io import agent_folder, load_policy, policy_label, read_run_config
from dus_gym.cli import fail, json_object, parse_args, run, setting_up
from dus_gym.evaluation import episode_pool
from dus_gym.instances import SET_SIZES, instance_set

try:
    from benchmarks.stats import Interval, stratified_bootstrap_ci
except ModuleNotFoundError as err:  # run as a file: sys.path has agents/, not the repository root
    # "benchmarks.stats" too: another distribution's top-level benchmarks/ folder (torchrl ships one) is a
    # namespace package, found before ours when the file is run as a script.
    if err.name not in ("benchmarks", "benchmarks.stats"):
        raise
    fail("agents/evaluate.py", "run it from the repository root as a module: python -m agents.evaluate ...")

PROG = "python -m agents.evaluate"

FIXED_EXPONENTS = (-4, -3, -2, -1, 1, 2, 3, 4)
"""``fixed:all``: ratios a:b = 2**k (weights 2**(k/2) and 2**(-k/2), inside the default max_ratio 4)."""


@dataclass
class Args:
    """Evaluate saved agents and built-in policies on the same held-out instances."""

    policies: list[str] = field(default_factory=lambda: ["uniform", "dus_h"])
    """run folders, shipped agents (pretrained:NAME) and/or built-in specs (uniform, random, fixed:W1,W2, fixed:all,
    dus_h, dus_h:LAM, gap, gap:MARGIN)"""
    env_id: str | None = None
    """env id; default: the first run folder's, else DUS-v0"""
    env_kwargs: str | None = None
    """JSON object of env keyword arguments; default: the first run folder's, else {}"""
    instances: str | None = None
    """held-out instance set (eval or FAMILY:eval); default: the one matching the first run folder's training set"""
    n_episodes: int = 10
    """episodes per policy: the first this-many instances of the set"""
    seed: int = 0
    """seed of the batch orders (episode k uses sample_seed = seed + k) and of random policies"""
    output: str = "runs/evaluate/episodes.jsonl"
    """JSON-lines file of the episodes (overwritten); summary.json is written next to it"""
    workers: int = 2
    """parallel worker processes (one torch thread each)"""
    summarize_only: bool = False
    """recompute summary.json (and the table) from an existing --output file instead of running episodes"""


def expand_policies(policies: Sequence[str]) -> list[str]:
    """Replace ``fixed:all`` by the fixed ratios of :data:`FIXED_EXPONENTS`."""
    out: list[str] = []
    for p in policies:
        if p == "fixed:all":
            out += [f"fixed:{2 ** (k / 2):.4g},{2 ** (-k / 2):.4g}" for k in FIXED_EXPONENTS]
        else:
            out.append(p)
    return out


def resolve_setting(args: Args) -> tuple[str, dict[str, Any], str]:
    """The env id, env kwargs and held-out instance set: the flags, else the first run folder's, else defaults."""
    runs = [folder for p in args.policies if (folder := agent_folder(p, check=True)) is not None]
    config = read_run_config(runs[0]) if runs else None
    env_id = args.env_id or (config["env_id"] if config else "DUS-v0")
    if args.env_kwargs is not None:
        env_kwargs = json_object(args.env_kwargs, "--env-kwargs")
    else:
        env_kwargs = dict(config["env_kwargs"]) if config else {}
    if args.instances is not None:
        instances = args.instances
    else:
        family, _, _ = str(config.get("train_instances", "train")).rpartition(":") if config else ("", "", "")
        instances = f"{family}:eval" if family else "eval"
    return env_id, env_kwargs, instances


def run_episode(job: dict[str, Any]) -> dict[str, Any]:
    """One episode of one policy on one instance (a module-level function for the process pool).

    The episode itself is :func:`dus_gym.evaluation.run_episode`; this adds the
    policy, the episode index and the final validation metrics (what each
    reward option is the change of; the start is the same for every policy
    of an instance).
    """
    import gymnasium as gym
    import torch

    import dus_gym  # noqa: F401
    from dus_gym.evaluation import run_episode as play

    torch.set_num_threads(1)
    env = gym.make(job["env_id"], **job["env_kwargs"])
    policy = job["policy"]
    record = play(env, load_policy(policy, env, job["seed"]), seed=job["seed"], options={"instance": job["instance"]})
    unwrapped: Any = env.unwrapped
    if record["test"] is None:  # diverged: the broken model's test metrics
        record["test"] = unwrapped.test_metrics()
    val = unwrapped.run.evaluate("val")
    return {
        "policy": policy_label(policy),
        "policy_spec": policy,
        "episode": job["episode"],
        "modalities": list(unwrapped.modalities),
        **record,
        "val_final": {"accuracy": val.accuracy, "f1": val.macro_f1, "loss": val.loss},
        "mean_quantities": np.mean(record["quantities"], axis=0).tolist(),
    }


def interval(values: Sequence[float] | np.ndarray, seed: int = 0) -> Interval:
    """Mean and 95% percentile-bootstrap interval."""
    return stratified_bootstrap_ci([list(values)], statistic="mean", seed=seed)


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per policy: mean [95% interval] of every test metric; paired differences to dus_h and the best fixed ratio."""
    by_policy: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        by_policy.setdefault(r["policy"], {})[r["episode"]] = r
    modalities = records[0]["modalities"]
    episodes = sorted(set.intersection(*(set(v) for v in by_policy.values())))
    # uniform is the 1:1 fixed ratio
    fixed = [p for p in by_policy if p.startswith("fixed:") or p == "uniform"]
    best_fixed = (
        np.max([[by_policy[p][e]["test"]["accuracy"] for e in episodes] for p in fixed], axis=0) if fixed else None
    )
    summary: dict[str, Any] = {"episodes": len(episodes), "modalities": modalities, "policies": {}}
    for p, eps in by_policy.items():
        rows = [eps[e] for e in episodes]
        acc = np.array([r["test"]["accuracy"] for r in rows])
        entry: dict[str, Any] = {
            "accuracy": interval(acc),
            "macro_f1": interval([r["test"]["macro_f1"] for r in rows]),
            "mean_quantities": np.mean([r["mean_quantities"] for r in rows], axis=0).tolist(),
        }
        for m in modalities:
            entry[f"branch_accuracy/{m}"] = interval([r["test"]["branch_accuracy"][m] for r in rows])
            entry[f"probe_accuracy/{m}"] = interval([r["test"]["probe_accuracy"][m] for r in rows])
        if "dus_h" in by_policy:
            ref = np.array([by_policy["dus_h"][e]["test"]["accuracy"] for e in episodes])
            entry["minus_dus_h"] = interval(acc - ref)
        if best_fixed is not None:
            entry["minus_best_fixed"] = interval(acc - best_fixed)
        summary["policies"][p] = {
            k: (
                {"mean": v.estimate, "low": v.low, "high": v.high} if isinstance(v, Interval) else v
            )
            for k, v in entry.items()
        }
    summary["reward_signal"] = reward_signal(by_policy, episodes)
    return summary


def reward_signal(by_policy: dict[str, dict[int, dict[str, Any]]], episodes: Sequence[int]) -> dict[str, Any]:
    """How well each reward option ranks the policies of an instance by their test accuracy.

    The return of an episode under reward option ``r`` is the final minus the
    initial validation metric; the initial one is the same for every policy
    of an instance, so the final one ranks them. Per instance: the Spearman
    correlation, across policies, between that final metric (``-loss`` for
    the loss) and the fused test accuracy; then the mean and 95% interval
    over instances. Needs three or more policies.
    """
    from scipy import stats

    if len(by_policy) < 3 or not all("val_final" in e for eps in by_policy.values() for e in eps.values()):
        return {}
    out: dict[str, Any] = {}
    for metric, sign in (("accuracy", 1.0), ("f1", 1.0), ("loss", -1.0)):
        rhos = []
        for e in episodes:
            val = [sign * by_policy[p][e]["val_final"][metric] for p in by_policy]
            test = [by_policy[p][e]["test"]["accuracy"] for p in by_policy]
            if len(set(val)) > 1 and len(set(test)) > 1:
                rhos.append(float(stats.spearmanr(val, test).statistic))
        if rhos:
            ci = interval(rhos)
            out[metric] = {"mean": ci.estimate, "low": ci.low, "high": ci.high, "instances": len(rhos)}
    return out


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table, accuracies in percent, mean [95% interval]."""

    def fmt(d: dict[str, float] | None) -> str:
        return "-" if d is None else Interval(d["mean"], d["low"], d["high"]).format()

    mods = summary["modalities"]
    cols = ["accuracy", *(f"branch_accuracy/{m}" for m in mods), *(f"probe_accuracy/{m}" for m in mods)]
    cols += ["minus_dus_h", "minus_best_fixed"]
    heads = ["fused test acc", *(f"branch {m}" for m in mods), *(f"probe {m}" for m in mods)]
    heads += ["minus dus_h", "minus best fixed (per instance)"]
    lines = ["| policy | " + " | ".join(heads) + " | mean n_j |", "|---" * (len(heads) + 2) + "|"]
    for p, e in summary["policies"].items():
        q = "/".join(f"{x:.0f}" for x in e["mean_quantities"])
        lines.append(f"| {p} | " + " | ".join(fmt(e.get(c)) for c in cols) + f" | {q} |")
    return "\n".join(lines)


def main(args: Args) -> dict[str, Any]:
    """Run every policy on the same held-out instances; write the episodes and the summary.

    Every flag, policy and run folder is checked before the first episode (a
    bad one raises :class:`dus_gym.cli.UsageError`).
    """
    import gymnasium as gym

    out = Path(args.output)
    with setting_up():
        env_id, env_kwargs, instances = resolve_setting(args)
        if "instances" in env_kwargs:
            raise ValueError("--env-kwargs: the held-out instances come from --instances, not from env_kwargs")
        size = SET_SIZES["eval"] // 2
        if not 1 <= args.n_episodes <= size:
            raise ValueError(
                f"--n-episodes {args.n_episodes}: expected 1 .. {size} (the first half of the {instances!r} set; "
                "agents/train.py monitors on its second half)"
            )
        if not instances.endswith("eval"):
            raise ValueError(f"--instances {instances!r}: evaluation needs a held-out set, 'eval' or 'FAMILY:eval'")
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        held_out = instance_set(instances)[: args.n_episodes]
        policies = expand_policies(args.policies)
        records: list[dict[str, Any]] = []
        if args.summarize_only:
            if not out.is_file():
                raise FileNotFoundError(f"--summarize-only: no episodes file {out} (write one with --output)")
            records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
            if not records:
                raise ValueError(f"--summarize-only: {out} holds no episode")
        else:
            env = gym.make(env_id, **env_kwargs)
            for p in policies:  # an unknown policy or an agent for other spaces fails here, not in a worker
                load_policy(p, env, args.seed)
            env.close()
    jobs = [
        {"env_id": env_id, "env_kwargs": env_kwargs, "policy": p, "episode": k, "instance": inst,
         "seed": args.seed + k}
        for p in policies for k, inst in enumerate(held_out)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        with out.open("w") as f:
            if args.workers > 1:
                with episode_pool(args.workers) as pool:  # its workers end with this process
                    results = list(pool.map(run_episode, jobs))
            else:
                results = [run_episode(j) for j in jobs]
            for r in results:
                f.write(json.dumps(r) + "\n")
                records.append(r)
    summary = summarize(records)
    summary.update(env_id=env_id, env_kwargs=env_kwargs, instances=instances, seed=args.seed)
    (out.parent / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{len(records)} episodes on {args.n_episodes} held-out instances of {instances!r} ({env_id}, {env_kwargs})")
    print(markdown_table(summary))
    for metric, rho in summary["reward_signal"].items():
        print(f"reward {metric}: Spearman(final validation {metric}, test accuracy) across policies = "
              f"{rho['mean']:.2f} [{rho['low']:.2f}, {rho['high']:.2f}] over {rho['instances']} instances")
    return summary


if __name__ == "__main__":
    run(lambda: main(parse_args(Args, prog=PROG)), PROG)
