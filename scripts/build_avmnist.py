"""Build ``avmnist.npz``, the AV-MNIST-style audio-visual digits shipped with dus_gym.

Run once, by a maintainer; users never need it (the ``.npz`` is package data,
nothing is downloaded at run time). From the repository root::

    git clone https://github.com/Jakobovski/free-spoken-digit-dataset /tmp/fsdd
    # MNIST's original test-set idx files (any copy: the script checks the decompressed bytes' MD5),
    # e.g. https://github.com/kelas/mnist: t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz
    python -m scripts.build_avmnist /tmp/fsdd/recordings /tmp/mnist

The same inputs give the same file, byte for byte, on the same machine (fixed
seed, no timestamps); on another CPU a few float16 values may differ by one
step (the FFT and the SVD round otherwise). ``docs/avmnist.md`` has the recipe
beside the published ones and what differs; ``dus_gym/data/builtin/NOTICE.md``
the provenance and licences. In short:

- **Sources.** All 3000 recordings of the Free Spoken Digit Dataset (FSDD: 6
  speakers x 10 digits x 50) and MNIST's 10,000 test images (``t10k``), whose
  decompressed idx bytes must have the MD5 of the original files
  (:data:`MNIST_MD5`): several repositories named "mnist" hold other data
  under the same file names, and re-compressed copies have other ``.gz`` checksums.
- **Pairs.** Class by class, the 300 recordings of digit ``c`` (every speaker's
  50, in speaker then index order) are paired with 300 of MNIST's test images
  of class ``c``, drawn without replacement in a seeded random order: each
  recording and each image used once (3000 of the 10,000 images).
- **Split (speaker-disjoint, as ``avdigits``).** Every pair spoken by ``george``
  is test (500), every pair by ``jackson`` validation (500), the other four
  speakers' pairs training (2000). MNIST's images have no writer ids in the
  idx files; an image's split follows its recording.
- **Image.** Pixels scaled to [0, 1], centred on the training images' mean and
  projected onto the fewest principal components of the *training* images
  whose variance reaches 25% of theirs (:data:`KEPT_VARIANCE`; 4 components,
  28.2%): the ``(k,)`` coefficients, float16. The mean and the components are
  in the file's metadata (``pca``), so the 28 x 28 reconstruction is one
  product away (:func:`dus_gym.data.avmnist.avmnist_reconstruct`); it carries
  no more than the coefficients (a rank-k linear image of them).
- **Audio.** As ``avdigits`` (``scripts/build_avdigits.py``): each 8 kHz
  recording cropped or zero-padded at its end to 1 s and turned into a
  ``(1, 40, 32)`` log-mel spectrogram by :func:`dus_gym.data.convert.log_mel`, float16.
- **Ids** ``"<recording>+mnist-t10k:<index>"``, e.g. ``"7_jackson_32+mnist-t10k:1234"``
  (the FSDD file stem and the image's index in MNIST's test set, from 0).
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from scripts.build_avdigits import (
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    SAMPLES,
    SPEAKERS,
    TEST_SPEAKER,
    VAL_SPEAKER,
    save_shipped,
    spectrogram,
)

OUT = Path(__file__).resolve().parents[1] / "dus_gym" / "data" / "builtin" / "avmnist.npz"
SEED = 0
PER_CELL = 50
"""FSDD's recordings per (digit, speaker): all of them are used."""
KEPT_VARIANCE = 0.25
"""The images keep the fewest training-set principal components whose variance reaches this fraction."""
IMAGES = "t10k-images-idx3-ubyte"
LABELS = "t10k-labels-idx1-ubyte"
MNIST_MD5 = {IMAGES: "2646ac647ad5339dbf082846283269ea", LABELS: "27ae3e4e09519cfbb04c329615203637"}
"""MD5 of the original, decompressed MNIST test-set files (7,840,016 and 10,008 bytes)."""
IDX_MAGIC = {3: 2051, 1: 2049}
"""The idx magic numbers of 3-d unsigned-byte images and 1-d unsigned-byte labels."""


def read_idx(path: Path, ndim: int, md5: str | None = None) -> np.ndarray:
    """An idx file of unsigned bytes (``.gz`` or plain) as a ``uint8`` array of ``ndim`` dimensions.

    ``md5``: the hex digest the decompressed bytes must have (the build passes
    :data:`MNIST_MD5`; the tests read small subsets without one).
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if md5 is not None and hashlib.md5(raw).hexdigest() != md5:
        raise ValueError(
            f"{path}: decompressed MD5 {hashlib.md5(raw).hexdigest()} ({len(raw)} bytes); expected {md5}, "
            "MNIST's original file (another repository's data under the same name?)"
        )
    magic = int.from_bytes(raw[:4], "big")
    if magic != IDX_MAGIC[ndim]:
        raise ValueError(f"{path}: idx magic number {magic}; expected {IDX_MAGIC[ndim]} ({ndim}-d unsigned bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(shape)):
        raise ValueError(f"{path}: {len(raw) - start} data bytes; the header's shape {shape} needs {np.prod(shape)}")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(shape)


def find_idx(folder: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` in ``folder``."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder}: neither {stem} nor {stem}.gz; expected MNIST's test-set idx files there")


def all_recordings(folder: Path) -> dict[tuple[int, str], list[Path]]:
    """FSDD's 3000 ``{digit}_{speaker}_{index}.wav`` by (digit, speaker), each list in index order 0-49."""
    found: dict[tuple[int, str], list[Path]] = {}
    for p in folder.glob("*.wav"):
        digit, speaker, _ = p.stem.split("_")
        found.setdefault((int(digit), speaker), []).append(p)
    for paths in found.values():
        paths.sort(key=lambda p: int(p.stem.split("_")[2]))
    short = [(c, s, len(found.get((c, s), []))) for c in range(10) for s in SPEAKERS
             if len(found.get((c, s), [])) != PER_CELL]
    if short:
        raise ValueError(f"{folder}: (digit, speaker, recordings) {short[:3]}; expected {PER_CELL} of each")
    return found


def pixels(images: np.ndarray) -> np.ndarray:
    """``(N, 28, 28)`` uint8 -> ``(N, 784)`` float64 in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float64) / 255.0


def fit_pca(x: np.ndarray, kept: float = KEPT_VARIANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean ``(D,)``, components ``(k, D)`` and their variance ratios ``(k,)`` of the rows of ``x``.

    ``k`` is the fewest components whose variance ratios sum to at least
    ``kept``. Each component's sign is fixed (its largest-magnitude entry
    positive), since an SVD may return either sign.
    """
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    ratio = s**2 / (s**2).sum()
    k = int(np.searchsorted(np.cumsum(ratio), kept) + 1)
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    return mean, comps * signs[:, None], ratio[:k]


def project(images: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``(N, 28, 28)`` uint8 images -> ``(N, k)`` float16 PCA coefficients (pixels in [0, 1])."""
    return ((pixels(images) - mean) @ components.T).astype(np.float16)


def build(fsdd: Path, mnist: Path, out: Path = OUT) -> Path:
    """Build the file from FSDD's ``recordings`` folder and a folder with MNIST's two test-set idx files."""
    images = read_idx(find_idx(mnist, IMAGES), 3, MNIST_MD5[IMAGES])
    digits = read_idx(find_idx(mnist, LABELS), 1, MNIST_MD5[LABELS])
    found = all_recordings(fsdd)
    rng = np.random.default_rng(SEED)
    wavs: list[Path] = []
    rows: list[int] = []
    for c in range(10):
        chosen = [p for s in SPEAKERS for p in found[(c, s)]]
        wavs += chosen
        rows += [int(r) for r in rng.choice(np.flatnonzero(digits == c), len(chosen), replace=False)]
    rows_a = np.array(rows)
    y = digits[rows_a].astype(np.int64)
    speakers = np.array([p.stem.split("_")[1] for p in wavs])
    assert all(int(p.stem.split("_")[0]) == label for p, label in zip(wavs, y)), "pairs share the class"
    split = np.zeros(len(y), dtype=np.int64)
    split[speakers == VAL_SPEAKER] = 1
    split[speakers == TEST_SPEAKER] = 2
    mean, comps, ratio = fit_pca(pixels(images[rows_a[split == 0]]))
    image = project(images[rows_a], mean, comps)
    audio = np.stack([spectrogram(p) for p in wavs]).astype(np.float16)
    ids = [f"{p.stem}+mnist-t10k:{r}" for p, r in zip(wavs, rows)]
    extra: dict[str, Any] = {
        "sources": {
            "audio": "Free Spoken Digit Dataset (FSDD), github.com/Jakobovski/free-spoken-digit-dataset, "
            "all 3000 recordings, CC BY-SA 4.0",
            "image": "MNIST test set (t10k idx files, decompressed MD5 "
            f"{MNIST_MD5[IMAGES]} / {MNIST_MD5[LABELS]}), Y. LeCun, C. Cortes and C. J. C. Burges, CC BY-SA 3.0",
        },
        "licence": "CC BY-SA 4.0 (the ShareAlike terms of FSDD and MNIST); see NOTICE.md",
        "audio": f"log-mel (dus_gym.data.convert.log_mel): {SAMPLE_RATE} Hz, cropped or zero-padded at the end "
        f"to {SAMPLES} samples, n_fft {N_FFT}, hop 256, {N_MELS} mel bands; float16",
        "image": f"coefficients on the {len(comps)} principal components of the training images (pixels / 255) "
        f"that keep {100 * ratio.sum():.1f}% of their variance (the fewest reaching "
        f"{100 * KEPT_VARIANCE:.0f}%); float16. 28 x 28 image = mean + coefficients @ components",
        "pca": {"mean": mean.tolist(), "components": comps.tolist(), "variance_ratio": ratio.tolist()},
        "split": f"test: every pair spoken by {TEST_SPEAKER}; val: every pair spoken by {VAL_SPEAKER}; "
        "train: the other four speakers' pairs",
        "pairing": f"within class, each recording and image once, seed {SEED}; ids '<recording>+mnist-t10k:<index>'",
    }
    save_shipped(out, "avmnist", {"audio": audio, "image": image}, y, split, ids, extra)
    sizes = [int((split == k).sum()) for k in range(3)]
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): audio {audio.shape}, image {image.shape} "
          f"({100 * ratio.sum():.1f}% of the training images' variance), train/val/test {sizes}")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m scripts.build_avmnist FSDD_RECORDINGS_FOLDER MNIST_FOLDER")
    build(Path(sys.argv[1]), Path(sys.argv[2]))
