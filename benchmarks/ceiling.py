"""How much room is there above the rules? A schedule search per held-out instance (docs/benchmarks.md).

For each held-out instance of a family (the k-th instance of ``FAMILY:eval``,
reset with seed k: exactly the episode ``benchmarks.compare`` plays for
``family:FAMILY`` and seed k), a cross-entropy-method (CEM) search over
open-loop sampling schedules, each the same training run under another
schedule:

- a **schedule** is piecewise constant: the episode's steps are cut into K
  equal segments and each segment has one discrete action (a level per
  modality, the env's own action grid);
- generation 0 plays the rules (uniform, DUS-H, gap), the constant ratios of
  :data:`CONSTANT_RATIOS` and random schedules; every later generation draws
  schedules from a Gaussian over levels fitted to the elite (best on
  **validation**) of everything played so far;
- every generation is one batched vector env (:class:`~dus_gym.envs.DUSVectorEnv`)
  whose sub-envs all run the instance from the same seed, so candidates differ
  only in their schedule (same data, initialisation and batch order).

Reported per instance: the **ceiling** (the test accuracy of the schedule or
rule with the best final validation accuracy: what a search that may only
look at validation attains), the **optimistic bound** (the best test accuracy
of any schedule or rule played: an upper reference, chosen on test), and each
rule's and agent's test accuracy on the same run. ``python -m benchmarks.ceiling`` then prints, per
family, ceiling - best rule with a paired 95% bootstrap interval over the
instances, and each policy's normalised score
``(policy - uniform) / (ceiling - uniform)``.

    python -m benchmarks.ceiling --families shortcut_a late_shortcut --instances 20
    python -m benchmarks.ceiling --no-run --output benchmarks/results/ceiling   # summary only
    # an agent trained since, on the very runs searched (no new search; judged.jsonl)
    python -m benchmarks.ceiling --families shortcut_switch --output benchmarks/results/ceiling \
        --judge runs/MY_AGENT

Results are appended to ``OUTPUT/ceiling.jsonl`` one instance at a time
(atomic lines); a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.backends import check_backend, map_units
from benchmarks.ceiling_summary import is_rule, markdown, overall, pick, summarise
from benchmarks.results_file import append_record, read_records
from dus_gym.cli import UsageError, parse_args, run, setting_up
from dus_gym.instances import GENERAL_FAMILIES, family_env_kwargs, instance_set
from dus_gym.run import EPISODE_STEPS

__all__ = ["Args", "SchedulePolicy", "action_grid", "main", "overall", "pick", "play", "search_instance", "summarise"]

PROG = "python -m benchmarks.ceiling"
RESULTS_FILE = "ceiling.jsonl"
JUDGED_FILE = "judged.jsonl"
RULES = ("uniform", "dus_h", "gap", "pretrained:general_ppo")
"""Closed-loop policies played beside the schedules in generation 0 (the shipped agent included, so that
its normalised score is measured on the same runs)."""
CONSTANT_RATIOS = (-4, -2, 2, 4)
"""Constant schedules of generation 0, as level differences (first modality minus the others): with the
default 9 levels a difference of 2 is a ratio of 2 (fixed:2,1), 4 a ratio of 4."""


@dataclass
class Args:
    """Search sampling schedules per held-out instance: the ceiling above the rules."""

    families: list[str] = field(default_factory=lambda: list(GENERAL_FAMILIES))
    """families of dus_gym.instances (their held-out instances)"""
    instances: int = 20
    """held-out instances per family (the first k of FAMILY:eval; seed k plays instance k)"""
    segments: int = 3
    """K: a schedule is K equal segments of the episode, one action each"""
    population: int = 16
    """schedules per generation (generation 0 includes the rules and constant ratios)"""
    generations: int = 3
    """CEM generations; each is one batched episode of `population` runs"""
    elite: float = 0.25
    """fraction of everything played so far (best on validation) that the next generation is fitted to"""
    method: str = "joint"
    """multimodal training method (joint, mla, ogm_ge)"""
    n_steps: int = EPISODE_STEPS
    """steps (epochs) per episode"""
    rules: list[str] = field(default_factory=lambda: list(RULES))
    """closed-loop policies played on the same runs (built-ins, pretrained:NAME, run folders)"""
    search_seed: int = 0
    """seed of the schedule search (the runs' seeds are the instances')"""
    output: str = "benchmarks/results/ceiling"
    """output folder: ceiling.jsonl (one line per instance), ceiling.md, ceiling.json"""
    backend: str = "local"
    """local (serial or a process pool) or ray"""
    workers: int = 1
    """local backend: parallel worker processes, one instance each"""
    torch_threads: int = 1
    """torch threads per worker"""
    n_resamples: int = 2000
    """bootstrap resamples of each interval"""
    judge: list[str] = field(default_factory=list)
    """agents (run folders, pretrained:NAME) to play on the searched instances afterwards, without searching
    again: paired with the ceiling and the rules on the same runs (judged.jsonl)"""
    run: bool = True
    """run the missing instances (--no-run only summarises)"""
    progress: bool = True
    """show a progress bar over instances"""


class SchedulePolicy:
    """An open-loop schedule with SB3's ``predict``: action ``actions[k]`` during segment k of ``n_steps``.

    Args:
        actions: ``(K, M)`` discrete actions (levels), segment by segment.
        n_steps: steps of the episode; segment ``k`` covers steps
            ``[k * n_steps // K, (k + 1) * n_steps // K)``.
        env: unused (built-in policies take their env in the same place).
    """

    def __init__(self, actions: np.ndarray, n_steps: int, env: Any = None) -> None:
        self.actions = np.asarray(actions, dtype=np.int64)
        if self.actions.ndim != 2 or len(self.actions) > n_steps:
            raise ValueError(f"SchedulePolicy: actions of shape {self.actions.shape}; expected (K, M), K <= {n_steps}")
        k = len(self.actions)
        self.segment = np.array([t * k // n_steps for t in range(n_steps)])

    def predict(
        self, observation: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        # The step count is the policy's state (SB3's recurrent-state slot); it restarts with the episode.
        step = 0 if state is None or (episode_start is not None and bool(np.asarray(episode_start).any())) else state
        return self.actions[self.segment[min(step, len(self.segment) - 1)]].copy(), step + 1


def _settings(args: Args) -> dict[str, Any]:
    keys = ("segments", "population", "generations", "elite", "method", "n_steps", "search_seed", "rules")
    return {k: getattr(args, k) for k in keys}


def _venv(family: str, method: str, n_steps: int, num_envs: int) -> Any:
    from gymnasium.vector import AutoresetMode

    from dus_gym.envs import DUSVectorEnv

    kwargs = family_env_kwargs(family, "eval")
    kwargs.pop("instances")  # every sub-env resets with the searched instance
    # No linear probes: the search reads only the fused accuracy, and they cost ~40% of a synthetic episode.
    # torch's own thread count (--torch-threads sets it, 1 by default), not one per 8 runs: a search
    # shares its machine with other workers, and threads beyond the free cores wait for each other
    # (4-17x slower, dus_gym.batched.batch_threads).
    return DUSVectorEnv(
        num_envs, autoreset_mode=AutoresetMode.SAME_STEP, method=method, n_steps=n_steps, test_probe=False,
        run_config={"threads": None}, **kwargs,
    )


def action_grid(family: str) -> tuple[int, list[str]]:
    """The discrete levels per modality and the modality names of a family's env (what a schedule's
    ``(K, M)`` actions index)."""
    env = _venv(family, "joint", EPISODE_STEPS, 1).envs[0]
    return env.rule.levels, list(env.modalities)


def play(
    family: str,
    split: str,
    indices: Sequence[int],
    players: Sequence[Callable[[Any], Any]],
    method: str = "joint",
    n_steps: int = EPISODE_STEPS,
) -> list[dict[str, float]]:
    """One batched episode: sub-env i runs instance ``indices[i]`` of ``FAMILY:split`` from seed
    ``indices[i]`` (as ``benchmarks.compare`` runs ``family:FAMILY`` seed k), played by
    ``players[i](its env)``; the final fused validation and test accuracy of each."""
    from dus_gym.evaluation import run_episodes_batched

    instances = instance_set(f"{family}:{split}", max(indices) + 1)
    venv = _venv(family, method, n_steps, len(players))
    policies = [make(env) for make, env in zip(players, venv.envs)]
    records = run_episodes_batched(venv, policies, list(indices), {"instance": [instances[i] for i in indices]})
    out = []
    for r in records:
        test = r["test"] or {}
        out.append({
            "val": float(r["val_accuracy"][-1]), "test": float(test.get("accuracy", float("nan"))),
            "diverged": bool(r["diverged"]),
        })
    return out


def constant_label(diff: int) -> str:
    """The ``fixed:`` spec of a constant level difference on the default grid (levels sqrt(2) apart)."""
    ratio = 2.0 ** (abs(diff) / 2)
    r = f"{ratio:g}"
    return f"fixed:{r},1" if diff > 0 else f"fixed:1,{r}"


def search_instance(family: str, index: int, settings: dict[str, Any]) -> dict[str, Any]:
    """The CEM schedule search on one held-out instance (module docstring); one JSON-ready record."""
    from dus_gym.agent_io import load_policy

    start = time.perf_counter()
    n_levels, modalities = action_grid(family)
    m, k = len(modalities), settings["segments"]
    mid = (n_levels - 1) // 2
    rng = np.random.default_rng([settings["search_seed"], index, sum(map(ord, family))])
    pop = settings["population"]

    def constant(diff: int) -> np.ndarray:
        a = np.full(m, mid)
        a[0] = mid + diff // 2 + diff % 2
        a[1:] = mid - diff // 2
        return np.clip(np.tile(a, (k, 1)), 0, n_levels - 1)

    played: list[dict[str, Any]] = []
    rules: dict[str, dict[str, float]] = {}
    mean, std = np.full((k, m), float(mid)), np.full((k, m), n_levels / 3)
    for gen in range(settings["generations"]):
        specs = list(settings["rules"]) if gen == 0 else []
        schedules = [constant(d) for d in CONSTANT_RATIOS] if gen == 0 and m == 2 else []
        while len(schedules) < pop - len(specs):
            schedules.append(np.clip(np.rint(rng.normal(mean, std)), 0, n_levels - 1).astype(np.int64))
        players: list[Callable[[Any], Any]] = [partial(load_policy, spec, seed=index) for spec in specs]
        players += [partial(SchedulePolicy, s, settings["n_steps"]) for s in schedules]
        results = play(family, "eval", [index] * len(players), players, settings["method"], settings["n_steps"])
        for spec, res in zip(specs, results):
            rules[spec] = res
        for s, res in zip(schedules, results[len(specs):]):
            played.append({"actions": s.tolist(), "generation": gen, **res})
        if gen == 0 and m == 2:
            for d, res in zip(CONSTANT_RATIOS, results[len(specs):]):
                rules[constant_label(d)] = res
        ok = [p for p in played if not p["diverged"]]
        elite = sorted(ok, key=lambda p: -p["val"])[: max(2, round(settings["elite"] * len(ok)))]
        levels = np.array([p["actions"] for p in elite], dtype=np.float64)
        mean, std = levels.mean(axis=0), np.maximum(levels.std(axis=0), 0.5)
    record = {"played": played, "rules": rules}
    chosen, best = pick(record, "val"), pick(record, "test")
    return {
        "family": family, "index": index, "instance": instance_set(f"{family}:eval", index + 1)[index],
        "modalities": modalities, "settings": settings, "rules": rules,
        "ceiling": chosen, "best_on_test": best,
        "played": played, "wall_s": time.perf_counter() - start,
    }


# -- running ----------------------------------------------------------------------


Unit = tuple[str, int]
"""One instance: (family, index)."""


def _search_unit(unit: Unit, threads: int | None, settings: dict[str, Any]) -> dict[str, Any]:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return search_instance(unit[0], unit[1], settings)
    except Exception as err:
        raise RuntimeError(f"instance {unit[1]} of {unit[0]} failed: {type(err).__name__}: {err}") from err


def execute(units: Sequence[Unit], settings: dict[str, Any], backend: str = "local", workers: int = 1,
            threads: int = 1) -> Iterator[dict[str, Any]]:
    """Search ``units`` on a backend (:mod:`benchmarks.backends`, as ``benchmarks.compare`` runs its
    cells); yields each instance's record as it finishes, in any order."""
    return map_units(partial(_search_unit, settings=settings), units, backend, workers, threads)


def pending(units: Sequence[Unit], records: Sequence[dict[str, Any]], settings: dict[str, Any], path: Path
            ) -> list[Unit]:
    """The instances with no record yet; a record searched with other settings is an error (not mixed)."""
    done = {(r["family"], int(r["index"])): r for r in records}
    for unit in units:
        if unit in done and done[unit]["settings"] != settings:
            raise UsageError(
                f"{path}: instance {unit[1]} of {unit[0]} was searched with settings {done[unit]['settings']}, "
                f"this run asks for {settings}; use another --output (or the same settings)"
            )
    return [u for u in units if u not in done]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Search the missing instances, then write and print the summary; returns its rows."""
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    output = Path(args.output)
    path = output / RESULTS_FILE
    settings = _settings(args)
    with setting_up():
        unknown = [f for f in args.families if f not in GENERAL_FAMILIES and f not in _families()]
        if unknown:
            raise ValueError(f"--families: unknown {unknown}; valid: {_families()}")
        check_backend(args.backend, args.workers)
        for name, lo in (("instances", 1), ("segments", 1), ("population", len(args.rules) + 2),
                         ("generations", 1)):
            if getattr(args, name) < lo:
                raise ValueError(f"--{name} must be >= {lo}, got {getattr(args, name)}")
        rules_judged = [spec for spec in args.judge if is_rule(spec)]
        if rules_judged:
            raise ValueError(f"--judge {rules_judged}: the rules are played in every search already; judge agents")
        if not 0 < args.elite <= 1:
            raise ValueError(f"--elite must lie in (0, 1], got {args.elite}")
        # instance-major: a run cut short has the first instances of every family, not all of one
        units = [(f, i) for i in range(args.instances) for f in args.families]
        records = read_records(path)
        todo = pending(units, records, settings, path)
    if args.run and todo:
        from tqdm.auto import tqdm

        output.mkdir(parents=True, exist_ok=True)
        with tqdm(total=len(units), initial=len(units) - len(todo), desc="instances", disable=not args.progress) as bar:
            for record in execute(todo, settings, args.backend, args.workers, args.torch_threads):
                append_record(path, record)
                bar.update()
        records = read_records(path)
    wanted = set(units)
    # in the order of --families, whatever order the instances were searched in
    records = sorted((r for r in records if (r["family"], int(r["index"])) in wanted),
                     key=lambda r: (args.families.index(r["family"]), int(r["index"])))
    if not records:
        raise UsageError(f"{path}: no instances searched yet (--no-run only summarises what is there)")
    if args.judge:
        records = judge(records, args.judge, output / JUDGED_FILE, settings, args.torch_threads)
    rows = summarise(records, args.n_resamples)
    pooled = overall(records, rows, args.n_resamples)
    text = markdown(rows, pooled)
    output.mkdir(parents=True, exist_ok=True)
    _write_atomic(output / "ceiling.md", f"Settings: {json.dumps(settings)}\n\n{text}")
    _write_atomic(output / "ceiling.json", json.dumps({"settings": settings, "rows": rows, "overall": pooled},
                                                      indent=1))
    print(text)
    print(f"written to {output}/", json.dumps(asdict(args)))
    return rows


def judge(
    records: list[dict[str, Any]], specs: Sequence[str], path: Path, settings: dict[str, Any], threads: int = 1
) -> list[dict[str, Any]]:
    """Play each policy of ``specs`` on the searched instances (the same runs: instance k from seed k),
    one batched episode per family and policy, appending ``{family, index, policy, val, test}`` lines to
    ``path`` (a killed run resumes); returns copies of ``records`` with the results among their
    ``rules``, where :func:`summarise` pairs them with the ceiling like the agents played in the search."""
    import torch

    from dus_gym.agent_io import load_policy

    torch.set_num_threads(threads)
    done = {(j["family"], int(j["index"]), j["policy"]): j for j in read_records(path)}
    for spec in specs:
        for family in dict.fromkeys(r["family"] for r in records):
            todo = sorted(int(r["index"]) for r in records
                          if r["family"] == family and (family, int(r["index"]), spec) not in done)
            if not todo:
                continue
            players = [partial(load_policy, spec, seed=i) for i in todo]
            for i, res in zip(todo, play(family, "eval", todo, players, settings["method"], settings["n_steps"])):
                line = {"family": family, "index": i, "policy": spec, **res}
                path.parent.mkdir(parents=True, exist_ok=True)
                append_record(path, line)
                done[(family, i, spec)] = line
    out = []
    for r in records:
        extra = {spec: done[(r["family"], int(r["index"]), spec)] for spec in specs}
        out.append({**r, "rules": {**r["rules"], **extra}})
    return out


def _families() -> list[str]:
    from dus_gym.instances import FAMILIES

    return [f for f in FAMILIES if f != "seeds"]


if __name__ == "__main__":
    run(main, PROG)
