"""The report of :mod:`benchmarks.throughput`: where the numbers come from, and every part's table in
Markdown."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from benchmarks._throughput_common import TORCH_DEFAULT_THREADS, VARIANTS


def machine() -> dict[str, Any]:
    """Where the numbers come from."""
    info: dict[str, Any] = {
        "cpu_cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
        "torch_default_threads": TORCH_DEFAULT_THREADS, "gpu": None,
        "load_average_1min": os.getloadavg()[0],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def to_markdown(result: dict[str, Any]) -> str:
    """The measurements as Markdown tables."""
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu_cores']} CPU cores, GPU: {m['gpu'] or 'none'}, device {result['device']}, "
        f"torch {m['torch']} (default {m['torch_default_threads']} threads); load average (1 min) "
        f"{m['load_average_1min']:.2f} at the start, {result.get('load_average_end', float('nan')):.2f} at the end "
        f"(other processes share the CPUs: compare CPU times); {result['date']}.",
        "",
    ]
    for r in result.get("overhead", []):
        lines += _overhead_lines(r)
    if result.get("threads"):
        lines += _threads_lines(result)
    if result.get("scaling"):
        lines += _scaling_lines(result)
    if result.get("batched"):
        lines += _batched_lines(result)
    if result.get("autoreset"):
        lines += _autoreset_lines(result)
    if result.get("stacking"):
        lines += _stacking_lines(result)
    if result.get("episodes"):
        lines += _episodes_lines(result)
    return "\n".join(lines) + "\n"


def _overhead_lines(r: dict[str, Any]) -> list[str]:
    """(a): the variants' times and their ratios, for one dataset."""
    lines: list[str] = []
    lines += [
        f"(a) Overhead on {r['dataset']} ({' + '.join(r['modalities'])}), uniform counts {r['counts']['run']}, "
        f"{r['iterations_per_step']} iterations and one validation pass per step, {r['parameters']['run']} "
        f"parameters, one torch thread; {r['timed_steps_per_variant']} timed steps per variant in lockstep. "
        "CPU ms per step: median [quartiles]:",
        "",
        "| variant | CPU ms/step | quartiles | wall ms/step | examples per CPU s |",
        "|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        q1, _, q3 = r["cpu_s_per_step_quartiles"][name]
        lines.append(
            f"| {name} | {_ms(r['cpu_s_per_step'][name])} | {_ms(q1)}-{_ms(q3)} | "
            f"{_ms(r['wall_s_per_step'][name])} | {r['examples_per_cpu_s'][name]:.0f} |"
        )
    lines += [
        "",
        "| ratio (speed of the second as a fraction of the first's) | CPU | per-repeat range, CPU | wall |",
        "|---|---|---|---|",
    ]
    for key, v in r["ratios"].items():
        lines.append(
            f"| {key} | {v['cpu']:.3f} | {v['cpu_by_repeat_min']:.3f}-{v['cpu_by_repeat_max']:.3f} | "
            f"{v['wall']:.3f} |"
        )
    ratios = r["ratios"]
    lines += [
        "",
        f"(a)/(d) plain/env {ratios['plain/env']['cpu']:.3f}, (b)/(d) plain_scores/env "
        f"{ratios['plain_scores/env']['cpu']:.3f} (target >= 0.95), score cost (a)/(b) "
        f"{ratios['plain/plain_scores']['cpu']:.3f} (CPU time). Reset {r['reset_s']:.3f} s; the episode's "
        f"last step adds {r['last_step_extra_cpu_s']:.3f} CPU s (test metrics, probes).",
        "",
    ]
    return lines


def _threads_lines(result: dict[str, Any]) -> list[str]:
    """(t): the episodes under each thread setting, and 'auto' against the best."""
    m = result["machine"]
    lines: list[str] = []
    lines += [
        f"(t) Thread settings (`run_config={{\"threads\": t}}`), called from a process at torch's default "
        f"({m['torch_default_threads']} threads), {result['args']['threads_background']} extra busy "
        f"process(es); median of {result['args']['threads_repeats']} episode(s) per setting, order rotated:",
        "",
        "| model | steps | setting | threads used | CPU s | wall s | all CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["threads"]:
        for s, v in row["settings"].items():
            runs = ", ".join(f"{x:.2f}" for x in v["cpu_s_all"])
            lines.append(
                f"| {row['model']} ({' + '.join(row['views'])}) | {row['steps']} | {s} | {v['threads_used']} | "
                f"{v['cpu_s']:.2f} | {v['wall_s']:.2f} | {runs} |"
            )
    lines.append("")
    for row in result["threads"]:
        for measure, word in (("cpu_s", "CPU"), ("wall_s", "wall")):
            v = row.get(f"auto_vs_best_{measure}")
            if v:
                same = row["settings"]["auto"]["threads_used"] == row["settings"][v["best"]]["threads_used"]
                lines.append(
                    f"- {row['model']}, {word} time: the default 'auto' is x{v['factor']:.2f} of the best "
                    f"({v['best']}): {'within' if v['within_1.2x'] else 'NOT within'} 1.2x"
                    + (
                        f" (auto runs {row['settings']['auto']['threads_used']} thread(s), as the best does: "
                        "the difference is noise)."
                        if same
                        else "."
                    )
                )
    lines.append("")
    return lines


def _scaling_lines(result: dict[str, Any]) -> list[str]:
    """(b): env steps per second of parallel envs."""
    lines: list[str] = []
    lines += [
        f"(b) Parallel envs (SubprocVecEnv, {result['scaling_dataset']}, one torch thread each):",
        "",
        "| envs | env steps/s | speedup | efficiency |",
        "|---|---|---|---|",
    ]
    for r in result["scaling"]:
        lines.append(
            f"| {r['num_envs']} | {r['env_steps_per_s']:.2f} | {r['speedup']:.2f} | {r['efficiency']:.2f} |"
        )
    lines.append("")
    return lines


def _batched_lines(result: dict[str, Any]) -> list[str]:
    """(r): the batched vector env against one env and SubprocVecEnv."""
    lines: list[str] = []
    gpu = any("memory_per_run_mb" in r for r in result["batched"])
    lines += [
        f"(r) Batched runs ({result['batched_dataset']}, one epoch per step, uniform counts; wall time):",
        "",
        "| mode | envs | env steps/s | x one CPU env |" + (" memory per run (MiB) |" if gpu else ""),
        "|---|---|---|---|" + ("---|" if gpu else ""),
    ]
    for r in result["batched"]:
        mem = f" {r['memory_per_run_mb']:.1f} |" if "memory_per_run_mb" in r else (" - |" if gpu else "")
        lines.append(
            f"| {r['mode']} | {r['num_envs']} | {r['env_steps_per_s']:.1f} | {r['x_one_env']:.2f} |" + mem
        )
    lines.append("")
    return lines


def _autoreset_lines(result: dict[str, Any]) -> list[str]:
    """(r): whole episodes under each autoreset mode."""
    lines: list[str] = []
    first = result["autoreset"][0]
    lines += [
        f"(r) Whole episodes of {first['episode_steps']} steps at N = {first['num_envs']}, by autoreset mode "
        "(transitions per second, reset steps not counted; best of the repeats):",
        "",
        "| autoreset_mode | transitions/s | x SameStep |",
        "|---|---|---|",
    ]
    for r in result["autoreset"]:
        lines.append(f"| {r['mode']} | {r['transitions_per_s']:.1f} | {r['x_same_step']:.3f} |")
    lines.append("")
    return lines


def _stacking_lines(result: dict[str, Any]) -> list[str]:
    """(r): stacked against single runs."""
    lines: list[str] = []
    lines += [
        "(r) Stacked against single runs (CPU ms per run and iteration, one thread, uniform counts):",
        "",
        "| dataset | encoders | N | single | stacked | stacked / single | make_run_batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["stacking"]:
        lines.append(
            f"| {r['dataset']} | {', '.join(r['encoders'])} | {r['num_runs']} | {r['single_ms']:.2f} | "
            f"{r['stacked_ms']:.2f} | {r['ratio']:.2f} | {r['make_run_batch']} |"
        )
    lines.append("")
    return lines


def _episodes_lines(result: dict[str, Any]) -> list[str]:
    """(c): one full episode per instance family."""
    lines: list[str] = []
    lines += [
        "(c) One full episode per instance family (uniform sampling, joint):",
        "",
        "| family | steps | iterations/step | episode, wall (s) | episode, CPU (s) | reset (s) "
        "| last step, with test and probes (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["episodes"]:
        lines.append(
            f"| {r['family']} | {r['steps']} | {r['iterations_per_step']} | {r['episode_s']:.2f} | "
            f"{r['episode_cpu_s']:.2f} | {r['reset_s']:.3f} | {r['last_step_s']:.3f} |"
        )
    return lines
