"""The multimodal dataset container and its stratified splits.

A :class:`MultimodalDataset` holds one tensor per modality (``N x D`` vectors,
``N x C x H x W`` images or spectrograms, ``N x T x D`` sequences), integer
labels and the names of classes and modalities. It validates its input on
construction, so every later stage can trust it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MultimodalDataset", "Splits", "stratified_split", "SPLIT_NAMES"]

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    """Index tensors (int64, 1-D, disjoint) of the train, validation and test samples."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    def to(self, device: torch.device | str) -> Splits:
        return Splits(self.train.to(device), self.val.to(device), self.test.to(device))

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in SPLIT_NAMES:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLIT_NAMES}")
        return getattr(self, name)


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator
) -> Splits:
    """Split sample indices into train / val / test, class by class.

    Args:
        labels: shape ``(N,)``, integer classes.
        fractions: three non-negative numbers summing to 1 (train, val, test).
        rng: the only source of randomness.

    Each class's samples are shuffled and cut at the same fractions (rounded
    down for val and test, the rest to train), so every split keeps the class
    proportions up to one sample per class.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(len(idx) * fr[1])
        n_test = int(len(idx) * fr[2])
        n_train = len(idx) - n_val - n_test
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train : n_train + n_val])
        parts[2].append(idx[n_train + n_val :])
    # Sorted so that the split does not depend on class order, only on rng.
    train, val, test = (torch.from_numpy(np.sort(np.concatenate(p))).long() for p in parts)
    return Splits(train, val, test)


def check_views(where: str, views: Sequence[str], valid: Sequence[str], noun: str = "modality") -> list[str]:
    """``views`` as a list, after checking that each is one of ``valid`` and that none repeats.

    Raises:
        ValueError: naming ``where``, the first unknown name and the valid ones, or the repeated names.
    """
    names = list(views)
    unknown = [v for v in names if v not in valid]
    if unknown:
        raise ValueError(f"{where}: unknown {noun} {unknown[0]!r}; valid: {list(valid)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: {noun} names must be distinct, got {names}")
    return names


class MultimodalDataset:
    """One tensor per modality, integer labels, names; validated on construction.

    Args:
        modalities: ordered mapping name -> array of shape ``(N, ...)``;
            ``(N, D)`` vectors, ``(N, C, H, W)`` images, ``(N, T, D)`` sequences.
            Converted to float32 tensors (CPU; :meth:`to` moves them).
        labels: shape ``(N,)``, integers in ``[0, num_classes)``.
        class_names: one name per class; defaults to ``"0" ... "C-1"``.
        name: where the data came from, used in error messages and reports.
        split: optional shape ``(N,)`` array with 0 (train), 1 (val), 2 (test):
            a fixed assignment (for data whose splits differ by construction,
            such as the shortcut family). Without it, :meth:`splits` draws a
            stratified split from a seed.

    Raises:
        ValueError: fewer than two modalities, different sample counts,
            non-finite values, labels out of range or not integers, a bad split
            array; the message names the array, the index and the expectation.
    """

    def __init__(
        self,
        modalities: Mapping[str, np.ndarray | torch.Tensor],
        labels: np.ndarray | torch.Tensor | Sequence[int],
        class_names: Sequence[str] | None = None,
        name: str = "dataset",
        split: np.ndarray | torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        self.name = name
        if len(modalities) < 2:
            raise ValueError(
                f"{name}: a multimodal dataset needs at least two modalities, got {len(modalities)} "
                f"({list(modalities)})"
            )
        y = torch.as_tensor(np.asarray(labels))
        if y.ndim != 1:
            raise ValueError(f"{name}: labels must have shape (N,), got {tuple(y.shape)}")
        if y.is_floating_point():
            if not torch.all(y == y.round()):
                bad = int(torch.nonzero(y != y.round())[0])
                raise ValueError(f"{name}: labels must be integers; labels[{bad}] = {y[bad].item()}")
        elif y.dtype == torch.bool or y.is_complex():
            raise ValueError(f"{name}: labels must be integers, got dtype {y.dtype}")
        y = y.long()
        n = len(y)
        if class_names is None:
            num_classes = int(y.max()) + 1 if n else 0
            class_names = [str(c) for c in range(num_classes)]
        self.class_names = [str(c) for c in class_names]
        num_classes = len(self.class_names)
        if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            bad = int(torch.nonzero((y < 0) | (y >= num_classes))[0])
            raise ValueError(
                f"{name}: labels must lie in [0, {num_classes}) ({num_classes} classes); "
                f"labels[{bad}] = {int(y[bad])}"
            )
        self.labels = y

        self.modalities: dict[str, torch.Tensor] = {}
        for key, array in modalities.items():
            x = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
            if x.ndim not in (2, 3, 4):
                raise ValueError(
                    f"{name}: modality {key!r} must have shape (N, D), (N, T, D) or (N, C, H, W), "
                    f"got {tuple(x.shape)}"
                )
            if len(x) != n:
                raise ValueError(
                    f"{name}: modality {key!r} has {len(x)} samples but labels have {n}; "
                    "every array must have the same number of samples"
                )
            x = x.float()
            # Chunk by chunk: a memory-mapped bundle is read once, without a mask the size of the data.
            finite = torch.cat(
                [torch.isfinite(c.reshape(len(c), -1)).all(dim=1) for c in x.split(4096)]
                + [torch.ones(0, dtype=torch.bool)]
            )
            if not bool(finite.all()):
                bad = int(torch.nonzero(~finite)[0])
                raise ValueError(
                    f"{name}: modality {key!r} has a non-finite value (NaN or inf) in sample {bad}"
                )
            self.modalities[str(key)] = x

        self.split: torch.Tensor | None = None
        if split is not None:
            s = torch.as_tensor(np.asarray(split)).long()
            if s.shape != (n,):
                raise ValueError(f"{name}: split must have shape ({n},), got {tuple(s.shape)}")
            bad_mask = (s < 0) | (s > 2)
            if bool(bad_mask.any()):
                bad = int(torch.nonzero(bad_mask)[0])
                raise ValueError(f"{name}: split values must be 0, 1 or 2; split[{bad}] = {int(s[bad])}")
            self.split = s

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def __len__(self) -> int:
        return len(self.labels)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each modality (without the leading N)."""
        return {k: tuple(v.shape[1:]) for k, v in self.modalities.items()}

    def splits(
        self, seed: int | np.random.Generator, fractions: Sequence[float] = (0.6, 0.2, 0.2)
    ) -> Splits:
        """Train / val / test indices: the fixed assignment if the data has one,
        otherwise a stratified split drawn from ``seed``."""
        if self.split is not None:
            return Splits(*(torch.nonzero(self.split == i).flatten() for i in range(3)))
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return stratified_split(self.labels.numpy(), fractions, rng)

    def select(self, modalities: Sequence[str]) -> MultimodalDataset:
        """A dataset with a subset of the modalities, in the given order."""
        modalities = check_views(self.name, modalities, self.modality_names)
        return MultimodalDataset(
            {m: self.modalities[m] for m in modalities},
            self.labels,
            self.class_names,
            self.name,
            None if self.split is None else self.split,
        )

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape[1:])}" for k, v in self.modalities.items())
        return f"MultimodalDataset({self.name!r}, N={len(self)}, C={self.num_classes}, {shapes})"
