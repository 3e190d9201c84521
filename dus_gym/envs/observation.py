"""What a DUS env reports each step: the observation vector (layout, bounds, assembly) and
the info dict (docs/method.md section 6; the tables of :class:`~dus_gym.envs.dus_env.DUSEnv`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dus_gym.metrics import Evaluation

__all__ = ["LOSS_CAP", "ObservationLayout", "step_info"]

LOSS_CAP = 10.0
"""Losses (nats) in the observation are clipped to [0, LOSS_CAP], trends to +-LOSS_CAP."""


class ObservationLayout:
    """Where each component sits in the observation vector, and its bounds.

    Per-modality blocks come first (M entries each, in modality order), then
    the three global entries, then the previous action's quantities. The
    order is written once, in :attr:`slices`: :meth:`build` assembles an
    observation from named components by it, :meth:`get` reads one back.
    """

    PER_MODALITY = ("score", "last_score", "discrepancy", "train_loss", "loss_trend", "val_branch_accuracy")
    GLOBAL = ("val_accuracy", "val_loss", "progress")

    def __init__(self, modalities: Sequence[str], max_quantity: float) -> None:
        self.modalities = list(modalities)
        m = len(self.modalities)
        bounds = {
            "score": (0.0, 1.0),
            "last_score": (0.0, 1.0),
            "discrepancy": (-1.0, 1.0),
            "train_loss": (0.0, LOSS_CAP),
            "loss_trend": (-LOSS_CAP, LOSS_CAP),
            "val_branch_accuracy": (0.0, 1.0),
            "val_accuracy": (0.0, 1.0),
            "val_loss": (0.0, LOSS_CAP),
            "progress": (0.0, 1.0),
            "quantity": (0.0, max_quantity),
        }
        self.slices: dict[str, slice] = {}
        low: list[float] = []
        high: list[float] = []
        for name, width in [(n, m) for n in self.PER_MODALITY] + [(n, 1) for n in self.GLOBAL] + [("quantity", m)]:
            self.slices[name] = slice(len(low), len(low) + width)
            low += [bounds[name][0]] * width
            high += [bounds[name][1]] * width
        self.low = np.asarray(low, dtype=np.float32)
        self.high = np.asarray(high, dtype=np.float32)

    @property
    def size(self) -> int:
        return len(self.low)

    def build(self, components: Mapping[str, Any], rows: int | None = None) -> np.ndarray:
        """The observation (float32) from its named components: ``(size,)``, or ``(rows, size)``.

        ``components`` maps every name of :attr:`slices` to its values: shape
        ``(width,)`` (a number for a one-entry component) for one observation;
        with ``rows=N``, ``(N, width)`` or ``(N,)`` per row, or one value
        for every row. Non-finite values (a diverged run's NaN losses) become
        the loss cap's, and everything is clipped to the bounds, so the
        result lies in the observation space.
        """
        missing = sorted(set(self.slices) - set(components))
        if missing:
            raise ValueError(f"ObservationLayout.build: components {missing} missing; expected {list(self.slices)}")
        shape = (-1,) if rows is None else (rows, -1)
        parts = []
        for name, sl in self.slices.items():
            value = np.asarray(components[name], dtype=np.float64)
            if rows is not None and value.size == sl.stop - sl.start:
                value = np.broadcast_to(value.reshape(-1), (rows, sl.stop - sl.start))  # the same for every row
            parts.append(value.reshape(shape))
        obs = np.concatenate(parts, axis=-1)
        # A diverged run has NaN losses: report them at the cap, inside the space.
        obs = np.nan_to_num(obs, nan=LOSS_CAP, posinf=LOSS_CAP, neginf=-LOSS_CAP)
        return np.clip(obs, self.low, self.high).astype(np.float32)

    def get(self, obs: np.ndarray, name: str) -> np.ndarray:
        """Component ``name`` of an observation (or of a batch, along the last axis)."""
        return np.asarray(obs)[..., self.slices[name]]

    def describe(self) -> list[tuple[int, str, float, float]]:
        """Rows ``(index, meaning, min, max)``, one per entry."""
        rows = []
        for name, sl in self.slices.items():
            for k in range(sl.start, sl.stop):
                label = name if sl.stop - sl.start == 1 else f"{name}[{self.modalities[k - sl.start]}]"
                rows.append((k, label, float(self.low[k]), float(self.high[k])))
        return rows


def step_info(
    step: int, evaluation: Evaluation, counts: np.ndarray, S: np.ndarray, s: np.ndarray, d: np.ndarray,
    train_loss: float, branch_loss: np.ndarray, finite: bool,
) -> dict[str, Any]:
    """The keys every reset and step info has (``DUSEnv``'s info table), as NumPy values.

    NumPy scalars have the ``dtype`` TorchRL's info reader asks for, and the
    same keys come at reset as at each step, so that libraries which build an
    info spec from the first info (TorchRL) read every later one. No dict:
    TorchRL cannot read one (the episode's seeds are ``DUSEnv.instance``).
    """
    ev = evaluation
    return {
        "step": np.int64(step),
        "quantities": np.array(counts, dtype=np.int64),
        "scores": np.array(S, dtype=np.float64),
        "last_scores": np.array(s, dtype=np.float64),
        "discrepancy": np.array(d, dtype=np.float64),
        "train_loss": np.float64(train_loss),
        "branch_train_loss": np.array(branch_loss, dtype=np.float64),
        # A 0-d array, not np.bool_: Gymnasium batches NumPy numbers and arrays, and np.bool_ is neither.
        "diverged": np.asarray(not finite),
        "val_accuracy": np.float64(ev.accuracy),
        "val_macro_f1": np.float64(ev.macro_f1),
        "val_loss": np.float64(ev.loss),
        "val_branch_accuracy": np.array(ev.branch_accuracy, dtype=np.float64),
    }
