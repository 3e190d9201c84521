"""The built-in audio-visual digits: spoken digits (FSDD) paired with handwritten ones (UCI optical digits).

1797 pairs, 10 classes (174-183 each), two modalities (``builtin/NOTICE.md``
has the provenance and licences; ``scripts/build_avdigits.py`` the recipe):

=========  ==========  ==================================================
modality   shape       meaning
=========  ==========  ==================================================
audio      1x40x32     log-mel spectrogram of a spoken digit (Free Spoken
                       Digit Dataset, 8 kHz, 1 s, 40 mel bands x 32 frames)
image      1x8x8       a handwritten digit, pixel counts 0-16 (UCI optical
                       digits, as in scikit-learn's ``load_digits``)
=========  ==========  ==================================================

The two share only the label: each image and each recording is used once,
paired at random within its class (AV-MNIST style). The split is fixed and
**speaker-disjoint**: the test pairs (299) are all spoken by one speaker
(:data:`AVDIGITS_TEST_SPEAKER`), the validation pairs (299) by another
(:data:`AVDIGITS_VAL_SPEAKER`), and training (1199) hears neither: the
validation improvement the env rewards asks the test's question, a voice
never heard. The image is the strong
modality (about 98% alone), the audio the weak one (about 69% on the unheard
voice): docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import numpy as np

from dus_gym.data.bundle import load_bundle, load_bundle_ids
from dus_gym.data.dataset import MultimodalDataset, check_views

__all__ = ["AVDIGITS_MODALITIES", "AVDIGITS_TEST_SPEAKER", "AVDIGITS_VAL_SPEAKER", "avdigits_speakers", "load_avdigits"]

AVDIGITS_MODALITIES = ("audio", "image")
AVDIGITS_TEST_SPEAKER = "george"
"""The FSDD speaker of every test pair (none of his recordings is in train or val)."""
AVDIGITS_VAL_SPEAKER = "jackson"
"""The FSDD speaker of every validation pair (none of his recordings is in train or test)."""
_FILE = "avdigits.npz"


@lru_cache(maxsize=1)
def _full() -> MultimodalDataset:
    with resources.as_file(resources.files("dus_gym.data.builtin").joinpath(_FILE)) as path:
        return load_bundle(path)


def load_avdigits(views: Sequence[str] | None = None) -> MultimodalDataset:
    """Load the built-in audio-visual digits with the chosen modalities, in the given order.

    Args:
        views: two or more names from :data:`AVDIGITS_MODALITIES` (default:
            both, audio first).

    Returns:
        A :class:`MultimodalDataset` of 1797 pairs, classes ``"0"``-``"9"``,
        with its fixed split (train 1199, val 299, test 299).
    """
    names = check_views("avdigits", AVDIGITS_MODALITIES if views is None else views, AVDIGITS_MODALITIES)
    full = _full()
    # A new container each call (the tensors are shared, never written): callers may rename it.
    return MultimodalDataset(
        {v: full.modalities[v] for v in names}, full.labels, full.class_names, name="avdigits", split=full.split
    )


def avdigits_speakers() -> np.ndarray:
    """The FSDD speaker of each pair ``(1797,)``, from the ids ``"<digit>_<speaker>_<index>+optdigits:<row>"``."""
    with resources.as_file(resources.files("dus_gym.data.builtin").joinpath(_FILE)) as path:
        ids = load_bundle_ids(path)
    assert ids is not None, "avdigits.npz has ids"
    return np.array([i.split("+")[0].split("_")[1] for i in ids])
