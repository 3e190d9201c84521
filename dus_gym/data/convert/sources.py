"""Modalities: where each one's files are (per split, ``{split}`` templates) and how a manifest row
becomes its array: audio through :mod:`.audio`, frames through :mod:`.frames`, features as stored."""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dus_gym.data.convert.audio import AudioOptions, _fit_length, _wav_features
from dus_gym.data.convert.frames import FrameOptions, read_clip_frames
from dus_gym.data.convert.manifests import SPLITS, Row

AUDIO_EXTS = (".npy", ".pkl", ".pt", ".wav")


@dataclass
class _Source:
    """One modality: its kind and its folder per split (``None``: every split; may hold ``{split}``)."""

    name: str
    kind: str
    folders: dict[str | None, str]

    def folder(self, split: str | None) -> Path:
        template = self.folders.get(split, self.folders.get(None))
        if template is None:
            raise KeyError(split)
        return Path(template.replace("{split}", split or ""))

    def concrete(self, splits: set[str | None]) -> list[tuple[str | None, Path]]:
        """The folders actually used by rows of these splits."""
        out = []
        for s in sorted(splits, key=str):
            if s not in self.folders and None not in self.folders:
                raise ValueError(
                    f"convert: modality {self.name!r} has folders for splits {sorted(map(str, self.folders))} "
                    f"but rows of split {s!r}; give {self.name}@{s}=DIR or one folder for all"
                )
            if s is None and "{split}" in self.folders.get(None, ""):
                raise ValueError(
                    f"convert: modality {self.name!r}: folder {self.folders[None]!r} holds {{split}}, but the "
                    "manifest rows have no split; give SPLIT=PATH manifests"
                )
            out.append((s, self.folder(s)))
        return out


def _sources(kind: str, pairs: Sequence[tuple[str, str | Path]]) -> list[_Source]:
    """Group ``(NAME[@SPLIT], DIR)`` pairs by modality, in first-appearance order."""
    grouped: dict[str, _Source] = {}
    for spec, folder in pairs:
        name, _, split = spec.partition("@")
        if split and split not in SPLITS:
            raise ValueError(f"convert: {spec!r}: unknown split {split!r}; valid: {list(SPLITS)}")
        src = grouped.setdefault(name, _Source(name, kind, {}))
        if src.kind != kind:
            raise ValueError(f"convert: expected at least two modalities with distinct names, got {name!r} twice")
        key = split or None
        if key in src.folders:
            raise ValueError(f"convert: modality {name!r} is given {'for split ' + split if split else ''} twice")
        src.folders[key] = str(folder)
    return list(grouped.values())


Loader = Callable[[Row], np.ndarray]



def _load_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".pkl":
        # Pickles can run code: the converter reads only the dataset you point it at.
        with open(path, "rb") as f:
            obj = pickle.load(f)
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, torch.Tensor):
        obj = obj.numpy()
    arr = np.asarray(obj)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"holds {type(obj).__name__} of dtype {arr.dtype}; expected a numeric array")
    return arr


def _find(folder: Path, sample_id: str, exts: Sequence[str]) -> Path | None:
    for ext in exts:
        p = folder / f"{sample_id}{ext}"
        if p.is_file():
            return p
    return None




def _audio_loader(source: _Source, opt: AudioOptions, notes: Counter[str]) -> Loader:
    def load(row: Row) -> np.ndarray:
        folder = source.folder(row.split)
        path = _find(folder, row.id, AUDIO_EXTS)
        if path is None:
            raise FileNotFoundError(f"missing: no {folder / row.id}{{{','.join(AUDIO_EXTS)}}}")
        if path.suffix == ".wav":
            spec = _wav_features(path, opt, notes, source.name)  # (F, T)
        else:
            spec = _load_array(path).squeeze()
            if spec.ndim != 2:
                raise ValueError(f"shape: {path} holds shape {spec.shape}; expected a 2-D spectrogram")
            if opt.time_axis in (0, -2):
                spec = spec.T
            if opt.length is not None and spec.shape[1] != opt.length:
                how = "cropped" if spec.shape[1] > opt.length else "tiled" if opt.fit == "tile" else "zero-padded"
                notes[f"{source.name}: arrays {how} along time to {opt.length} frames"] += 1
                spec = _fit_length(spec, opt.length, axis=1, mode=opt.fit)
        return spec[None] if opt.layout == "image" else spec.T

    return load



def _frames_loader(source: _Source, opt: FrameOptions) -> Loader:
    def load(row: Row) -> np.ndarray:
        return read_clip_frames(source.folder(row.split) / f"{row.id}{opt.suffix}", opt)

    return load


def _features_loader(source: _Source) -> Loader:
    def load(row: Row) -> np.ndarray:
        folder = source.folder(row.split)
        path = _find(folder, row.id, (".npy", ".pkl", ".pt"))
        if path is None:
            raise FileNotFoundError(f"missing: no {folder / row.id}{{.npy,.pkl,.pt}}")
        return _load_array(path)

    return load
