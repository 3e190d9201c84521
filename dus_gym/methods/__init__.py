"""Multimodal training methods; each runs one iteration given per-modality quantities."""

from __future__ import annotations

import inspect
from typing import Any

from dus_gym.methods.base import Batch, IterationResult, Method, TrainContext
from dus_gym.methods.joint import JointMethod
from dus_gym.methods.mla import MLAMethod
from dus_gym.methods.ogm_ge import OGMGEMethod

__all__ = [
    "METHODS",
    "Batch",
    "IterationResult",
    "JointMethod",
    "MLAMethod",
    "Method",
    "OGMGEMethod",
    "TrainContext",
    "make_method",
]

METHODS: dict[str, type[Method]] = {"joint": JointMethod, "mla": MLAMethod, "ogm_ge": OGMGEMethod}


def make_method(name: str, **kwargs: Any) -> Method:
    """A method by name (``"joint"``, ``"mla"`` or ``"ogm_ge"``), built with its
    keyword arguments (e.g. ``alpha`` for ogm_ge, ``projection`` for mla)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}")
    cls = METHODS[name]
    params = inspect.signature(cls.__init__).parameters.values()
    # object.__init__ (a method without options) shows only *args, **kwargs.
    valid = [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"method {name!r}: unknown keyword arguments {unknown}; valid: {valid}")
    return cls(**kwargs)
