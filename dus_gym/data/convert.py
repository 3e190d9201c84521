"""Convert audio-visual data laid out as OGM-GE, MLA or BalanceBenchmark lay it
out into a feature bundle (:mod:`dus_gym.data.bundle`).

Run ``python -m dus_gym.data.convert --help``. The pieces:

- **manifests** list ``(id, class)`` pairs, one file per split:
  ``csv`` (``id,label`` rows, OGM-GE's CREMA-D lists), ``mla`` (``id.ext
  Class`` lines) or ``last`` (label-last lists: comma- or whitespace-separated
  fields, the id first, the class last, as BalanceBenchmark's Kinetics-Sounds);
- **audio** (``--audio NAME=DIR``): per id ``DIR/ID.npy``, ``.pkl`` or ``.pt``
  holding a spectrogram or filterbank ``(F, T)``, or ``DIR/ID.wav`` turned
  into a log-mel spectrogram (:func:`log_mel`); cropped or tiled to a fixed
  length;
- **frames** (``--frames NAME=DIR``): per id a folder ``DIR/ID/`` of images;
  k frames sampled evenly, resized, stacked along the channels;
- **features** (``--features NAME=DIR``): per id an array of fixed shape
  (vectors, sequences), stored as it is.

Every manifest row becomes a sample unless something is wrong with it; such a
row is skipped and reported with its reason (missing file, unreadable file,
wrong shape, unknown class, duplicate id, non-finite values), on the terminal
and in a JSON report: nothing is dropped silently.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
import wave
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from tqdm import tqdm

# Package-internal helpers of the bundle module: name rules and the write-then-rename steps.
from dus_gym.data.bundle import _check_name, _publish_folder, save_bundle
from dus_gym.data.dataset import stratified_split

__all__ = [
    "MANIFEST_FORMATS",
    "ConversionRefused",
    "ConversionReport",
    "Skipped",
    "convert",
    "log_mel",
    "main",
    "mel_filterbank",
    "read_manifest",
    "read_wav",
]

MANIFEST_FORMATS = ("csv", "mla", "last")
SPLITS = {"train": 0, "val": 1, "test": 2}
AUDIO_EXTS = (".npy", ".pkl", ".pt", ".wav")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_ID_EXT = re.compile(r"\.[A-Za-z0-9]{1,5}$")


# -- manifests -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One manifest entry: a sample id, its class name, its split (or None), and where it was read."""

    id: str
    label: str
    split: str | None
    where: str


def _check_path(path: Path, what: str, folder: bool) -> None:
    """Refuse a path that does not exist or is of the wrong kind, in one line naming it.

    Raises:
        FileNotFoundError: nothing at ``path``.
        IsADirectoryError, NotADirectoryError: a folder where a file is
            expected, or the other way round.
    """
    expected = "a folder" if folder else "a file"
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; expected {expected}")
    if path.is_dir() and not folder:
        raise IsADirectoryError(f"{what} {str(path)!r} is a folder; expected {expected}")
    if folder and not path.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r} is a file; expected {expected}")


def _strip_ext(name: str) -> str:
    return _ID_EXT.sub("", name)


def read_manifest(path: str | Path, fmt: str = "auto", split: str | None = None) -> list[Row]:
    """Read the ``(id, class)`` rows of a manifest.

    Args:
        path: the list file.
        fmt: ``"csv"``: ``id,label`` per row (a first row ``id,label`` or
            ``name,...`` is taken as a header); ``"mla"``: ``ID.EXT CLASS`` per
            line, the class being the rest of the line; ``"last"``: fields
            separated by commas (if the line has one) or whitespace, the id
            first (an extension such as ``.mp4`` is dropped), the class last;
            ``"auto"``: ``csv`` for a ``.csv`` file, else ``last``.
        split: ``"train"``, ``"val"``, ``"test"`` or None, given to every row.

    Raises:
        ValueError: an unknown format, a file that is not UTF-8 text, or a
            line that has no class (naming the file and line number).
        FileNotFoundError, IsADirectoryError: no file at ``path``.
    """
    path = Path(path)
    _check_path(path, "manifest", folder=False)
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() == ".csv" else "last"
    if fmt not in MANIFEST_FORMATS:
        raise ValueError(f"unknown manifest format {fmt!r}; valid: {['auto', *MANIFEST_FORMATS]}")
    rows: list[Row] = []
    # utf-8-sig: OGM-GE's CSV files start with a byte-order mark.
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = list(csv.reader(f)) if fmt == "csv" else [[line] for line in f.read().splitlines()]
    except UnicodeDecodeError as err:
        raise ValueError(
            f"manifest {str(path)!r} is not UTF-8 text ({err}); expected a list of ids and classes"
        ) from None
    for number, fields in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if fmt == "csv":
            fields = [x.strip() for x in fields]
            if not any(fields):
                continue
            if number == 1 and fields[0].lower() in ("id", "name", "file", "filename", "path", "video"):
                continue
            if len(fields) < 2 or not fields[1]:
                raise ValueError(f"{where}: expected 'id,label', got {','.join(fields)!r}")
            rows.append(Row(fields[0], fields[1], split, where))
            continue
        line = fields[0].strip()
        if not line or line.startswith("#"):
            continue
        if fmt == "mla":
            parts = line.split(maxsplit=1)
            if len(parts) < 2:
                raise ValueError(f"{where}: expected 'ID.EXT CLASS', got {line!r}")
            rows.append(Row(_strip_ext(parts[0]), parts[1].strip(), split, where))
        else:
            parts = [p.strip() for p in line.split(",")] if "," in line else line.split()
            if len(parts) < 2 or not parts[-1]:
                raise ValueError(f"{where}: expected the id first and the class last, got {line!r}")
            rows.append(Row(_strip_ext(parts[0]), parts[-1], split, where))
    return rows


# -- audio -----------------------------------------------------------------------


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM ``.wav`` file as float32 samples in [-1, 1], channels averaged, and its sample rate (Hz)."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:  # 8-bit PCM is unsigned
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples; expected 8, 16, 24 or 32-bit PCM")
    return x.reshape(-1, channels).mean(axis=1), rate


@functools.lru_cache(maxsize=8)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` on the HTK mel scale
    (``2595 log10(1 + f / 700)``), unnormalised (peak 1), as torchaudio's
    ``melscale_fbanks(norm=None, mel_scale="htk")``."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"mel_filterbank: need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}, "
            f"sample_rate={sample_rate}"
        )
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_min, mel_max = (2595 * math.log10(1 + f / 700) for f in (f_min, f_max))
    mel = torch.linspace(mel_min, mel_max, n_mels + 2, dtype=torch.float64)
    hz = 700 * (10 ** (mel / 2595) - 1)
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (freqs - lower) / (center - lower)
    falling = (upper - freqs) / (upper - center)
    # Cached (lru_cache): callers must not modify the result in place.
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


def log_mel(
    samples: np.ndarray | torch.Tensor, sample_rate: int, n_fft: int = 512, hop_length: int = 256, n_mels: int = 128
) -> np.ndarray:
    """Log-mel spectrogram ``(n_mels, 1 + len // hop_length)`` of a mono waveform.

    Power spectrum of a centred STFT (Hann window of ``n_fft`` samples) through
    :func:`mel_filterbank`, then ``log(mel + 1e-6)`` (natural log of power).
    """
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"log_mel: expected a non-empty mono waveform, got shape {tuple(x.shape)}")
    if len(x) <= n_fft // 2:  # reflect padding needs more samples than half a window
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - len(x)))
    spec = torch.stft(x, n_fft, hop_length, window=torch.hann_window(n_fft), center=True, return_complex=True)
    power = spec.abs().square()
    return torch.log(mel_filterbank(sample_rate, n_fft, n_mels) @ power + 1e-6).numpy()


def _fit_length(x: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Crop (the start) or tile (repeat from the start, as OGM-GE does) along ``axis`` to ``length``."""
    n = x.shape[axis]
    if n < length:
        x = np.concatenate([x] * math.ceil(length / n), axis=axis)
    return np.take(x, np.arange(length), axis=axis)


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


# -- frames ----------------------------------------------------------------------


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def even_frame_indices(n: int, k: int) -> np.ndarray:
    """``k`` indices into ``n`` frames, one in the middle of each of ``k`` equal
    segments (repeats when ``n < k``)."""
    return ((np.arange(k) + 0.5) * n / k).astype(np.int64)


def _read_frames(folder: Path, k: int, size: tuple[int, int], gray: bool) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading frames needs Pillow: pip install 'dus_gym[convert]'") from None
    if not folder.is_dir():
        raise FileNotFoundError(f"no frame folder {folder}")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=lambda p: _natural_key(p.name))
    if not files:
        raise FileNotFoundError(f"frame folder {folder} holds no images ({', '.join(IMAGE_EXTS)})")
    out = []
    for i in even_frame_indices(len(files), k):
        try:
            with Image.open(files[i]) as img:
                frame = img.convert("L" if gray else "RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
                a = np.asarray(frame, dtype=np.float32) / 255.0
        except Exception as err:  # a broken image: reported as its sample's reason
            raise ValueError(f"{files[i]}: {err}") from None
        out.append(a[None] if gray else a.transpose(2, 0, 1))
    return np.concatenate(out, axis=0)


# -- the conversion --------------------------------------------------------------


@dataclass
class AudioOptions:
    """How audio becomes a fixed-shape array."""

    sample_rate: int = 16000
    """expected rate of .wav files (Hz); a file at another rate is reported, not resampled"""
    seconds: float = 3.0
    """.wav: the waveform is cropped or tiled to this duration before the STFT"""
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 128
    length: int | None = None
    """arrays: time frames kept (crop or tile); None: the first sample's"""
    time_axis: int = -1
    """arrays: which axis of a 2-D spectrogram is time (-1: the last, ``(F, T)``)"""
    layout: str = "image"
    """``"image"``: stored ``(1, F, T)`` (CNN); ``"sequence"``: ``(T, F)`` (GRU)"""


@dataclass
class FrameOptions:
    """How a folder of frames becomes ``(k * C, H, W)``."""

    num_frames: int = 1
    size: tuple[int, int] = (112, 112)
    """(H, W) after resizing"""
    gray: bool = False
    """one channel (depth, optical flow), else RGB"""


@dataclass
class Skipped:
    """A manifest row that did not become a sample, and why."""

    id: str
    where: str
    reason: str
    modality: str | None = None


@dataclass
class ConversionReport:
    """What the conversion did: rows read, samples kept, rows skipped with reasons."""

    rows: int = 0
    kept: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    output: str = ""
    modalities: dict[str, list[int]] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)

    def reasons(self) -> Counter[str]:
        """Counts of skipped rows by modality and kind of reason."""
        return Counter(f"{s.modality or 'manifest'}: {s.reason.split(':')[0]}" for s in self.skipped)

    def summary(self) -> str:
        lines = [f"kept {self.kept} of {self.rows} samples -> {self.output}"]
        lines += [f"  {name}: {tuple(shape)}" for name, shape in self.modalities.items()]
        if self.split_sizes:
            lines.append("  splits: " + ", ".join(f"{k} {v}" for k, v in self.split_sizes.items()))
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {n} x {r}" for r, n in sorted(self.reasons().items())]
            for s in self.skipped[:20]:
                lines.append(f"  {s.id} ({s.where}){' ' + s.modality if s.modality else ''}: {s.reason}")
            if len(self.skipped) > 20:
                lines.append(f"  ... {len(self.skipped) - 20} more in the JSON report")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


Loader = Callable[[str], np.ndarray]


class ConversionRefused(ValueError):
    """``strict`` conversion with rows that would be skipped: nothing was written."""


def _audio_loader(folder: Path, opt: AudioOptions) -> Loader:
    def load(sample_id: str) -> np.ndarray:
        path = _find(folder, sample_id, AUDIO_EXTS)
        if path is None:
            raise FileNotFoundError(f"missing: no {folder / sample_id}{{{','.join(AUDIO_EXTS)}}}")
        if path.suffix == ".wav":
            x, rate = read_wav(path)
            if rate != opt.sample_rate:
                raise ValueError(f"sample rate: {path} is {rate} Hz, expected {opt.sample_rate} (--sample-rate)")
            x = _fit_length(x, round(opt.seconds * rate), axis=0)
            spec = log_mel(x, rate, opt.n_fft, opt.hop_length, opt.n_mels)  # (F, T)
        else:
            spec = _load_array(path).squeeze()
            if spec.ndim != 2:
                raise ValueError(f"shape: {path} holds shape {spec.shape}; expected a 2-D spectrogram")
            if opt.time_axis in (0, -2):
                spec = spec.T
            if opt.length is not None:
                spec = _fit_length(spec, opt.length, axis=1)
        return spec[None] if opt.layout == "image" else spec.T

    return load


def _frames_loader(folder: Path, opt: FrameOptions) -> Loader:
    def load(sample_id: str) -> np.ndarray:
        if not (folder / sample_id).is_dir():
            raise FileNotFoundError(f"missing: no frame folder {folder / sample_id}")
        return _read_frames(folder / sample_id, opt.num_frames, opt.size, opt.gray)

    return load


def _features_loader(folder: Path) -> Loader:
    def load(sample_id: str) -> np.ndarray:
        path = _find(folder, sample_id, (".npy", ".pkl", ".pt"))
        if path is None:
            raise FileNotFoundError(f"missing: no {folder / sample_id}{{.npy,.pkl,.pt}}")
        return _load_array(path)

    return load


def convert(
    out: str | Path,
    manifests: Sequence[tuple[str | None, str | Path]],
    audio: Sequence[tuple[str, str | Path]] = (),
    frames: Sequence[tuple[str, str | Path]] = (),
    features: Sequence[tuple[str, str | Path]] = (),
    manifest_format: str = "auto",
    classes: Sequence[str] | None = None,
    audio_options: AudioOptions | None = None,
    frame_options: dict[str, FrameOptions] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    strict: bool = False,
    progress: bool = True,
    name: str | None = None,
) -> ConversionReport:
    """Build a bundle at ``out`` (``.npz`` or a folder) from manifests and per-id files.

    Args:
        manifests: ``(split, path)`` pairs; ``split`` is ``"train"``,
            ``"val"``, ``"test"`` or None (then the bundle has no fixed split
            and runs draw one from their seed). Mixing None and named splits
            is refused.
        audio, frames, features: ``(modality name, folder)`` pairs, in the
            order the bundle lists the modalities (audio, frames, features).
        classes: class names in label order; default: the manifests' class
            names sorted (numerically when they are all integers).
        frame_options: per frames modality; default :class:`FrameOptions`.
        val_fraction: with train and test manifests but no val one, this
            fraction of the kept training samples becomes the validation split
            (stratified, from ``seed``).
        strict: refuse to write anything if a row would be skipped.

    Returns:
        the report (also written as JSON: ``OUT/report.json`` for a folder,
        ``OUT.report.json`` beside an ``.npz``).
    """
    out = Path(out)
    # The output is checked first: a conversion can take hours, and save_bundle would refuse at the end.
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise FileExistsError(f"convert: {str(out)!r} exists; choose a new path or remove it")
    if out.suffix == ".npz" and out.is_dir():
        raise IsADirectoryError(f"convert: {str(out)!r} is a folder; expected a new .npz file path")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(f"convert: cannot write {str(out)!r}: {str(blocking)!r} is a file; expected a folder")
    audio_options = audio_options or AudioOptions()
    frame_options = frame_options or {}
    loaders: dict[str, Loader] = {}
    for mod, folder in audio:
        loaders[mod] = _audio_loader(Path(folder), audio_options)
    for mod, folder in frames:
        loaders[mod] = _frames_loader(Path(folder), frame_options.get(mod, FrameOptions()))
    for mod, folder in features:
        loaders[mod] = _features_loader(Path(folder))
    if len(loaders) < 2 or len(loaders) != len(audio) + len(frames) + len(features):
        names = [m for m, _ in (*audio, *frames, *features)]
        raise ValueError(f"convert: expected at least two modalities with distinct names, got {names}")
    for mod, folder in (*audio, *frames, *features):
        _check_name(mod, "convert")
        _check_path(Path(folder), f"convert: modality {mod!r}: folder", folder=True)
    named = [s is not None for s, _ in manifests]
    if not manifests or (any(named) and not all(named)):
        raise ValueError("convert: give manifests either all with a split (train=..., test=...) or one without")
    bad = [s for s, _ in manifests if s is not None and s not in SPLITS]
    if bad:
        raise ValueError(f"convert: unknown split {bad[0]!r}; valid: {list(SPLITS)}")

    rows = [r for split, path in manifests for r in read_manifest(path, manifest_format, split)]
    report = ConversionReport(rows=len(rows), output=str(out))
    if classes is None:
        seen = sorted({r.label for r in rows})
        classes = sorted(seen, key=int) if all(re.fullmatch(r"-?\d+", c) for c in seen) else seen
    class_index = {c: i for i, c in enumerate(classes)}
    report.class_names = list(classes)

    # Everything is written inside a temporary folder beside `out` (the sample
    # buffers, then the bundle and its report) and renamed into place at the
    # end: a conversion that fails or is interrupted leaves no half bundle.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.convert-", dir=out.parent))
    try:
        buffers: dict[str, np.ndarray] = {}
        kept_rows: list[Row] = []
        seen_ids: dict[str, str] = {}
        for row in tqdm(rows, desc=f"convert -> {out.name}", unit="sample", disable=not progress):
            if row.label not in class_index:
                reason = f"unknown class: {row.label!r} is not in {list(classes)}"
                report.skipped.append(Skipped(row.id, row.where, reason))
                continue
            if row.id in seen_ids:
                report.skipped.append(Skipped(row.id, row.where, f"duplicate id: first listed at {seen_ids[row.id]}"))
                continue
            seen_ids[row.id] = row.where
            sample: dict[str, np.ndarray] = {}
            failure: Skipped | None = None
            for mod, load in loaders.items():
                try:
                    x = np.asarray(load(row.id), dtype=np.float32)
                except Exception as err:  # any unreadable sample is reported, never fatal
                    failure = Skipped(row.id, row.where, _reason(err), mod)
                    break
                if mod in buffers and x.shape != buffers[mod].shape[1:]:
                    reason = f"shape: {x.shape}, expected {buffers[mod].shape[1:]} (the first sample's)"
                    failure = Skipped(row.id, row.where, reason, mod)
                    break
                if not np.isfinite(x).all():
                    failure = Skipped(row.id, row.where, "non-finite: NaN or inf values", mod)
                    break
                sample[mod] = x
            if failure is not None:
                report.skipped.append(failure)
                continue
            for mod, x in sample.items():
                if mod not in buffers:
                    # On disk, so a set larger than memory converts; one row per manifest row at most.
                    buffers[mod] = np.lib.format.open_memmap(
                        tmp / f"{mod}.npy", mode="w+", dtype=np.float32, shape=(len(rows), *x.shape)
                    )
                buffers[mod][len(kept_rows)] = x
            kept_rows.append(row)
        report.kept = len(kept_rows)
        report.modalities = {m: list(b.shape[1:]) for m, b in buffers.items()}
        if strict and report.skipped:
            raise ConversionRefused(
                f"strict: {len(report.skipped)} rows would be skipped; nothing written\n{report.summary()}"
            )
        if not kept_rows:
            raise ValueError(f"convert: no sample could be read\n{report.summary()}")

        n = len(kept_rows)
        labels = np.array([class_index[r.label] for r in kept_rows], dtype=np.int64)
        split = None
        if all(named):
            split = np.array([SPLITS[r.split] for r in kept_rows if r.split is not None], dtype=np.int64)
            if not np.any(split == 1) and val_fraction > 0:
                train = np.flatnonzero(split == 0)
                rng = np.random.default_rng(seed)
                carved = stratified_split(labels[train], (1 - val_fraction, val_fraction, 0.0), rng)
                split[train[carved.val.numpy()]] = 1
            report.split_sizes = {s: int(np.sum(split == i)) for s, i in SPLITS.items()}
            empty = [s for s, size in report.split_sizes.items() if size == 0]
            if empty:
                raise ValueError(
                    f"convert: split {empty[0]!r} is empty ({report.split_sizes}); give a manifest for it"
                    + (
                        f" or a larger --val-fraction (now {val_fraction}; it is rounded down class by class)"
                        if empty[0] == "val" else ""
                    )
                )
        arrays = {m: b[:n] for m, b in buffers.items()}
        source = {
            "converter": "dus_gym.data.convert",
            "manifests": [[s, str(p)] for s, p in manifests],
            "modalities": {m: str(f) for m, f in (*audio, *frames, *features)},
            "skipped": len(report.skipped),
        }
        staged = tmp / "bundle" / out.name  # a subfolder: no clash with the buffers' names
        staged.parent.mkdir()
        save_bundle(
            staged, arrays, labels, classes, split, [r.id for r in kept_rows],
            name=name or out.stem, extra={"source": source},
        )
        _publish(staged, out, report.to_json() + "\n")
    finally:
        buffers = {}
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _publish(staged: Path, out: Path, report: str) -> None:
    """Move the finished bundle ``staged`` to ``out`` with its JSON ``report``:
    ``OUT/report.json`` in a folder, ``OUT.report.json`` beside an ``.npz``."""
    if out.suffix != ".npz":
        (staged / "report.json").write_text(report, encoding="utf-8")
        _publish_folder(staged, out)
        return
    if out.exists():
        raise FileExistsError(f"convert: {str(out)!r} appeared while converting; choose a new path")
    report_path = out.with_suffix(".report.json")
    staged_report = staged.with_suffix(".report.json")
    staged_report.write_text(report, encoding="utf-8")
    # The report first: once the bundle is there, its report is too.
    os.replace(staged_report, report_path)
    try:
        os.replace(staged, out)
    except BaseException:
        report_path.unlink(missing_ok=True)
        raise


def _reason(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, FileNotFoundError) and not text.startswith("missing"):
        return f"missing: {text}"
    if text.split(":")[0] in ("missing", "shape", "sample rate"):
        return text
    return f"unreadable: {text}"


# -- command line ----------------------------------------------------------------


def _pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{what}: expected NAME=PATH, got {text!r}")
    return name, value


def _number(kind: Callable[[str], Any], low: float, high: float | None = None, open_low: bool = False
            ) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` (``int`` or ``float``) at least ``low``
    (more than ``low`` if ``open_low``) and below ``high`` (if given)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value < low or (open_low and value == low) or (high is not None and value >= high):
            bound = f"{'>' if open_low else '>='} {low:g}" + ("" if high is None else f" and < {high:g}")
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; expected a number {bound}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported in one line: the usage is long and would bury it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> _Parser:
    p = _Parser(
        prog="python -m dus_gym.data.convert",
        description=(
            "Convert an audio-visual dataset in the OGM-GE, MLA or BalanceBenchmark layout into a dus_gym "
            "feature bundle. Rows that cannot be read are skipped and reported (report.json), never dropped "
            "silently."
        ),
        epilog=(
            "example (OGM-GE CREMA-D): python -m dus_gym.data.convert cremad_bundle "
            "--manifest train=data/CREMA-D/train.csv --manifest test=data/CREMA-D/test.csv "
            "--classes NEU,HAP,SAD,FEA,DIS,ANG --audio audio=data/CREMA-D/AudioWAV "
            "--frames visual=data/CREMA-D/Image-01-FPS --num-frames 1 --frame-size 112 112"
        ),
    )
    p.add_argument("out", help="the bundle to write: a new folder, or a file ending in .npz")
    p.add_argument(
        "--manifest", action="append", required=True, metavar="[SPLIT=]PATH",
        help="a list of samples; SPLIT is train, val or test (repeat per split); without SPLIT, one list of all",
    )
    p.add_argument(
        "--manifest-format", default="auto", choices=["auto", *MANIFEST_FORMATS],
        help="csv: 'id,label' rows (OGM-GE); mla: 'ID.EXT CLASS' lines (MLA); last: id first, class last, "
        "comma or space separated (BalanceBenchmark); auto: csv for .csv files, else last (default)",
    )
    p.add_argument("--classes", help="class names in label order, comma-separated (default: sorted)")
    p.add_argument("--audio", action="append", default=[], metavar="NAME=DIR",
                   help="audio modality: DIR/ID.wav (log-mel) or DIR/ID.npy|.pkl|.pt (spectrogram F x T)")
    p.add_argument("--frames", action="append", default=[], metavar="NAME=DIR",
                   help="video modality: DIR/ID/ holds the frames of ID (jpg, png, ...)")
    p.add_argument("--features", action="append", default=[], metavar="NAME=DIR",
                   help="precomputed features: DIR/ID.npy|.pkl|.pt of one fixed shape, stored as they are")
    a = p.add_argument_group("audio")
    a.add_argument("--sample-rate", type=_number(int, 1), default=16000, help=".wav sample rate in Hz (default 16000)")
    a.add_argument("--seconds", type=_number(float, 0, open_low=True), default=3.0,
                   help=".wav: crop or tile to this duration (default 3.0)")
    a.add_argument("--n-fft", type=_number(int, 2), default=512, help="STFT window in samples (default 512)")
    a.add_argument("--hop-length", type=_number(int, 1), default=256, help="STFT hop in samples (default 256)")
    a.add_argument("--n-mels", type=_number(int, 1), default=128, help="mel bands (default 128)")
    a.add_argument("--audio-length", type=_number(int, 1), default=None,
                   help="arrays: time frames kept, by crop or tile (default: the first sample's)")
    a.add_argument("--time-axis", type=int, default=-1, choices=[0, 1, -1],
                   help="arrays: the time axis of a 2-D spectrogram (default -1: F x T)")
    a.add_argument("--audio-layout", default="image", choices=["image", "sequence"],
                   help="store audio as 1 x F x T (image: CNN encoders) or T x F (sequence: GRU)")
    v = p.add_argument_group("frames")
    v.add_argument("--num-frames", type=_number(int, 1), default=1, help="frames k sampled evenly per clip (default 1)")
    v.add_argument("--frame-size", type=_number(int, 1), nargs=2, default=(112, 112), metavar=("H", "W"),
                   help="frame size after resizing (default 112 112)")
    v.add_argument("--gray", action="append", default=[], metavar="NAME",
                   help="read this frames modality as one channel (depth, flow); repeatable")
    o = p.add_argument_group("output")
    o.add_argument("--val-fraction", type=_number(float, 0.0, 1.0), default=0.1,
                   help="without a val manifest: share of the training samples made validation (default 0.1)")
    o.add_argument("--seed", type=int, default=0, help="seed of that validation draw (default 0)")
    o.add_argument("--name", help="dataset name in the bundle (default: the output's name)")
    o.add_argument("--strict", action="store_true", help="write nothing if any row would be skipped")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status.

    0: written; 1: ``--strict`` refused, or a system error (disk full...);
    2: a bad option or path, printed as one ``error:`` line. A usage mistake
    (unknown option, a value of the wrong type) exits with status 2 from
    argparse, also in one line.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        manifests: list[tuple[str | None, str]] = []
        for m in args.manifest:
            split, sep, path = m.partition("=")
            if sep and split not in SPLITS and not Path(m).exists():
                raise ValueError(
                    f"--manifest {m!r}: unknown split {split!r}; expected SPLIT=PATH with SPLIT one of "
                    f"{list(SPLITS)}, or a path alone"
                )
            manifests.append((split, path) if sep and split in SPLITS else (None, m))
        frames = [_pair(f, "--frames") for f in args.frames]
        unknown_gray = [g for g in args.gray if g not in {n for n, _ in frames}]
        if unknown_gray:
            raise ValueError(f"--gray {unknown_gray[0]!r}: not a --frames modality ({[n for n, _ in frames]})")
        frame_opt = {
            n: FrameOptions(args.num_frames, tuple(args.frame_size), n in args.gray) for n, _ in frames
        }
        report = convert(
            args.out,
            manifests,
            audio=[_pair(a, "--audio") for a in args.audio],
            frames=frames,
            features=[_pair(f, "--features") for f in args.features],
            manifest_format=args.manifest_format,
            classes=args.classes.split(",") if args.classes else None,
            audio_options=AudioOptions(
                args.sample_rate, args.seconds, args.n_fft, args.hop_length, args.n_mels,
                args.audio_length, args.time_axis, args.audio_layout,
            ),
            frame_options=frame_opt,
            val_fraction=args.val_fraction,
            seed=args.seed,
            strict=args.strict,
            progress=not args.no_progress,
            name=args.name,
        )
    except ConversionRefused as err:
        print(err, file=sys.stderr)
        return 1
    except (
        ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
        argparse.ArgumentTypeError,
    ) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # not a usage mistake: the machine's (disk full, permissions)
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    print(report.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
