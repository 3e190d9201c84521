"""Build ``avdigits.npz``, the audio-visual digits shipped with dus_gym.

Run once, by a maintainer; users never need it (the ``.npz`` is package data,
nothing is downloaded at run time)::

    git clone https://github.com/Jakobovski/free-spoken-digit-dataset /tmp/fsdd
    pip install scikit-learn          # build time only: its copy of the UCI optical digits
    python scripts/build_avdigits.py /tmp/fsdd/recordings

The shipped file was built from the 3000 recordings of FSDD (6 speakers,
50 of each digit each) with scikit-learn 1.9.1 (``load_digits``). The same
inputs give the same file, byte for byte, on the same machine (fixed seed, no
timestamps); on another CPU a few float16 audio values may differ by one step
(the FFT rounds otherwise; ``dus_gym/data/builtin/NOTICE.md``).

Recipe (``dus_gym/data/builtin/NOTICE.md`` has the provenance and licences):

- **Pairs.** Class by class, every one of the ``n_c`` 8 x 8 handwritten
  digits of class ``c`` (174-183 per class; 1797 in all) is paired with one
  recording of the same spoken digit, each image and each recording used once
  (AV-MNIST style: the two modalities share only the label). The ``n_c``
  recordings are spread evenly over the six speakers (29 or 30 each, drawn
  from that speaker's 50 with the seed) and matched to the images in a
  seeded random order.
- **Audio.** Each 8 kHz recording is cropped or zero-padded at its end to
  1 s (8000 samples: FSDD's recordings are trimmed, median 0.42 s, 99% under
  0.92 s) and turned into a ``(1, 40, 32)`` log-mel spectrogram with
  :func:`dus_gym.data.convert.log_mel` (512-sample window, hop 256, 40 mel
  bands), stored as float16.
- **Image.** The 8 x 8 counts of ``load_digits`` (integers 0-16), ``(1, 8, 8)``
  float16.
- **Split (speaker-disjoint validation and test).** Every pair whose
  recording is by ``george`` is test (about 300), every pair by ``jackson``
  validation (about 300), the other four speakers' pairs training (about
  1200): the test question is a voice never heard in training, and the
  validation split, whose improvement is the env's reward, asks the same
  question of another voice. (An earlier build drew validation from the
  training speakers: there rebalancing towards the audio *gained* 1-1.5
  points while it lost 4-7 on george, so a reward on validation taught the
  opposite of what the test measures; docs/benchmarks.md.) Held out in
  turn, each speaker's accuracy (logistic regression on the flattened
  spectrogram, trained on the other five) ranges from 35% (lucas) to 88%
  (theo); george (58%) and jackson (58%) are the two of middle difficulty
  and alike (``python -m benchmarks.encoders --speakers``). The images have
  no writer ids, so their split follows the recordings they are paired with
  (random with respect to the writer).
- **Ids** ``"<recording>+optdigits:<index>"``, e.g. ``"7_jackson_32+optdigits:1234"``
  (the FSDD file name and the row of ``load_digits``): the speaker of a pair is
  the second field of its id (:func:`dus_gym.data.avdigits.avdigits_speakers`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from dus_gym.data.bundle import BundleMeta, save_bundle
from dus_gym.data.convert import log_mel, read_wav

OUT = Path(__file__).resolve().parents[1] / "dus_gym" / "data" / "builtin" / "avdigits.npz"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
TEST_SPEAKER = "george"
VAL_SPEAKER = "jackson"
SEED = 0
SAMPLE_RATE = 8000
SAMPLES = 8000  # 1 s
N_FFT, HOP, N_MELS = 512, 256, 40


def fit_length(x: np.ndarray, n: int = SAMPLES) -> np.ndarray:
    """Crop the end off, or pad the end with silence (zeros), to ``n`` samples."""
    return np.pad(x, (0, max(0, n - len(x))))[:n]


def spectrogram(path: Path) -> np.ndarray:
    """``(1, 40, 32)`` log-mel spectrogram of one FSDD recording."""
    x, rate = read_wav(path)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: {rate} Hz; expected {SAMPLE_RATE}")
    return log_mel(fit_length(x), SAMPLE_RATE, N_FFT, HOP, N_MELS)[None]


def recordings(folder: Path) -> dict[tuple[int, str], list[Path]]:
    """FSDD's ``{digit}_{speaker}_{index}.wav`` files by (digit, speaker), in index order."""
    found: dict[tuple[int, str], list[Path]] = {}
    for p in folder.glob("*.wav"):
        digit, speaker, _ = p.stem.split("_")
        found.setdefault((int(digit), speaker), []).append(p)
    for paths in found.values():
        paths.sort(key=lambda p: int(p.stem.split("_")[2]))
    missing = [(c, s) for c in range(10) for s in SPEAKERS if len(found.get((c, s), [])) < 30]
    if missing:
        raise ValueError(f"{folder}: too few recordings for (digit, speaker) {missing[:3]}; expected 50 each")
    return found


def save_shipped(
    out: Path, name: str, modalities: dict[str, np.ndarray], y: np.ndarray, split: np.ndarray, ids: list[str],
    extra: dict[str, Any],
) -> None:
    """Write a shipped data set: a bundle of ten classes ``"0"``-``"9"``, compressed, with no timestamps."""
    classes = [str(c) for c in range(10)]
    # save_bundle validates and writes a plain .npz; the shipped file is the same arrays compressed.
    staging = out.with_name(f".{name}.staging.npz")
    save_bundle(staging, modalities, y, classes, split=split, ids=ids, name=name, extra=extra)
    meta = BundleMeta(name, list(modalities), classes, extra)
    with np.load(staging) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "meta"}
    staging.unlink()
    np.savez_compressed(out, meta=np.array(meta.to_json()), **arrays)


def build(folder: Path, out: Path = OUT) -> Path:
    from sklearn import __version__ as sklearn_version  # build time only
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(SEED)
    digits = load_digits()
    found = recordings(folder)
    wavs: list[Path] = []
    image_rows: list[int] = []
    labels: list[int] = []
    for c in range(10):
        rows = np.flatnonzero(digits.target == c)
        n = len(rows)
        # n split over the speakers as evenly as possible; the extra ones rotate with the class.
        quota = {s: n // len(SPEAKERS) + ((k - c) % len(SPEAKERS) < n % len(SPEAKERS)) for k, s in enumerate(SPEAKERS)}
        chosen: list[Path] = []
        for s in SPEAKERS:
            pool = found[(c, s)]
            chosen += [pool[i] for i in sorted(rng.choice(len(pool), quota[s], replace=False))]
        wavs += chosen
        image_rows += [int(r) for r in rng.permutation(rows)]
        labels += [c] * n
    speakers = np.array([p.stem.split("_")[1] for p in wavs])
    y = np.array(labels, dtype=np.int64)
    split = np.zeros(len(y), dtype=np.int64)
    split[speakers == VAL_SPEAKER] = 1
    split[speakers == TEST_SPEAKER] = 2
    audio = np.stack([spectrogram(p) for p in wavs]).astype(np.float16)
    image = digits.images[image_rows][:, None].astype(np.float16)
    ids = [f"{p.stem}+optdigits:{r}" for p, r in zip(wavs, image_rows)]
    extra = {
        "sources": {
            "audio": "Free Spoken Digit Dataset (FSDD), github.com/Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0",
            "image": "UCI Optical Recognition of Handwritten Digits (test set, as in scikit-learn's load_digits "
            f"{sklearn_version}), E. Alpaydin and C. Kaynak, CC BY 4.0",
        },
        "licence": "CC BY-SA 4.0 (the audio's ShareAlike terms apply to the set); see NOTICE.md",
        "audio": f"log-mel (dus_gym.data.convert.log_mel): {SAMPLE_RATE} Hz, cropped or zero-padded at the end "
        f"to {SAMPLES} samples, n_fft {N_FFT}, hop {HOP}, {N_MELS} mel bands; float16",
        "image": "8 x 8 pixel counts 0-16; float16",
        "split": f"test: every pair spoken by {TEST_SPEAKER}; val: every pair spoken by {VAL_SPEAKER}; "
        "train: the other four speakers' pairs",
        "pairing": f"within class, each image and recording once, seed {SEED}; ids '<recording>+optdigits:<row>'",
    }
    save_shipped(out, "avdigits", {"audio": audio, "image": image}, y, split, ids, extra)
    sizes = [int((split == k).sum()) for k in range(3)]
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): audio {audio.shape}, image {image.shape}, "
          f"train/val/test {sizes}, per speaker {dict(zip(*np.unique(speakers, return_counts=True)))}")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} FSDD_RECORDINGS_FOLDER")
    build(Path(sys.argv[1]))
