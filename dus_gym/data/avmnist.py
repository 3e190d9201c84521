"""The built-in AV-MNIST: spoken digits (FSDD) paired with PCA-reduced handwritten ones (MNIST).

3000 pairs, 10 classes (300 each), two modalities, after the field's standard
small audio-visual task (CentralNet; MFAS; MultiBench ``datasets/avmnist``):
each modality weak alone, so fusion has room to gain (``docs/avmnist.md`` has
the recipe beside the published ones; ``builtin/NOTICE.md`` the provenance and
licences; ``scripts/build_avmnist.py`` builds the file):

=========  ==========  ==================================================
modality   shape       meaning
=========  ==========  ==================================================
audio      1x40x32     log-mel spectrogram of a spoken digit (Free Spoken
                       Digit Dataset, 8 kHz, 1 s, 40 mel bands x 32 frames),
                       as in ``avdigits``
image      4           an MNIST test-set digit's coefficients on the 4
                       principal components of the training images that
                       keep 29.3% of their variance (the fewest reaching
                       25%); :func:`avmnist_reconstruct` gives the 28 x 28
                       image they stand for
=========  ==========  ==================================================

The two share only the label: each recording and each image is used once,
paired at random within its class. The split is fixed and **speaker-disjoint**
as ``avdigits``' (the same speakers): the test pairs (500) are all spoken by
:data:`AVMNIST_TEST_SPEAKER`, the validation pairs (500) by
:data:`AVMNIST_VAL_SPEAKER`, and training (2000) hears neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

from dus_gym.data.avdigits import AVDIGITS_TEST_SPEAKER, AVDIGITS_VAL_SPEAKER
from dus_gym.data.bundle import load_bundle, load_bundle_ids, read_bundle_meta
from dus_gym.data.dataset import MultimodalDataset, check_views

__all__ = [
    "AVMNIST_MODALITIES", "AVMNIST_TEST_SPEAKER", "AVMNIST_VAL_SPEAKER", "avmnist_ids", "avmnist_pca",
    "avmnist_reconstruct", "avmnist_speakers", "load_avmnist",
]

AVMNIST_MODALITIES = ("audio", "image")
AVMNIST_TEST_SPEAKER = AVDIGITS_TEST_SPEAKER
"""The FSDD speaker of every test pair (none of his recordings is in train or val)."""
AVMNIST_VAL_SPEAKER = AVDIGITS_VAL_SPEAKER
"""The FSDD speaker of every validation pair (none of his recordings is in train or test)."""
_FILE = "avmnist.npz"


def _path() -> resources.abc.Traversable:
    return resources.files("dus_gym.data.builtin").joinpath(_FILE)


@lru_cache(maxsize=1)
def _full() -> MultimodalDataset:
    with resources.as_file(_path()) as path:
        return load_bundle(path)


def load_avmnist(views: Sequence[str] | None = None) -> MultimodalDataset:
    """Load the built-in AV-MNIST with the chosen modalities, in the given order.

    Args:
        views: two or more names from :data:`AVMNIST_MODALITIES` (default:
            both, audio first).

    Returns:
        A :class:`MultimodalDataset` of 3000 pairs, classes ``"0"``-``"9"``
        (300 each), with its fixed split (train 2000, val 500, test 500).
    """
    names = check_views("avmnist", AVMNIST_MODALITIES if views is None else views, AVMNIST_MODALITIES)
    full = _full()
    # A new container each call (the tensors are shared, never written): callers may rename it.
    return MultimodalDataset(
        {v: full.modalities[v] for v in names}, full.labels, full.class_names, name="avmnist", split=full.split
    )


def avmnist_ids() -> np.ndarray:
    """The sample ids ``(3000,)``: ``"<digit>_<speaker>_<index>+mnist-t10k:<image index>"``."""
    with resources.as_file(_path()) as path:
        ids = load_bundle_ids(path)
    assert ids is not None, "avmnist.npz has ids"
    return ids


def avmnist_speakers() -> np.ndarray:
    """The FSDD speaker of each pair ``(3000,)``, from the ids."""
    return np.array([i.split("+")[0].split("_")[1] for i in avmnist_ids()])


@lru_cache(maxsize=1)
def avmnist_pca() -> tuple[np.ndarray, np.ndarray]:
    """The images' PCA, fitted on the training images (pixels / 255): mean ``(784,)`` and components
    ``(k, 784)``, float64, orthonormal rows."""
    with resources.as_file(_path()) as path:
        pca = read_bundle_meta(path).extra["pca"]
    return np.array(pca["mean"]), np.array(pca["components"])


def avmnist_reconstruct(coefficients: torch.Tensor | np.ndarray) -> np.ndarray:
    """The 28 x 28 images ``(N, 1, 28, 28)`` (pixels / 255, float32) that the ``(N, k)`` coefficients
    of the ``image`` modality stand for: ``mean + coefficients @ components``."""
    c = coefficients.numpy() if isinstance(coefficients, torch.Tensor) else np.asarray(coefficients)
    mean, comps = avmnist_pca()
    if c.ndim != 2 or c.shape[1] != len(comps):
        raise ValueError(f"coefficients of shape {c.shape}; expected (N, {len(comps)}), avmnist's image modality")
    return (mean + c.astype(np.float64) @ comps).astype(np.float32).reshape(-1, 1, 28, 28)

