"""Convert audio-visual data laid out as OGM-GE, MLA or BalanceBenchmark lay it
out into a feature bundle (:mod:`dus_gym.data.bundle`).

Run ``python -m dus_gym.data.convert --help``; ``--layout NAME`` (one of
:data:`LAYOUTS`) sets every option that a codebase's own loader fixes (list
format, class order, duplicate rows, audio recipe, frame choice), so that a
tree laid out as that loader reads it converts with its paths alone. The
pieces:

- **manifests** list ``(id, class)`` pairs: one file per split, or one file
  that carries the split of each row (VGGSound's CSV, BalancedAV's JSON).
  Formats: ``csv`` (``id,class``), ``class_first`` (``class,id``), ``mla``
  (``ID.EXT Class with spaces``), ``last`` (the id first, the class last),
  ``vggsound`` (``ytid,start,class,split``) and ``balancedav`` (JSON);
- **audio** (``--audio NAME=DIR``): per id ``DIR/ID.npy``, ``.pkl`` or ``.pt``
  holding a spectrogram or filterbank, or ``DIR/ID.wav`` turned into one by a
  recipe: ``mel`` (dus_gym's log-mel), ``ogm_ge`` (OGM-GE's log-magnitude
  STFT, :func:`ogm_ge_spectrogram`) or ``kaldi_fbank`` (the Kaldi filterbank of
  MLA and BalanceBenchmark, :func:`kaldi_fbank`);
- **frames** (``--frames NAME=DIR``): per id a folder ``DIR/ID/`` of images
  (or ``DIR/ID.hdf5``, BalancedAV), taken in sorted order; k frames chosen by
  a codebase's rule, resized, stacked along the channels;
- **features** (``--features NAME=DIR``): per id an array of fixed shape,
  stored as it is.

A folder may hold ``{split}`` (``audio/{split}_fbank``), or be given per split
(``--audio audio@train=DIR --audio audio@test=DIR``), for codebases that keep
train and test media apart.

Every manifest row becomes a sample unless something is wrong with it; such a
row is skipped and reported with its reason (missing file, unreadable file,
wrong shape, unknown class, duplicate id, too few frames, non-finite values),
on the terminal and in a JSON report, also when the conversion fails (an
empty split, no sample at all, ``--strict``): nothing is dropped silently.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from tqdm import tqdm

# Package-internal helpers of the bundle module: name rules and the write-then-rename steps.
from dus_gym.data.bundle import _check_name, _publish_folder, save_bundle
from dus_gym.data.dataset import stratified_split

__all__ = [
    "AUDIO_RECIPES",
    "FRAME_RULES",
    "LAYOUTS",
    "MANIFEST_FORMATS",
    "AudioOptions",
    "ConversionFailed",
    "ConversionRefused",
    "ConversionReport",
    "FrameOptions",
    "Layout",
    "Skipped",
    "convert",
    "even_frame_indices",
    "frame_indices",
    "kaldi_fbank",
    "kaldi_mel_banks",
    "log_mel",
    "main",
    "mel_filterbank",
    "ogm_ge_spectrogram",
    "read_class_list",
    "read_manifest",
    "read_wav",
    "resample",
]

MANIFEST_FORMATS = ("csv", "class_first", "mla", "last", "vggsound", "balancedav")
CLASS_LIST_FORMATS = ("csv", "lines", "mla_ks")
CLASS_ORDERS = ("sorted", "numeric", "listed", "first_train")
AUDIO_RECIPES = ("mel", "ogm_ge", "kaldi_fbank")
FRAME_RULES = ("even", "first", "segment_start", "segment_middle", "bb")
SPLITS = {"train": 0, "val": 1, "test": 2}
AUDIO_EXTS = (".npy", ".pkl", ".pt", ".wav")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MEDIA_EXTS = (".mp4", ".flv", ".avi", ".mkv", ".webm", ".mov", ".wav", ".mp3", ".m4a", ".jpg", ".png")
"""Extensions dropped from an id in ``mla`` and ``last`` lists (``clip.flv`` -> ``clip``)."""
CREMAD_CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
"""The label order of OGM-GE's and BalanceBenchmark's CREMA-D loaders (their ``class_dict``)."""
KS_FBANK_NORM = (-4.503877, 2 * 5.141276)
"""``(mean, scale)`` of OGM-GE's ``data/KineticSound/process_audio.py``: ``(fbank - mean) / (std * 2)``."""
_BALANCEDAV_SUBSETS = {"training": "train", "testing": "test", "validation": "val", "validating": "val"}


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
    lower = name.lower()
    return next((name[: -len(e)] for e in MEDIA_EXTS if lower.endswith(e)), name)


def _read_text(path: Path, what: str) -> str:
    try:
        # utf-8-sig: OGM-GE's CSV files start with a byte-order mark.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{what} {str(path)!r} is not UTF-8 text ({err}); expected a list of ids and classes"
        ) from None


def read_manifest(path: str | Path, fmt: str = "auto", split: str | None = None) -> list[Row]:
    """Read the ``(id, class)`` rows of a manifest.

    Args:
        path: the list file.
        fmt: one of :data:`MANIFEST_FORMATS` or ``"auto"``:

            - ``"csv"``: ``id,class`` per row (a first row ``id,...`` or
              ``name,...`` is a header): OGM-GE's and BalanceBenchmark's
              CREMA-D lists;
            - ``"class_first"``: ``class,id`` per row: OGM-GE's KS and AVE
              lists (``dataset/dataset.py``);
            - ``"mla"``: ``ID.EXT CLASS`` per line, the class being the rest of
              the line (spaces allowed): MLA's lists;
            - ``"last"``: fields separated by commas (if the line has one) or
              whitespace, the id first, the class last: BalanceBenchmark's KS
              lists, whose class is a number. Lines with different numbers of
              fields are refused (a class name with spaces cannot be told
              from the fields before it);
            - ``"vggsound"``: VGGSound's CSV ``ytid,start,class,split``; the id
              is ``ytid_start`` and every row carries its split;
            - ``"balancedav"``: BalancedAV's JSON
              (``{"database": {id: {"subset": "training", "label": ...}},
              "labels": [...]}``); every row carries its split;
            - ``"auto"``: ``csv`` for ``.csv``, ``balancedav`` for ``.json``,
              else ``last``.

            ``mla`` and ``last`` drop a media extension from the id
            (``.flv``, ``.mp4``, ...).
        split: ``"train"``, ``"val"``, ``"test"`` or None, given to every row
            (not allowed for the formats whose rows carry their split).

    Raises:
        ValueError: an unknown format, a file that is not UTF-8 text, or a
            line that has no class (naming the file and line number).
        FileNotFoundError, IsADirectoryError: no file at ``path``.
    """
    path = Path(path)
    _check_path(path, "manifest", folder=False)
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = "csv" if suffix == ".csv" else "balancedav" if suffix == ".json" else "last"
    if fmt not in MANIFEST_FORMATS:
        raise ValueError(f"unknown manifest format {fmt!r}; valid: {['auto', *MANIFEST_FORMATS]}")
    if fmt in ("vggsound", "balancedav") and split is not None:
        raise ValueError(
            f"manifest {str(path)!r}: a {fmt} manifest carries the split of every row; give it without SPLIT="
        )
    text = _read_text(path, "manifest")
    if fmt == "balancedav":
        return _read_balancedav(path, text)
    rows: list[Row] = []
    if fmt in ("csv", "class_first", "vggsound"):
        for number, fields_ in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            where = f"{path}:{number}"
            fields_ = [x.strip() for x in fields_]
            if not any(fields_):
                continue
            if number == 1 and fields_[0].lower() in ("id", "name", "file", "filename", "path", "video", "class",
                                                       "label", "youtube_id", "ytid"):
                continue
            if fmt == "vggsound":
                if len(fields_) < 4 or not all(fields_[:4]):
                    raise ValueError(f"{where}: expected 'youtube_id,start,class,split', got {','.join(fields_)!r}")
                rows.append(Row(f"{fields_[0]}_{fields_[1]}", fields_[2], fields_[3], where))
                continue
            if len(fields_) < 2 or not fields_[0] or not fields_[1]:
                expected = "id,class" if fmt == "csv" else "class,id"
                raise ValueError(f"{where}: expected '{expected}', got {','.join(fields_)!r}")
            if fmt == "class_first" and len(fields_) == 3 and fields_[1].isdigit() and fields_[2].isdigit():
                # The lists OGM-GE ships (data/KineticSound/my_train.txt) are 'id,10,class'; its own
                # dataset.py reads 'class,id' and would find no file for any row.
                raise ValueError(
                    f"{where}: {','.join(fields_)!r} is an 'id,N,class' row, as OGM-GE ships its Kinetics-Sounds "
                    "lists, not 'class,id' (which its dataset.py reads): give --manifest-format last (the id first, "
                    "the class last)"
                )
            sample_id, label = (fields_[0], fields_[1]) if fmt == "csv" else (fields_[1], fields_[0])
            rows.append(Row(sample_id, label, split, where))
        return rows
    counts: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if fmt == "mla":
            parts = line.split(maxsplit=1)
            if len(parts) < 2:
                raise ValueError(f"{where}: expected 'ID.EXT CLASS', got {line!r}")
            rows.append(Row(_strip_ext(parts[0]), parts[1].strip(), split, where))
            continue
        parts = [p.strip() for p in line.split(",")] if "," in line else line.split()
        if len(parts) < 2 or not parts[-1]:
            raise ValueError(f"{where}: expected the id first and the class last, got {line!r}")
        if counts and len(parts) not in counts:
            (n1, w1), n2, w2 = next(iter(counts.items())), len(parts), where
            raise ValueError(
                f"{path}: lines have different numbers of fields ({n1} at {w1}, {n2} at {w2}); the 'last' format "
                "takes the last field as the class, so a class name with spaces would be cut: use a list whose "
                "class is one field (BalanceBenchmark's KS lists end with a class number), or --manifest-format mla"
            )
        counts.setdefault(len(parts), where)
        rows.append(Row(_strip_ext(parts[0]), parts[-1], split, where))
    return rows


def _read_balancedav(path: Path, text: str) -> list[Row]:
    try:
        data = json.loads(text)
        database = data["database"]
        if not isinstance(database, dict):
            raise TypeError("'database' is not an object")
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"manifest {str(path)!r}: {err}; expected BalancedAV's JSON {{'database': {{id: {{'subset', 'label'}}}}, "
            "'labels': [...]}}"
        ) from None
    rows = []
    for key, entry in database.items():
        where = f"{path}:database[{key!r}]"
        if not isinstance(entry, dict) or "label" not in entry or "subset" not in entry:
            raise ValueError(f"{where}: expected an object with 'subset' and 'label', got {entry!r}")
        subset = str(entry["subset"])
        rows.append(Row(str(key), str(entry["label"]), _BALANCEDAV_SUBSETS.get(subset, subset), where))
    return rows


def _manifest_classes(path: Path, fmt: str) -> list[str] | None:
    """The class list a manifest itself declares (BalancedAV's ``labels``), else None."""
    if fmt != "balancedav" and not (fmt == "auto" and path.suffix.lower() == ".json"):
        return None
    labels = json.loads(_read_text(path, "manifest")).get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"manifest {str(path)!r}: 'labels' must be a list of class names, got {labels!r}")
    return labels


def read_class_list(path: str | Path, fmt: str = "csv") -> list[str]:
    """Class names from a class list file (``stat.txt``), in file order.

    ``fmt``: ``"csv"``: the first field of each CSV row (OGM-GE's
    ``dataset/dataset.py`` reads ``stat.txt`` so); ``"lines"``: each line,
    stripped (MLA's ``stat_cre.txt``); ``"mla_ks"``: of the lines that split
    into three parts at ``" >"``, the first part (MLA's ``stat_ks.txt``).
    Empty lines are skipped.
    """
    path = Path(path)
    _check_path(path, "class list", folder=False)
    if fmt not in CLASS_LIST_FORMATS:
        raise ValueError(f"unknown class list format {fmt!r}; valid: {list(CLASS_LIST_FORMATS)}")
    text = _read_text(path, "class list")
    if fmt == "csv":
        names = [r[0].strip() for r in csv.reader(io.StringIO(text, newline="")) if r and r[0].strip()]
    elif fmt == "lines":
        names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        names = [parts[0] for line in text.splitlines() if len(parts := line.strip().split(" >")) == 3]
    if not names:
        raise ValueError(f"class list {str(path)!r} names no class (format {fmt!r})")
    return names


# -- audio -----------------------------------------------------------------------


def _read_wav_channels(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM ``.wav`` file as float32 samples ``(n, channels)`` in [-1, 1] and its sample rate (Hz)."""
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
    x = x.reshape(-1, channels)
    if len(x) == 0:
        raise ValueError(f"{path}: no samples")
    return x, rate


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM ``.wav`` file as float32 samples in [-1, 1], channels averaged, and its sample rate (Hz)."""
    x, rate = _read_wav_channels(path)
    return x.mean(axis=1), rate


# The "kaiser_best" filter of resampy (0.4), which librosa.load used by default
# before librosa 0.10: a Kaiser-windowed sinc with 50 zero crossings on each side.
_KAISER_BEST = {"num_zeros": 50, "rolloff": 0.9173473712608761, "beta": 12.984585039593508}


def _sinc_taps(frac: np.ndarray, scale: float, reach: int) -> np.ndarray:
    """Weights ``(len(frac), 2 * reach + 1)`` of input samples ``n - reach .. n + reach`` for outputs at
    ``n + frac``: ``s * h(s * |frac - d|)`` (:func:`resample`)."""
    zeros, rolloff, beta = _KAISER_BEST["num_zeros"], _KAISER_BEST["rolloff"], _KAISER_BEST["beta"]
    u = scale * np.abs(frac[:, None] - np.arange(-reach, reach + 1)[None, :])
    taper = np.i0(beta * np.sqrt(np.clip(1.0 - (u / zeros) ** 2, 0.0, None))) / np.i0(beta)
    return np.where(u < zeros, scale * rolloff * np.sinc(rolloff * u) * taper, 0.0)


@functools.lru_cache(maxsize=8)
def _polyphase_taps(orig_rate: int, new_rate: int) -> np.ndarray:
    g = math.gcd(orig_rate, new_rate)
    up = new_rate // g
    scale = min(1.0, new_rate / orig_rate)
    # Cached (lru_cache): callers must not modify the result in place.
    return _sinc_taps(np.arange(up) / up, scale, math.ceil(_KAISER_BEST["num_zeros"] / scale) + 1)


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a mono waveform, as ``librosa.load(path, sr=new_rate)``
    does with ``res_type="kaiser_best"`` (resampy's filter, librosa's default before 0.10).

    Each output sample ``j`` sits at input time ``t = j * orig_rate / new_rate``
    and is ``sum_k x[k] * s * h(s * |t - k|)`` over the input samples, with
    ``s = min(1, new_rate / orig_rate)`` and ``h(u) = r sinc(r u) kaiser(u / Z)``
    for ``u < Z`` (``Z = 50`` zero crossings, roll-off ``r = 0.9173``, Kaiser
    beta 12.98). resampy reads ``h`` from a table interpolated linearly; here
    it is evaluated exactly (the two differ by about 1e-9), once per phase
    ``t - floor(t)`` (``new_rate / gcd`` phases). The output has
    ``floor(n * new / orig)`` computed samples and is zero-padded to
    ``ceil(n * new / orig)``, as librosa pads resampy's output.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"resample: expected a non-empty mono waveform, got shape {x.shape}")
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"resample: sample rates must be positive, got {orig_rate} and {new_rate}")
    if orig_rate == new_rate:
        return x.astype(np.float32)
    n_computed = int(len(x) * float(new_rate) / float(orig_rate))
    n_out = math.ceil(len(x) * new_rate / orig_rate)
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    scale = min(1.0, new_rate / orig_rate)
    reach = math.ceil(_KAISER_BEST["num_zeros"] / scale) + 1
    position = np.arange(n_computed, dtype=np.int64) * down
    base, phase = position // up, position % up
    padded = np.pad(x, (reach, reach + 1))
    y = np.zeros(n_out, dtype=np.float64)
    if up <= 4096:
        taps = _polyphase_taps(orig_rate, new_rate)
        for i in range(2 * reach + 1):  # input sample base + i - reach, for every output at once
            y[:n_computed] += taps[phase, i] * padded[base + i]
    else:  # rates without a small common period: each output's weights
        for start in range(0, n_computed, 4096):
            sl = slice(start, min(start + 4096, n_computed))
            w = _sinc_taps(phase[sl] / up, scale, reach)
            y[sl] = (w * padded[base[sl, None] + np.arange(2 * reach + 1)[None, :]]).sum(axis=1)
    return y.astype(np.float32)


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
    """Log-mel spectrogram ``(n_mels, 1 + len // hop_length)`` of a mono waveform
    (the ``mel`` recipe, dus_gym's own).

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


def ogm_ge_spectrogram(
    samples: np.ndarray, sample_rate: int, target_rate: int = 22050, seconds: float = 3.0, n_fft: int = 512,
    hop_length: int = 353, pad_mode: str = "reflect",
) -> np.ndarray:
    """OGM-GE's CREMA-D audio (``dataset/CramedDataset.py``, ``__getitem__``):
    ``(n_fft // 2 + 1, 1 + round(seconds * target_rate) // hop_length)``, 257 x 188 by default.

    1. resample to ``target_rate`` (:func:`resample`, as ``librosa.load(sr=22050)``);
    2. repeat from the start to ``seconds`` and cut there (OGM-GE:
       ``np.tile(samples, 3)[:22050 * 3]``; the same for every clip of at least
       ``seconds / 3``, and a clip that short would give OGM-GE a shorter
       spectrogram its batches could not stack: here it is tiled further);
    3. clip to [-1, 1];
    4. ``log(|STFT| + 1e-7)``: a centred STFT, periodic Hann window of ``n_fft``,
       hop ``hop_length``, the signal padded by reflection (``librosa.stft``
       before librosa 0.10; ``pad_mode="constant"`` gives librosa >= 0.10's
       zero padding, which changes the first and last frame only).

    OGM-GE's VGGSound loader (``dataset/VGGSoundDataset.py``) is the same with
    ``target_rate=16000, seconds=5, n_fft=256, hop_length=128`` (129 x 626),
    except that it starts its 5 s at a random point of the first 5 s of the
    clip repeated to 10 s; here it starts at 0.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"ogm_ge_spectrogram: expected a non-empty mono waveform, got shape {x.shape}")
    if sample_rate != target_rate:
        x = resample(x, sample_rate, target_rate)
    x = np.clip(_fit_length(x, round(seconds * target_rate), axis=0), -1.0, 1.0)
    t = torch.from_numpy(np.ascontiguousarray(x))
    spec = torch.stft(
        t, n_fft, hop_length, window=torch.hann_window(n_fft), center=True, pad_mode=pad_mode, return_complex=True
    )
    return torch.log(spec.abs() + 1e-7).numpy()


@functools.lru_cache(maxsize=8)
def kaldi_mel_banks(num_bins: int, padded_window_size: int, sample_rate: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi's triangular mel filters ``(num_bins, padded_window_size // 2 + 1)``
    (``mel = 1127 ln(1 + f / 700)``, triangles equally spaced in mel between
    ``low_freq`` and ``high_freq`` (``<= 0``: that far below Nyquist), over the
    FFT bins below Nyquist; the Nyquist bin gets no weight), as
    ``torchaudio.compliance.kaldi.get_mel_banks`` computes them without VTLN
    warping: in float32, in the same order (float64 would differ by up to
    about 1e-5, which moves the log energy of a faint band by up to 5e-4)."""
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0 <= low_freq < high <= nyquist:
        raise ValueError(f"kaldi_mel_banks: need 0 <= low_freq < high_freq <= Nyquist, got {low_freq}, {high}")
    mel_low, mel_high = (1127.0 * math.log(1.0 + f / 700.0) for f in (low_freq, high))
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    mel = (1127.0 * (1.0 + sample_rate / padded_window_size * torch.arange(padded_window_size // 2) / 700.0).log())
    mel = mel.unsqueeze(0)
    banks = torch.clamp(torch.min((mel - left) / (center - left), (right - mel) / (right - center)), min=0.0)
    # Cached (lru_cache): callers must not modify the result in place.
    return torch.nn.functional.pad(banks, (0, 1))


def kaldi_fbank(
    samples: np.ndarray, sample_rate: int, num_mel_bins: int = 128, frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0, low_freq: float = 20.0, preemphasis: float = 0.97,
) -> np.ndarray:
    """Kaldi log mel filterbank ``(frames, num_mel_bins)`` of a mono waveform, as
    ``torchaudio.compliance.kaldi.fbank(w, htk_compat=True, sample_frequency=sr,
    use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
    frame_shift=10)`` computes it: the call of MLA's ``data/extract_fbank.py``
    and of OGM-GE's ``data/KineticSound/process_audio.py``, which
    BalanceBenchmark's KS and CREMA-D features follow. No torchaudio needed.

    Frames of ``frame_length_ms`` every ``frame_shift_ms`` (only whole frames:
    ``1 + (n - length) // shift``); per frame: minus its mean, pre-emphasis
    ``x[i] - 0.97 x[i-1]`` (``x[-1] = x[0]``), a symmetric Hann window, zeros to
    the next power of two, power spectrum, :func:`kaldi_mel_banks`, then
    ``log(max(energy, eps))`` with ``eps`` float32's machine epsilon; in
    float32, as torchaudio on a float32 waveform. A waveform shorter than one
    frame gives no frames.
    """
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if x.ndim != 1:
        raise ValueError(f"kaldi_fbank: expected a mono waveform, got shape {tuple(x.shape)}")
    shift = int(sample_rate * frame_shift_ms * 0.001)
    length = int(sample_rate * frame_length_ms * 0.001)
    padded = 1 << (length - 1).bit_length()
    if len(x) < length:
        return np.zeros((0, num_mel_bins), dtype=np.float32)
    frames = x.unfold(0, length, shift)  # (1 + (n - length) // shift, length)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.nn.functional.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
    frames = frames - preemphasis * previous[:, :-1]
    frames = frames * torch.hann_window(length, periodic=False, dtype=frames.dtype).unsqueeze(0)
    frames = torch.nn.functional.pad(frames.unsqueeze(0), (0, padded - length), mode="constant", value=0.0)
    power = torch.fft.rfft(frames.squeeze(0)).abs().pow(2.0)
    energies = torch.mm(power, kaldi_mel_banks(num_mel_bins, padded, float(sample_rate), low_freq).T)
    return torch.max(energies, torch.tensor(torch.finfo(torch.float32).eps)).log().numpy()


def _fit_length(x: np.ndarray, length: int, axis: int, mode: str = "tile") -> np.ndarray:
    """Crop (keep the start) or extend along ``axis`` to ``length``: ``tile``
    repeats from the start (as OGM-GE tiles its waveforms), ``zero`` pads with
    zeros at the end (as the Kaldi filterbank scripts pad to 1024 frames)."""
    n = x.shape[axis]
    if n == 0:
        raise ValueError("shape: empty along time")
    if n < length:
        if mode == "zero":
            pad = [(0, 0)] * x.ndim
            pad[axis] = (0, length - n)
            return np.pad(x, pad)
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


def frame_indices(n: int, k: int, rule: str = "even") -> np.ndarray:
    """Which ``k`` of ``n`` frames (0-based, in sorted order) a rule takes; ``seg = n // k``.

    - ``even``: :func:`even_frame_indices` (dus_gym's own);
    - ``first``: the first ``k`` (OGM-GE's CREMA-D and VGGSound loaders read
      ``image_samples[i]`` for ``i < k``; fewer than ``k`` frames is an error);
    - ``segment_start``: ``i * seg`` (MLA's ``allimages[int(seg * i)]``;
      OGM-GE's KS/AVE ``frame_0000{seg * i + 1}.jpg``);
    - ``segment_middle``: ``i * seg + seg // 2`` (BalanceBenchmark's CREMA-D
      loader at test time);
    - ``bb``: ``t - 1`` with ``t = i * seg + max(seg // 2, 1)`` if ``n > 6``
      else ``t = 1`` (BalanceBenchmark's KS ``frame_0000{t}.jpg`` and VGGSound
      ``image_samples[t - 1]`` at test time).
    """
    if n < 1 or k < 1:
        raise ValueError(f"frame_indices: need n >= 1 frames and k >= 1, got n={n}, k={k}")
    seg = n // k
    i = np.arange(k)
    if rule == "even":
        return even_frame_indices(n, k)
    if rule == "first":
        if n < k:
            raise ValueError(f"frames: {n} frame(s), fewer than the {k} that rule 'first' reads")
        return i
    if rule == "segment_start":
        return i * seg
    if rule == "segment_middle":
        return i * seg + seg // 2
    if rule == "bb":
        return (i * seg + max(seg // 2, 1) - 1) if n > 6 else np.zeros(k, dtype=np.int64)
    raise ValueError(f"unknown frame rule {rule!r}; valid: {list(FRAME_RULES)}")


def _image_array(img: Any, size: tuple[int, int], gray: bool) -> np.ndarray:
    from PIL import Image

    frame = img.convert("L" if gray else "RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    a = np.asarray(frame, dtype=np.float32) / 255.0
    return a[None] if gray else a.transpose(2, 0, 1)


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading frames needs Pillow: pip install 'dus_gym[convert]'") from None
    return Image


# -- the conversion --------------------------------------------------------------


@dataclass
class AudioOptions:
    """How audio becomes a fixed-shape array. ``None``: the recipe's default."""

    sample_rate: int | None = None
    """.wav: resample to this rate first (mel: 16000, ogm_ge: 22050, kaldi_fbank: the file's own)"""
    seconds: float | None = None
    """.wav, mel and ogm_ge: tile or crop the waveform to this duration (default 3.0)"""
    n_fft: int | None = None
    """mel and ogm_ge: STFT window in samples (default 512)"""
    hop_length: int | None = None
    """mel and ogm_ge: STFT hop in samples (mel 256, ogm_ge 353)"""
    n_mels: int | None = None
    """mel and kaldi_fbank: mel bands (default 128)"""
    length: int | None = None
    """time frames kept: kaldi_fbank from .wav (None: 1024, zero-padded or cut) and arrays (None: as they are)"""
    time_axis: int = -1
    """arrays: which axis of a 2-D spectrogram is time (-1: the last, ``(F, T)``; 0: ``(T, F)``)"""
    layout: str = "image"
    """``"image"``: stored ``(1, F, T)`` (CNN); ``"sequence"``: ``(T, F)`` (GRU)"""
    recipe: str = "mel"
    """.wav files: ``mel``, ``ogm_ge`` or ``kaldi_fbank`` (:data:`AUDIO_RECIPES`)"""
    fit: str = "tile"
    """arrays with ``length``: extend by ``tile`` (repeat) or ``zero`` (pad)"""
    norm: tuple[float, float] | None = None
    """kaldi_fbank: ``(mean, scale)``, stored ``(fbank - mean) / scale``"""

    def resolved(self) -> AudioOptions:
        """A copy with the recipe's defaults filled in."""
        defaults: dict[str, dict[str, Any]] = {
            "mel": {"sample_rate": 16000, "seconds": 3.0, "n_fft": 512, "hop_length": 256, "n_mels": 128},
            "ogm_ge": {"sample_rate": 22050, "seconds": 3.0, "n_fft": 512, "hop_length": 353},
            "kaldi_fbank": {"n_mels": 128},
        }
        if self.recipe not in defaults:
            raise ValueError(f"unknown audio recipe {self.recipe!r}; valid: {list(AUDIO_RECIPES)}")
        unused = {"ogm_ge": ("n_mels", "norm"), "mel": ("norm",), "kaldi_fbank": ("seconds", "n_fft", "hop_length")}
        for name in unused[self.recipe]:
            if getattr(self, name) is not None:
                raise ValueError(f"audio option {name!r} is not used by the {self.recipe!r} recipe")
        if self.layout not in ("image", "sequence"):
            raise ValueError(f"audio layout {self.layout!r}; expected 'image' or 'sequence'")
        if self.fit not in ("tile", "zero"):
            raise ValueError(f"audio fit {self.fit!r}; expected 'tile' or 'zero'")
        return replace(self, **{k: v for k, v in defaults[self.recipe].items() if getattr(self, k) is None})


@dataclass
class FrameOptions:
    """How a folder of frames becomes ``(k * C, H, W)``."""

    num_frames: int = 1
    size: tuple[int, int] = (112, 112)
    """(H, W) after resizing"""
    gray: bool = False
    """one channel (depth, optical flow), else RGB"""
    rule: str = "even"
    """which frames: :func:`frame_indices`"""
    min_frames: int = 1
    """a clip with fewer images is skipped (as a codebase's loader drops it)"""
    suffix: str = ""
    """appended to the id to name its folder (OGM-GE's VGGSound folders end in ``.mp4``)"""


@dataclass
class Skipped:
    """A manifest row that did not become a sample, and why."""

    id: str
    where: str
    reason: str
    modality: str | None = None
    split: str | None = None


@dataclass
class ConversionReport:
    """What the conversion did: rows read, samples kept, rows skipped with reasons."""

    rows: int = 0
    kept: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    output: str = ""
    written: bool = False
    """whether the bundle was written (False in the report of a failed conversion)"""
    error: str | None = None
    layout: str | None = None
    modalities: dict[str, list[int]] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    rows_per_split: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    """counts of things done to samples that were kept: resampled, tiled, cropped, padded"""
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def reasons(self) -> Counter[str]:
        """Counts of skipped rows by modality and kind of reason."""
        return Counter(f"{s.modality or 'manifest'}: {s.reason.split(':')[0]}" for s in self.skipped)

    def summary(self) -> str:
        head = "kept" if self.written or not self.error else "would keep"
        lines = [f"{head} {self.kept} of {self.rows} samples -> {self.output}"]
        lines += [f"  {name}: {tuple(shape)}" for name, shape in self.modalities.items()]
        if self.split_sizes:
            lines.append("  splits: " + ", ".join(f"{k} {v}" for k, v in self.split_sizes.items()))
        lines += [f"  note: {n} x {what}" for what, n in sorted(self.notes.items())]
        lines += [f"  warning: {w}" for w in self.warnings]
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


class ConversionFailed(ValueError):
    """No bundle could be written from the rows (none readable, or a split
    left empty); the report with every skipped row was written to ``report_path``."""

    def __init__(self, message: str, report: ConversionReport, report_path: Path | None) -> None:
        super().__init__(message)
        self.report = report
        self.report_path = report_path


class ConversionRefused(ConversionFailed):
    """``strict`` conversion with rows that would be skipped: no bundle was written (the report was)."""


def report_path_for(out: str | Path, written: bool = True) -> Path:
    """Where the JSON report goes: ``OUT/report.json`` in a written folder
    bundle, else ``OUT.report.json`` beside it (an ``.npz``, or a folder that
    was not written because the conversion failed)."""
    out = Path(out)
    if out.suffix == ".npz":
        return out.with_suffix(".report.json")
    return out / "report.json" if written else out.with_name(out.name + ".report.json")


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


def _wav_features(path: Path, opt: AudioOptions, notes: Counter[str], mod: str) -> np.ndarray:
    """A ``.wav`` file through the recipe, ``(F, T)``."""
    channels, rate = _read_wav_channels(path)
    if opt.recipe == "kaldi_fbank":
        # torchaudio.load, then `waveform - waveform.mean()` (over all channels); kaldi.fbank reads the first.
        wave_t = torch.from_numpy(np.ascontiguousarray(channels.T))
        x = (wave_t - wave_t.mean())[0].numpy()
        if opt.sample_rate is not None and rate != opt.sample_rate:
            x, rate = resample(x, rate, opt.sample_rate), opt.sample_rate
            notes[f"{mod}: resampled"] += 1
        assert opt.n_mels is not None
        frames = opt.length or 1024  # MLA's and OGM-GE's scripts: target_length = 1024
        fbank = kaldi_fbank(x, rate, opt.n_mels)
        if len(fbank) == 0:
            raise ValueError(f"shape: {path} is shorter than one 25 ms frame")
        if len(fbank) != frames:
            notes[f"{mod}: {'zero-padded' if len(fbank) < frames else 'cropped'} to {frames} frames"] += 1
            fbank = _fit_length(fbank, frames, axis=0, mode="zero")
        if opt.norm is not None:
            fbank = (fbank - opt.norm[0]) / opt.norm[1]
        return fbank.T
    x = channels.mean(axis=1)  # librosa.load(mono=True) averages the channels
    assert opt.sample_rate is not None and opt.seconds is not None and opt.n_fft and opt.hop_length
    if rate != opt.sample_rate:
        x = resample(x, rate, opt.sample_rate)
        notes[f"{mod}: resampled {rate} -> {opt.sample_rate} Hz"] += 1
    target = round(opt.seconds * opt.sample_rate)
    if len(x) != target:
        notes[f"{mod}: {'tiled' if len(x) < target else 'cropped'} to {opt.seconds:g} s"] += 1
    if opt.recipe == "ogm_ge":
        return ogm_ge_spectrogram(x, opt.sample_rate, opt.sample_rate, opt.seconds, opt.n_fft, opt.hop_length)
    assert opt.n_mels is not None
    return log_mel(_fit_length(x, target, axis=0), opt.sample_rate, opt.n_fft, opt.hop_length, opt.n_mels)


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
        Image = _pillow()
        base = source.folder(row.split) / f"{row.id}{opt.suffix}"
        if base.is_dir():
            files = sorted((p for p in base.iterdir() if p.suffix.lower() in IMAGE_EXTS),
                           key=lambda p: _natural_key(p.name))
            if len(files) < max(opt.min_frames, 1):
                raise ValueError(
                    f"frames: {base} holds {len(files)} image(s), fewer than {max(opt.min_frames, 1)}"
                    + (" (--min-frames: the codebase's loader drops such a clip)" if opt.min_frames > 1 else "")
                )
            out = []
            for i in frame_indices(len(files), opt.num_frames, opt.rule):
                try:
                    with Image.open(files[i]) as img:
                        out.append(_image_array(img, opt.size, opt.gray))
                except Exception as err:  # a broken image: reported as its sample's reason
                    raise ValueError(f"{files[i]}: {err}") from None
            return np.concatenate(out, axis=0)
        h5 = base.with_name(base.name + ".hdf5")
        if h5.is_file():
            return _read_hdf5_frames(h5, opt, Image)
        raise FileNotFoundError(f"missing: no frame folder {base} (nor {h5.name})")

    return load


def _read_hdf5_frames(path: Path, opt: FrameOptions, Image: Any) -> np.ndarray:
    """BalancedAV: an ``.hdf5`` file whose dataset ``video`` holds encoded images."""
    try:
        import h5py
    except ImportError:
        raise ImportError("reading .hdf5 frames needs h5py: pip install 'dus_gym[convert]'") from None
    with h5py.File(path, "r") as f:
        if "video" not in f:
            raise ValueError(f"{path}: no dataset 'video' (BalancedAV keeps encoded frames there)")
        video = f["video"]
        n = len(video)
        if n < max(opt.min_frames, 1):
            raise ValueError(f"frames: {path} holds {n} frame(s), fewer than {max(opt.min_frames, 1)}")
        idx = frame_indices(n, opt.num_frames, opt.rule)
        if opt.rule == "bb":  # BalanceBenchmark's BalancedAV loader indexes video_data[t], not [t - 1]
            idx = idx + 1
        out = []
        for i in idx:
            if i >= n:
                raise ValueError(f"frames: {path} holds {n} frames; the {opt.rule!r} rule reads frame {i}")
            try:
                with Image.open(io.BytesIO(np.asarray(video[i]).tobytes())) as img:
                    out.append(_image_array(img, opt.size, opt.gray))
            except Exception as err:
                raise ValueError(f"{path}: frame {i}: {err}") from None
    return np.concatenate(out, axis=0)


def _features_loader(source: _Source) -> Loader:
    def load(row: Row) -> np.ndarray:
        folder = source.folder(row.split)
        path = _find(folder, row.id, (".npy", ".pkl", ".pt"))
        if path is None:
            raise FileNotFoundError(f"missing: no {folder / row.id}{{.npy,.pkl,.pt}}")
        return _load_array(path)

    return load


def _class_order(rows: Sequence[Row], order: str) -> list[str]:
    """The class names of ``rows`` in ``order``: ``first_train``, ``sorted`` (Python's ``sorted()`` on the
    names, as OGM-GE's and MLA's loaders sort theirs: ``'13' < '27' < '4'``) or ``numeric`` (by value;
    names that are not all integers are sorted as strings, as ``sorted``)."""
    if order == "first_train":
        ordered = [r.label for r in rows if r.split == "train"] + [r.label for r in rows]
        return list(dict.fromkeys(ordered))
    seen = sorted({r.label for r in rows})
    if order == "numeric" and all(re.fullmatch(r"-?\d+", c) for c in seen):
        return sorted(seen, key=int)
    return seen


def convert(
    out: str | Path,
    manifests: Sequence[tuple[str | None, str | Path]],
    audio: Sequence[tuple[str, str | Path]] = (),
    frames: Sequence[tuple[str, str | Path]] = (),
    features: Sequence[tuple[str, str | Path]] = (),
    manifest_format: str = "auto",
    classes: Sequence[str] | None = None,
    audio_options: AudioOptions | None = None,
    frame_options: Mapping[str, FrameOptions] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    strict: bool = False,
    progress: bool = True,
    name: str | None = None,
    *,
    class_list: str | Path | None = None,
    class_list_format: str = "csv",
    class_order: str | None = None,
    duplicates: str = "first",
    layout: str | None = None,
) -> ConversionReport:
    """Build a bundle at ``out`` (``.npz`` or a folder) from manifests and per-id files.

    Args:
        manifests: ``(split, path)`` pairs; ``split`` is ``"train"``,
            ``"val"``, ``"test"`` or None: the rows of a manifest without split
            have none (the bundle then has no fixed split and runs draw one
            from their seed) unless its format carries one per row
            (``vggsound``, ``balancedav``). Rows with and without split
            together are refused.
        audio, frames, features: ``(modality, folder)`` pairs, in the order
            the bundle lists the modalities (audio, then frames, then
            features). ``modality@split`` gives the folder of one split; a
            folder may hold ``{split}``, replaced by each row's split.
        classes: class names; with ``class_list`` (a ``stat.txt`` read by
            :func:`read_class_list` in ``class_list_format``) the other way
            to fix the classes (a row of another class is skipped).
        class_order: ``"listed"`` (as given), ``"sorted"`` (Python's
            ``sorted()`` on the names, as OGM-GE's and MLA's loaders: numbers
            too are sorted as strings, ``'13' < '27' < '4'``), ``"numeric"``
            (by value when all names are integers, else as ``sorted``) or
            ``"first_train"`` (order of first appearance among training rows,
            OGM-GE's VGGSound). Default: ``listed`` for ``classes``,
            ``numeric`` otherwise (the layouts set the loader's own order); a
            ``balancedav`` manifest's own ``labels`` are listed.
        duplicates: ``"first"`` keeps the first row of an id, ``"last"`` the
            last (OGM-GE's AVE loader); the others are skipped.
        audio_options: one for every audio modality; default :class:`AudioOptions`.
        frame_options: per frames modality; default :class:`FrameOptions`.
        val_fraction: with train and test rows but no val rows, this
            fraction of the kept training samples becomes the validation split
            (stratified, from ``seed``).
        strict: write no bundle if a row would be skipped.
        layout: the ``--layout`` name, recorded in the report.

    Returns:
        the report (also written as JSON, see :func:`report_path_for`).

    Raises:
        ConversionFailed: no row could be read, or a split is left empty;
            ``ConversionRefused`` (a subclass) for ``strict``. The report,
            with every skipped row, is written beside ``out`` first.
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
    audio_options = (audio_options or AudioOptions()).resolved()
    frame_options = dict(frame_options or {})
    sources = [*_sources("audio", audio), *_sources("frames", frames), *_sources("features", features)]
    names = [s.name for s in sources]
    if len(sources) < 2 or len(set(names)) != len(names):
        raise ValueError(f"convert: expected at least two modalities with distinct names, got {names}")
    unknown = [m for m in frame_options if m not in {s.name for s in sources if s.kind == "frames"}]
    if unknown:
        raise ValueError(f"convert: frame options for {unknown[0]!r}, which is not a frames modality")
    for src in sources:
        _check_name(src.name, "convert")
        for template in src.folders.values():
            if "{split}" not in template:
                _check_path(Path(template), f"convert: modality {src.name!r}: folder", folder=True)
    if not manifests:
        raise ValueError("convert: give at least one manifest")
    bad = [s for s, _ in manifests if s is not None and s not in SPLITS]
    if bad:
        raise ValueError(f"convert: unknown split {bad[0]!r}; valid: {list(SPLITS)}")
    if duplicates not in ("first", "last"):
        raise ValueError(f"convert: duplicates={duplicates!r}; expected 'first' or 'last'")

    rows = [r for split, path in manifests for r in read_manifest(path, manifest_format, split)]
    has_split = [r.split is not None for r in rows]
    if any(has_split) and not all(has_split):
        raise ValueError("convert: give manifests either all with a split (train=..., test=...) or one without")
    splits_used: set[str | None] = {r.split for r in rows if r.split in SPLITS} if any(has_split) else {None}
    for src in sources:
        for split, folder in src.concrete(splits_used):
            where = f"convert: modality {src.name!r}: folder" + (f" (split {split!r})" if split else "")
            _check_path(folder, where, folder=True)

    declared = None
    if classes is None and class_list is None:
        declared = next((c for _, p in manifests if (c := _manifest_classes(Path(p), manifest_format))), None)
    if classes is not None:
        classes = list(classes)
        order = class_order or "listed"
    elif class_list is not None:
        classes = read_class_list(class_list, class_list_format)
        order = class_order or "numeric"
    elif declared is not None:
        classes = declared
        order = class_order or "listed"
    else:
        order = class_order or "numeric"
    if order not in CLASS_ORDERS:
        raise ValueError(f"convert: class order {order!r}; valid: {list(CLASS_ORDERS)}")
    if classes is None:
        classes = _class_order(rows, order)
    elif order in ("sorted", "numeric"):
        classes = _class_order([Row("", c, None, "") for c in classes], order)
    elif order == "first_train":
        appearing = [c for c in _class_order(rows, "first_train") if c in set(classes)]
        classes = appearing + [c for c in classes if c not in set(appearing)]
    if len(set(classes)) != len(classes):
        raise ValueError(f"convert: class {next(c for c in classes if classes.count(c) > 1)!r} is listed twice")
    class_index = {c: i for i, c in enumerate(classes)}

    report = ConversionReport(rows=len(rows), output=str(out), layout=layout, class_names=list(classes))
    report.options = {
        "manifest_format": manifest_format, "class_order": order, "duplicates": duplicates,
        "audio": asdict(audio_options) if audio else None,
        "frames": {m: asdict(o) for m, o in frame_options.items()},
    }
    report.rows_per_split = dict(Counter(str(r.split) for r in rows))
    if all(re.fullmatch(r"-?\d+", c) for c in classes) and [int(c) for c in classes] != list(range(len(classes))):
        report.warnings.append(
            f"the class names are numbers but not 0..{len(classes) - 1} ({classes[:5]}...): label k is the k-th "
            "class in this order, not the number itself"
        )
    notes: Counter[str] = Counter()
    loaders: dict[str, Loader] = {}
    for src in sources:
        if src.kind == "audio":
            loaders[src.name] = _audio_loader(src, audio_options, notes)
        elif src.kind == "frames":
            loaders[src.name] = _frames_loader(src, frame_options.get(src.name, FrameOptions()))
        else:
            loaders[src.name] = _features_loader(src)

    last_of: dict[str, int] = {}
    if duplicates == "last":
        for i, r in enumerate(rows):
            if r.label in class_index:
                last_of[r.id] = i

    # Everything is written inside a temporary folder beside `out` (the sample
    # buffers, then the bundle and its report) and renamed into place at the
    # end: a conversion that fails or is interrupted leaves no half bundle.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.convert-", dir=out.parent))
    try:
        buffers: dict[str, np.ndarray] = {}
        kept_rows: list[Row] = []
        seen_ids: dict[str, str] = {}
        for index, row in enumerate(tqdm(rows, desc=f"convert -> {out.name}", unit="sample", disable=not progress)):
            skip = functools.partial(Skipped, row.id, row.where, split=row.split)
            if row.split is not None and row.split not in SPLITS:
                report.skipped.append(skip(f"split: {row.split!r} is not one of {list(SPLITS)}"))
                continue
            if row.label not in class_index:
                report.skipped.append(skip(f"unknown class: {row.label!r} is not in {list(classes)}"))
                continue
            if duplicates == "last" and last_of[row.id] != index:
                later = rows[last_of[row.id]].where
                report.skipped.append(skip(f"duplicate id: listed again at {later}, which is kept (--duplicates last)"))
                continue
            if row.id in seen_ids:
                report.skipped.append(skip(f"duplicate id: first listed at {seen_ids[row.id]}"))
                continue
            seen_ids[row.id] = row.where
            sample: dict[str, np.ndarray] = {}
            failure: Skipped | None = None
            for mod, load in loaders.items():
                try:
                    x = np.asarray(load(row), dtype=np.float32)
                except Exception as err:  # any unreadable sample is reported, never fatal
                    failure = skip(_reason(err), mod)
                    break
                if mod in buffers and x.shape != buffers[mod].shape[1:]:
                    reason = f"shape: {x.shape}, expected {buffers[mod].shape[1:]} (the first sample's)"
                    failure = skip(reason, mod)
                    break
                if not np.isfinite(x).all():
                    failure = skip("non-finite: NaN or inf values", mod)
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
        report.notes = dict(notes)
        report.modalities = {m: list(b.shape[1:]) for m, b in buffers.items()}
        fitted = [k for k in notes if ": arrays " in k and ("tiled" in k or "zero-padded" in k)]
        if fitted:
            report.warnings.append(
                "; ".join(f"{notes[k]} of {report.kept} samples' {k}" for k in fitted)
                + ": check --time-axis and the length if this is unexpected"
            )
        if strict and report.skipped:
            _fail(report, out, f"strict: {len(report.skipped)} rows would be skipped; no bundle written",
                  ConversionRefused)
        if not kept_rows:
            _fail(report, out, "convert: no sample could be read")

        n = len(kept_rows)
        labels = np.array([class_index[r.label] for r in kept_rows], dtype=np.int64)
        split_codes: np.ndarray | None = None
        if any(has_split):
            split_codes = np.array([SPLITS[str(r.split)] for r in kept_rows], dtype=np.int64)
            if not np.any(split_codes == 1) and val_fraction > 0:
                train = np.flatnonzero(split_codes == 0)
                rng = np.random.default_rng(seed)
                carved = stratified_split(labels[train], (1 - val_fraction, val_fraction, 0.0), rng)
                split_codes[train[carved.val.numpy()]] = 1
            report.split_sizes = {s: int(np.sum(split_codes == i)) for s, i in SPLITS.items()}
            # A split whose rows were all skipped first: it says more than a split nobody listed.
            empty = sorted((s for s, size in report.split_sizes.items() if size == 0),
                           key=lambda s: report.rows_per_split.get(s, 0) == 0)
            if empty:
                s = empty[0]
                read = report.rows_per_split.get(s, 0)
                lost = Counter(f"{k.modality or 'manifest'}: {k.reason.split(':')[0]}" for k in report.skipped
                               if k.split == s)
                why = (
                    f"its {read} rows were all skipped ({', '.join(f'{v} x {k}' for k, v in lost.most_common(3))})"
                    if read else "no row has it"
                )
                hint = (
                    f"; give a manifest for it or a larger --val-fraction (now {val_fraction}; it is rounded down "
                    "class by class)" if s == "val" and not read else
                    "; are its files in another folder (a {split} folder, or NAME@" + s + "=DIR)?" if read else
                    "; give a manifest for it"
                )
                _fail(report, out, f"convert: split {s!r} is empty ({report.split_sizes}): {why}{hint}")
        arrays = {m: b[:n] for m, b in buffers.items()}
        source = {
            "converter": "dus_gym.data.convert",
            "layout": layout,
            "manifests": [[s, str(p)] for s, p in manifests],
            "modalities": {src.name: {str(k): v for k, v in src.folders.items()} for src in sources},
            "skipped": len(report.skipped),
        }
        staged = tmp / "bundle" / out.name  # a subfolder: no clash with the buffers' names
        staged.parent.mkdir()
        save_bundle(
            staged, arrays, labels, classes, split_codes, [r.id for r in kept_rows],
            name=name or out.stem, extra={"source": source},
        )
        report.written = True
        _publish(staged, out, report.to_json() + "\n")
        if out.suffix != ".npz":  # the report of an earlier failed try, beside the folder
            report_path_for(out, written=False).unlink(missing_ok=True)
    finally:
        buffers = {}
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _fail(report: ConversionReport, out: Path, message: str, kind: type[ConversionFailed] = ConversionFailed
          ) -> NoReturn:
    """Write the report of a conversion that writes no bundle, then raise ``kind``."""
    path: Path | None = report_path_for(out, written=False)
    report.error = message
    report.written = False
    try:
        assert path is not None
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(report.to_json() + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        path = None
    where = f"\nevery row and its reason: {path}" if path else ""
    raise kind(f"{message}\n{report.summary()}{where}", report, path)


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
    if text.split(":")[0] in ("missing", "shape", "sample rate", "frames"):
        return text
    return f"unreadable: {text}"


# -- layouts ---------------------------------------------------------------------


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


# -- command line ----------------------------------------------------------------


def _pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{what}: expected NAME=PATH, got {text!r} (or NAME@SPLIT=PATH)")
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
            "Convert an audio-visual dataset laid out as OGM-GE, MLA or BalanceBenchmark read it into a dus_gym "
            "feature bundle. Rows that cannot be read are skipped and reported (report.json), never dropped "
            "silently. --layout sets everything a codebase's loader fixes; the paths are still yours."
        ),
        epilog=(
            "layouts: " + ", ".join(f"{k} ({v.codebase} {v.dataset})" for k, v in LAYOUTS.items()) + ". "
            "Example (OGM-GE CREMA-D): python -m dus_gym.data.convert cremad_bundle --layout ogm_ge_cremad "
            "--manifest train=OGM-GE_CVPR2022/data/CREMAD/train.csv "
            "--manifest test=OGM-GE_CVPR2022/data/CREMAD/test.csv "
            "--audio audio=CREMA-D/AudioWAV --frames visual=CREMA-D/Image-01-FPS. Every command: docs/bundles.md"
        ),
    )
    p.add_argument("out", help="the bundle to write: a new folder, or a file ending in .npz")
    p.add_argument("--layout", choices=list(LAYOUTS), help="a codebase's loader for one dataset: sets the options "
                   "below to what that loader does (options given explicitly win)")
    p.add_argument(
        "--manifest", action="append", required=True, metavar="[SPLIT=]PATH",
        help="a list of samples; SPLIT is train, val or test (repeat per split); without SPLIT, one list of all "
        "(or, for vggsound and balancedav, a list whose rows carry their split)",
    )
    p.add_argument(
        "--manifest-format", default=None, choices=["auto", *MANIFEST_FORMATS],
        help="csv: 'id,class' rows; class_first: 'class,id' rows (OGM-GE KS/AVE); mla: 'ID.EXT Class' lines; "
        "last: id first, class last (BalanceBenchmark KS); vggsound: 'ytid,start,class,split'; balancedav: JSON; "
        "auto: csv for .csv, balancedav for .json, else last (default)",
    )
    c = p.add_argument_group("classes")
    c.add_argument("--classes", help="class names, comma-separated (label order unless --class-order)")
    c.add_argument("--class-list", metavar="PATH", help="a file of class names (stat.txt); rows of other classes "
                   "are skipped")
    c.add_argument("--class-list-format", choices=list(CLASS_LIST_FORMATS), default=None,
                   help="csv: the first field of each row (OGM-GE, default); lines: each line (MLA); mla_ks: MLA's "
                   "stat_ks.txt")
    c.add_argument("--class-order", choices=list(CLASS_ORDERS), default=None,
                   help="label order: listed (as --classes gives it), sorted (Python's sorted() on the names, as "
                   "OGM-GE's and MLA's loaders: '13' < '4'), numeric (by value when all names are integers; default "
                   "without --classes), first_train (first appearance among training rows)")
    c.add_argument("--duplicates", choices=["first", "last"], default=None,
                   help="which row of a repeated id is kept (default first; OGM-GE's AVE keeps the last)")
    p.add_argument("--audio", action="append", default=[], metavar="NAME[@SPLIT]=DIR",
                   help="audio modality: DIR/ID.wav (through --audio-recipe) or DIR/ID.npy|.pkl|.pt (a 2-D "
                   "spectrogram); DIR may hold {split}")
    p.add_argument("--frames", action="append", default=[], metavar="NAME[@SPLIT]=DIR",
                   help="video modality: DIR/ID/ holds the frames of ID (jpg, png, ...), or DIR/ID.hdf5")
    p.add_argument("--features", action="append", default=[], metavar="NAME[@SPLIT]=DIR",
                   help="precomputed features: DIR/ID.npy|.pkl|.pt of one fixed shape, stored as they are")
    a = p.add_argument_group("audio")
    a.add_argument("--audio-recipe", choices=list(AUDIO_RECIPES), default=None,
                   help=".wav files: mel (dus_gym's log-mel, default), ogm_ge (OGM-GE's log |STFT|, 257 x 188), "
                   "kaldi_fbank (MLA's and BalanceBenchmark's 128-bin Kaldi filterbank, 1024 frames)")
    a.add_argument("--sample-rate", type=_number(int, 1), default=None,
                   help=".wav: resample to this rate first (mel 16000, ogm_ge 22050, kaldi_fbank: the file's)")
    a.add_argument("--seconds", type=_number(float, 0, open_low=True), default=None,
                   help=".wav, mel and ogm_ge: tile or crop to this duration (default 3.0)")
    a.add_argument("--n-fft", type=_number(int, 2), default=None, help="mel, ogm_ge: STFT window (default 512)")
    a.add_argument("--hop-length", type=_number(int, 1), default=None,
                   help="mel, ogm_ge: STFT hop (mel 256, ogm_ge 353)")
    a.add_argument("--n-mels", type=_number(int, 1), default=None, help="mel, kaldi_fbank: bands (default 128)")
    a.add_argument("--audio-norm", type=float, nargs=2, default=None, metavar=("MEAN", "SCALE"),
                   help="kaldi_fbank: store (fbank - MEAN) / SCALE (OGM-GE's process_audio.py: -4.503877 10.282552)")
    a.add_argument("--audio-length", type=_number(int, 1), default=None,
                   help="time frames kept: kaldi_fbank (default 1024, zero-padded) and arrays (default: as they are)")
    a.add_argument("--audio-fit", choices=["tile", "zero"], default=None,
                   help="arrays shorter than --audio-length: tile (repeat, default) or zero (pad)")
    a.add_argument("--time-axis", type=int, default=None, choices=[0, 1, -1],
                   help="arrays: the time axis of a 2-D spectrogram (-1: F x T, default; 0: T x F, the Kaldi "
                   "filterbanks of MLA and BalanceBenchmark)")
    a.add_argument("--audio-layout", default="image", choices=["image", "sequence"],
                   help="store audio as 1 x F x T (image: CNN encoders) or T x F (sequence: GRU)")
    v = p.add_argument_group("frames")
    v.add_argument("--num-frames", type=_number(int, 1), default=None, help="frames k per clip (default 1)")
    v.add_argument("--frame-rule", choices=list(FRAME_RULES), default=None,
                   help="which k frames, in sorted file order: even (default), first, segment_start (MLA, OGM-GE "
                   "KS/AVE), segment_middle (BalanceBenchmark CREMA-D), bb (BalanceBenchmark KS/VGGSound)")
    v.add_argument("--min-frames", type=_number(int, 1), default=None,
                   help="skip a clip with fewer images (as a codebase's loader drops it)")
    v.add_argument("--frame-suffix", default=None, help="appended to an id to name its frame folder (e.g. .mp4)")
    v.add_argument("--frame-size", type=_number(int, 1), nargs=2, default=(112, 112), metavar=("H", "W"),
                   help="frame size after resizing (default 112 112)")
    v.add_argument("--gray", action="append", default=[], metavar="NAME",
                   help="read this frames modality as one channel (depth, flow); repeatable")
    o = p.add_argument_group("output")
    o.add_argument("--val-fraction", type=_number(float, 0.0, 1.0), default=0.1,
                   help="without val rows: share of the training samples made validation (default 0.1)")
    o.add_argument("--seed", type=int, default=0, help="seed of that validation draw (default 0)")
    o.add_argument("--name", help="dataset name in the bundle (default: the output's name)")
    o.add_argument("--strict", action="store_true", help="write no bundle if any row would be skipped")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status.

    0: written; 1: no bundle written because of the data (``--strict``, no
    readable row, an empty split; the report is written beside OUT), or a
    system error (disk full...); 2: a bad option or path, printed as one
    ``error:`` line. A usage mistake (unknown option, a value of the wrong
    type) exits with status 2 from argparse, also in one line.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        lay = LAYOUTS[args.layout] if args.layout else None
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
        frame_names = list(dict.fromkeys(n.partition("@")[0] for n, _ in frames))
        unknown_gray = [g for g in args.gray if g not in frame_names]
        if unknown_gray:
            raise ValueError(f"--gray {unknown_gray[0]!r}: not a --frames modality ({frame_names})")
        lf = lay.frames if lay else {}
        frame_opt = {
            n: FrameOptions(
                _first(args.num_frames, lf.get("num_frames"), 1), tuple(args.frame_size), n in args.gray,
                _first(args.frame_rule, lf.get("rule"), "even"), _first(args.min_frames, lf.get("min_frames"), 1),
                _first(args.frame_suffix, lf.get("suffix"), ""),
            )
            for n in frame_names
        }
        la = lay.audio if lay else {}
        recipe = _first(args.audio_recipe, la.get("recipe"), "mel")
        from_layout = recipe == la.get("recipe")  # a layout's recipe settings apply to its own recipe only
        audio_opt = AudioOptions(
            sample_rate=_first(args.sample_rate, la.get("sample_rate") if from_layout else None),
            seconds=_first(args.seconds, la.get("seconds") if from_layout else None),
            n_fft=_first(args.n_fft, la.get("n_fft") if from_layout else None),
            hop_length=_first(args.hop_length, la.get("hop_length") if from_layout else None),
            n_mels=args.n_mels,
            length=args.audio_length,
            time_axis=_first(args.time_axis, la.get("time_axis"), -1),
            layout=args.audio_layout,
            recipe=recipe,
            fit=_first(args.audio_fit, "tile"),
            norm=tuple(args.audio_norm) if args.audio_norm else (la.get("norm") if from_layout else None),
        )
        if args.classes and args.class_list:
            raise ValueError("give --classes or --class-list, not both")
        classes = args.classes.split(",") if args.classes else (
            list(lay.classes) if lay and lay.classes and not args.class_list else None
        )
        if lay and lay.class_list_format and not args.class_list and not args.classes:
            raise ValueError(
                f"--layout {args.layout}: {lay.codebase}'s loader reads its classes from a class list "
                f"({'stat.txt' if lay.codebase == 'OGM-GE' else 'stat_*.txt'}); give it with --class-list PATH"
            )
        report = convert(
            args.out,
            manifests,
            audio=[_pair(a, "--audio") for a in args.audio],
            frames=frames,
            features=[_pair(f, "--features") for f in args.features],
            manifest_format=_first(args.manifest_format, lay.manifest_format if lay else None, "auto"),
            classes=classes,
            audio_options=audio_opt,
            frame_options=frame_opt,
            val_fraction=args.val_fraction,
            seed=args.seed,
            strict=args.strict,
            progress=not args.no_progress,
            name=args.name,
            class_list=args.class_list,
            class_list_format=_first(args.class_list_format, lay.class_list_format if lay else None, "csv"),
            class_order=_first(args.class_order, lay.class_order if lay else None),
            duplicates=_first(args.duplicates, lay.duplicates if lay else None, "first"),
            layout=args.layout,
        )
    except ConversionFailed as err:
        print(err, file=sys.stderr)
        return 1
    except (
        ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
        argparse.ArgumentTypeError, ImportError,
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
