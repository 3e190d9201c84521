"""Layouts (``--layout NAME``): the options each codebase's loader fixes for one dataset, so that a tree
laid out as that loader reads it converts with its paths alone. docs/bundles.md cites the lines of each
loader a layout follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CREMAD_CLASSES", "KS_FBANK_NORM", "LAYOUTS", "Layout"]

CREMAD_CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
"""The label order of OGM-GE's and BalanceBenchmark's CREMA-D loaders (their ``class_dict``)."""
KS_FBANK_NORM = (-4.503877, 2 * 5.141276)
"""``(mean, scale)`` of OGM-GE's ``data/KineticSound/process_audio.py``: ``(fbank - mean) / (std * 2)``."""


@dataclass(frozen=True)
class Layout:
    """The options a codebase's loader fixes for one dataset (``--layout NAME``).

    Paths are not part of it: ``--manifest``, ``--audio`` and ``--frames``
    (and ``--class-list`` where the loader reads one) still name them.
    ``source`` cites the loader. Fields left None keep the global default.
    """

    codebase: str
    dataset: str
    source: str
    manifest_format: str
    classes: tuple[str, ...] | None = None
    class_list_format: str | None = None
    class_order: str | None = None
    duplicates: str = "first"
    audio: dict[str, Any] = field(default_factory=dict)
    frames: dict[str, Any] = field(default_factory=dict)


_KS_FBANK = {"recipe": "kaldi_fbank", "time_axis": 0, "norm": KS_FBANK_NORM}
LAYOUTS: dict[str, Layout] = {
    "ogm_ge_cremad": Layout(
        "OGM-GE", "CREMA-D", "OGM-GE dataset/CramedDataset.py", "csv", classes=CREMAD_CLASSES,
        audio={"recipe": "ogm_ge"}, frames={"rule": "first", "num_frames": 1},
    ),
    "ogm_ge_ks": Layout(
        "OGM-GE", "Kinetics-Sounds", "OGM-GE dataset/dataset.py", "class_first", class_list_format="csv",
        class_order="sorted", audio=_KS_FBANK, frames={"rule": "segment_start", "num_frames": 3},
    ),
    "ogm_ge_ave": Layout(
        "OGM-GE", "AVE", "OGM-GE dataset/dataset.py", "class_first", class_list_format="csv", class_order="sorted",
        duplicates="last", audio=_KS_FBANK, frames={"rule": "segment_start", "num_frames": 3},
    ),
    "ogm_ge_vggsound": Layout(
        "OGM-GE", "VGGSound", "OGM-GE dataset/VGGSoundDataset.py", "vggsound", class_order="first_train",
        audio={"recipe": "ogm_ge", "sample_rate": 16000, "seconds": 5.0, "n_fft": 256, "hop_length": 128},
        frames={"rule": "first", "num_frames": 3, "min_frames": 4, "suffix": ".mp4"},
    ),
    "mla_cremad": Layout(
        "MLA", "CREMA-D", "MLA dataset/dataset.py (AVDataset)", "mla", class_list_format="lines",
        class_order="sorted", audio={"recipe": "kaldi_fbank", "time_axis": 0},
        frames={"rule": "segment_start", "num_frames": 3},
    ),
    "mla_ks": Layout(
        "MLA", "Kinetics-Sounds", "MLA dataset/dataset.py (AVDataset)", "mla", class_list_format="mla_ks",
        class_order="sorted", audio={"recipe": "kaldi_fbank", "time_axis": 0},
        frames={"rule": "segment_start", "num_frames": 3},
    ),
    "bb_cremad": Layout(
        "BalanceBenchmark", "CREMA-D", "BalanceBenchmark balancemm/datasets/cremad_dataset.py", "csv",
        classes=CREMAD_CLASSES, audio=_KS_FBANK, frames={"rule": "segment_middle", "num_frames": 2, "min_frames": 2},
    ),
    "bb_ks": Layout(
        "BalanceBenchmark", "Kinetics-Sounds", "BalanceBenchmark balancemm/datasets/KS_dataset.py", "last",
        audio=_KS_FBANK, frames={"rule": "bb", "num_frames": 3, "min_frames": 4},
    ),
    "bb_vggsound": Layout(
        "BalanceBenchmark", "VGGSound", "BalanceBenchmark balancemm/datasets/VGG_dataset.py", "vggsound",
        class_order="first_train", audio={"time_axis": -1}, frames={"rule": "bb", "num_frames": 3, "min_frames": 4},
    ),
    "bb_balancedav": Layout(
        "BalanceBenchmark", "BalancedAV", "BalanceBenchmark balancemm/datasets/balance_dataset.py", "balancedav",
        audio={"time_axis": -1}, frames={"rule": "bb", "num_frames": 3},
    ),
}
"""``--layout`` presets; docs/bundles.md cites the file and lines each one follows."""
