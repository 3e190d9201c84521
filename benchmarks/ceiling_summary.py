"""The summary of ``benchmarks.ceiling``: the ceiling and bound per instance, the room per family, normalised
scores, the agents per family and over all families, as tables (docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["is_rule", "markdown", "overall", "pick", "summarise"]


def is_rule(spec: str) -> bool:
    """A rule anyone can play without training: a built-in other than the oracle."""
    return spec.split(":")[0] in ("uniform", "dus_h", "gap", "fixed")


def pick(record: dict[str, Any], by: str) -> dict[str, Any]:
    """The candidate of one instance's search with the best final ``by`` accuracy (``"val"``: the
    ceiling; ``"test"``: the optimistic bound), among the schedules played and the rules (not the
    agents: the ceiling stays independent of what it judges); diverged runs never count."""
    candidates = [{**p, "policy": "schedule"} for p in record["played"]]
    candidates += [{**v, "policy": k} for k, v in record["rules"].items() if is_rule(k)]
    return max((c for c in candidates if not c.get("diverged", False)), key=lambda c: c[by])


def summarise(records: Sequence[dict[str, Any]], n_resamples: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Per family: mean test accuracy of every policy, the ceiling and the optimistic bound (percent);
    the best rule (highest mean over the family's instances); ceiling - best rule and bound - best rule
    with 95% bootstrap intervals of the mean paired difference; each policy's normalised score
    ``(policy - uniform) / (ceiling - uniform)`` (of the family means)."""
    from benchmarks.stats import stratified_bootstrap_ci

    out = []
    for family in dict.fromkeys(r["family"] for r in records):
        rs = sorted((r for r in records if r["family"] == family), key=lambda r: r["index"])
        specs = [s for s in rs[0]["rules"] if all(s in r["rules"] for r in rs)]
        test = {s: 100 * np.array([r["rules"][s]["test"] for r in rs]) for s in specs}
        ceiling = 100 * np.array([pick(r, "val")["test"] for r in rs])
        bound = 100 * np.array([pick(r, "test")["test"] for r in rs])
        rules = [s for s in specs if is_rule(s)]
        best = max(rules, key=lambda s: test[s].mean())

        def ci(diff: np.ndarray) -> dict[str, float]:
            iv = stratified_bootstrap_ci([diff], "mean", n_resamples=n_resamples, seed=seed)
            return {"mean": iv.estimate, "low": iv.low, "high": iv.high}

        room = ceiling.mean() - test["uniform"].mean() if "uniform" in test else float("nan")
        out.append({
            "family": family, "instances": len(rs), "best_rule": best,
            "test": {s: float(v.mean()) for s, v in test.items()},
            "ceiling": float(ceiling.mean()), "bound": float(bound.mean()),
            "ceiling_minus_best_rule": ci(ceiling - test[best]), "bound_minus_best_rule": ci(bound - test[best]),
            "normalised": {s: float((v.mean() - test["uniform"].mean()) / room) if room > 0 else float("nan")
                           for s, v in test.items() if "uniform" in test},
            # every agent against the best rule and gap on the same runs, and its share of the room
            "agents": {s: {"minus_best_rule": ci(test[s] - test[best]),
                           "minus_gap": ci(test[s] - test["gap"]) if "gap" in test else None,
                           "share_of_room": float((test[s] - test[best]).mean() / (ceiling - test[best]).mean())
                           if (ceiling - test[best]).mean() > 0 else float("nan")}
                       for s in specs if not is_rule(s)},
            "wall_s": float(sum(r["wall_s"] for r in rs)),
        })
    return out


def overall(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], n_resamples: int = 2000,
            seed: int = 0) -> dict[str, dict[str, Any]]:
    """Every agent played on all the families of ``rows``, over all their instances: agent - gap and agent -
    best rule (each family's own, from ``rows``) with stratified 95% bootstrap intervals (families are the
    strata, so each keeps its number of instances in every resample), and on how many of the families with
    at least 1 point of room (ceiling - best rule) it takes half of it or more."""
    from benchmarks.stats import stratified_bootstrap_ci

    out: dict[str, dict[str, Any]] = {}
    agents = [s for s in rows[0]["agents"] if all(s in r["agents"] for r in rows)] if rows else []
    for spec in agents:
        gap, best = [], []
        for row in rows:
            rs = [r for r in records if r["family"] == row["family"]]
            mine = np.array([r["rules"][spec]["test"] for r in rs])
            gap.append(100 * (mine - [r["rules"]["gap"]["test"] for r in rs]))
            best.append(100 * (mine - [r["rules"][row["best_rule"]]["test"] for r in rs]))
        ivs = {name: stratified_bootstrap_ci(d, "mean", n_resamples=n_resamples, seed=seed)
               for name, d in (("minus_gap", gap), ("minus_best_rule", best))}
        roomy = [r for r in rows if r["ceiling_minus_best_rule"]["mean"] >= 1.0]
        out[spec] = {**{k: {"mean": v.estimate, "low": v.low, "high": v.high} for k, v in ivs.items()},
                     "families": len(rows), "families_with_room": len(roomy),
                     "half_the_room_taken": sum(r["agents"][spec]["share_of_room"] >= 0.5 for r in roomy),
                     "worst_minus_best_rule": min(r["agents"][spec]["minus_best_rule"]["mean"] for r in rows)}
    return out


def _column_order(spec: str) -> tuple[int, str]:
    first = ("uniform", "dus_h", "gap")
    return (first.index(spec), "") if spec in first else (3 if is_rule(spec) else 4, spec)


def _signed(x: float, digits: int = 1) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:+.{digits}f}"


def _percent(x: float) -> str:
    return "n/a (no room)" if not np.isfinite(x) else f"{100 * x:+.0f}%"


def _interval(c: dict[str, float]) -> str:
    return _signed(c["mean"]) + ("" if not np.isfinite(c["low"]) else f" [{c['low']:+.1f}, {c['high']:+.1f}]")


def markdown(rows: Sequence[dict[str, Any]], pooled: dict[str, dict[str, Any]] | None = None) -> str:
    """The room per family, every policy's normalised score, the agents per family, and (``pooled``, from
    :func:`overall`) the agents over all the families."""
    lines = [
        "| family | n | best rule | best rule % | ceiling % | ceiling - best rule [95% CI] | "
        "bound % | bound - best rule [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, b = r["ceiling_minus_best_rule"], r["bound_minus_best_rule"]
        lines.append(
            f"| {r['family']} | {r['instances']} | {r['best_rule']} | {r['test'][r['best_rule']]:.1f} | "
            f"{r['ceiling']:.1f} | {_interval(c)} | {r['bound']:.1f} | {_interval(b)} |"
        )
    specs = sorted(dict.fromkeys(s for r in rows for s in r["normalised"]), key=_column_order)
    from dus_gym.agent_io import policy_label

    lines += ["", "Normalised score (policy - uniform) / (ceiling - uniform), of the family means:", "",
              "| family | " + " | ".join(map(policy_label, specs)) + " |", "|---|" + "---|" * len(specs)]
    for r in rows:
        cells = [_signed(r["normalised"][s], 2) if s in r["normalised"] else "" for s in specs]
        lines.append(f"| {r['family']} | " + " | ".join(cells) + " |")
    lines += ["", "Agents on the same runs (paired; share = (agent - best rule) / (ceiling - best rule)):", "",
              "| family | agent | agent - best rule [95% CI] | agent - gap [95% CI] | share of the room |",
              "|---|---|---|---|---|"]
    for r in rows:
        for spec, a in r["agents"].items():
            gap = _interval(a["minus_gap"]) if a["minus_gap"] else "n/a"
            lines.append(f"| {r['family']} | {policy_label(spec)} | {_interval(a['minus_best_rule'])} | {gap} | "
                         f"{_percent(a['share_of_room'])} |")
    if pooled:
        lines += ["", "Agents over all these families (intervals stratified by family):", "",
                  "| agent | families | agent - gap [95% CI] | agent - best rule [95% CI] | worst family mean "
                  "- best rule | half the room taken (families with >= 1 point) |", "|---|---|---|---|---|---|"]
        for spec, a in pooled.items():
            lines.append(f"| {policy_label(spec)} | {a['families']} | {_interval(a['minus_gap'])} | "
                         f"{_interval(a['minus_best_rule'])} | {_signed(a['worst_minus_best_rule'])} | "
                         f"{a['half_the_room_taken']} of {a['families_with_room']} |")
    return "\n".join(lines) + "\n"
