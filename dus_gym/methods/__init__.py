"""Multimodal training methods; each runs one iteration given per-modality quantities."""

from __future__ import annotations

from dus_gym.methods.base import Batch, IterationResult, Method, TrainContext
from dus_gym.methods.joint import JointMethod
from dus_gym.methods.mla import MLAMethod

__all__ = ["METHODS", "Batch", "IterationResult", "JointMethod", "MLAMethod", "Method", "TrainContext", "make_method"]

METHODS: dict[str, type[Method]] = {"joint": JointMethod, "mla": MLAMethod}


def make_method(name: str) -> Method:
    """A method by name (``"joint"`` or ``"mla"``)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}")
    return METHODS[name]()
