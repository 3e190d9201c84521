"""Sampling policies: :func:`make_policy`, the one front door that turns any policy spec into a policy,
and the built-in policies (defined in :mod:`dus_gym.builtin_policies`, importable from here too).

The layers, so that no import runs in a circle: the built-in policies (lowest), then the run folders and
shipped agents of :mod:`dus_gym.agent_io` (whose :func:`~dus_gym.agent_io.load_policy` builds a built-in
policy or loads an agent), then this module.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from dus_gym.agent_io import load_policy
from dus_gym.builtin_policies import (
    POLICIES,
    BuiltinPolicy,
    DUSHeuristicPolicy,
    FixedPolicy,
    GapPolicy,
    RandomPolicy,
    UniformPolicy,
    builtin_policy,
    dus_h_quantities,
)
from dus_gym.evaluation import Predictor

__all__ = [
    "POLICIES",
    "BuiltinPolicy",
    "DUSHeuristicPolicy",
    "FixedPolicy",
    "GapPolicy",
    "RandomPolicy",
    "UniformPolicy",
    "builtin_policy",
    "dus_h_quantities",
    "make_policy",
]


def make_policy(spec: str | Predictor, env: gym.Env[Any, Any], seed: int | None = None) -> Predictor:
    """Any policy spec as a policy for ``env``: the one front door of the package.

    Args:
        spec: a built-in policy (:func:`builtin_policy`: ``uniform``, ``random``,
            ``fixed:W1,W2``, ``dus_h[:LAM]``, ``gap[:MARGIN]``, ``oracle[:K]``), a
            run folder written by ``agents/train.py``, a shipped agent
            (``pretrained:NAME``, e.g. ``pretrained:general_ppo``;
            :func:`dus_gym.agent_io.pretrained_agents`), or an object with SB3's
            ``predict`` (an SB3 model, a loaded agent), returned as it is once its
            spaces, where it has them, match ``env``'s.
        env: the env the policy acts in.
        seed: seed of a random built-in policy (trained agents act deterministically).

    Raises:
        ValueError: an unknown spec (the message lists the built-in policies and the
            shipped agents), or an agent or model made for other spaces than ``env``'s.
        FileNotFoundError: a run folder or shipped agent that does not exist.
    """
    if isinstance(spec, str):
        return load_policy(spec, env, seed)
    if not callable(getattr(spec, "predict", None)):
        raise TypeError(f"make_policy: {type(spec).__name__} is no policy spec; expected a name, a folder, "
                        "pretrained:NAME or an object with SB3's predict(observation, ...)")
    for name in ("observation_space", "action_space"):
        theirs, here = getattr(spec, name, None), getattr(env, name)
        if theirs is not None and theirs != here:
            raise ValueError(f"make_policy: the {type(spec).__name__}'s {name} is {theirs}; this env has {here}")
    return spec
