"""The one owner of the PPO and A2C defaults: ``agents/train.py`` reads them from here, and
``agents/hyperparams/{ppo,a2c}.yml`` (the same values in rl-zoo3's format) are written from here:

    python -m agents.defaults      # rewrites agents/hyperparams/*.yml

``tests/test_agents.py`` checks that the files are what this module writes, so a default changed here
and not written out fails the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_HYPERPARAMS", "NUM_ENVS", "ZOO_ENVS", "zoo_config", "zoo_config_path"]

NUM_ENVS = 2
"""Envs stepped in parallel (agents/train.py --num-envs, rl-zoo3's n_envs)."""

# Defaults for a small budget (a few thousand env steps: a few hundred episodes of the registered length).
DEFAULT_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": {
        "n_steps": 64, "batch_size": 64, "n_epochs": 10, "learning_rate": 5e-4, "gamma": 0.99,
        "gae_lambda": 0.95, "ent_coef": 0.01, "clip_range": 0.2, "policy_kwargs": {"net_arch": [64, 64]},
    },
    "a2c": {
        "n_steps": 16, "learning_rate": 7e-4, "gamma": 0.99, "gae_lambda": 0.95, "ent_coef": 0.01,
        "policy_kwargs": {"net_arch": [64, 64]},
    },
}
"""Keyword arguments of SB3's ``PPO`` / ``A2C`` (``--hyperparams`` overrides them)."""

ZOO_ENVS: dict[str, dict[str, Any]] = {
    "DUS-v0": {"env_kwargs": {"instances": "train"}, "n_timesteps": 4500},
    # The shortcut family agent: episodes across shortcut and signal strengths, 15 epochs each.
    "DUS-Synthetic-v0": {"env_kwargs": {"n_steps": 15, "instances": "shortcut:train"}, "n_timesteps": 6000},
}
"""rl-zoo3's per-env settings: the env's keyword arguments (training instances only; the disjoint
``eval`` set is held out) and the training budget."""


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if ":" in value else value
    if isinstance(value, dict):  # policy_kwargs: rl-zoo3 evaluates the string as Python
        return '"dict(' + ", ".join(f"{k}={v!r}" for k, v in value.items()) + ')"'
    return repr(value)


def zoo_config(algo: str) -> str:
    """The text of ``agents/hyperparams/{algo}.yml``: :data:`DEFAULT_HYPERPARAMS` for each of
    :data:`ZOO_ENVS`, in rl-zoo3's format."""
    lines = [
        f"# {algo.upper()} hyperparameters for the DUS envs, in rl-zoo3's format: the defaults of",
        f"# agents/train.py --algo {algo}, written by `python -m agents.defaults` (agents/defaults.py owns",
        "# them; edit them there).",
        f"#   python -m rl_zoo3.train --algo {algo} --env DUS-v0 --gym-packages dus_gym \\",
        f"#       --conf-file agents/hyperparams/{algo}.yml",
        "# n_timesteps: the budget of the pretrained agents in dus_gym/pretrained/ (small: one episode is a",
        "# whole training run, about 2-5 s on one CPU core).",
    ]
    for env_id, settings in ZOO_ENVS.items():
        lines += ["", f"{env_id}:", "  env_kwargs:"]
        lines += [f"    {k}: {_yaml_value(v)}" for k, v in settings["env_kwargs"].items()]
        lines += [
            f"  n_envs: {NUM_ENVS}",
            f"  n_timesteps: !!float {settings['n_timesteps']}",
            "  policy: MlpPolicy",
            "  normalize: true",
        ]
        lines += [f"  {k}: {_yaml_value(v)}" for k, v in DEFAULT_HYPERPARAMS[algo].items()]
    return "\n".join(lines) + "\n"


def zoo_config_path(algo: str) -> Path:
    """Where :func:`zoo_config` is written: ``agents/hyperparams/{algo}.yml``."""
    return Path(__file__).parent / "hyperparams" / f"{algo}.yml"


def main() -> int:
    """Write every algorithm's rl-zoo3 file; returns 0."""
    for algo in DEFAULT_HYPERPARAMS:
        zoo_config_path(algo).write_text(zoo_config(algo))
        print(f"wrote {zoo_config_path(algo)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
