"""The built-in real data: UCI Multiple Features handwritten digits.

2000 digits, 10 classes (200 each), six feature views (see
``builtin/NOTICE.md`` for provenance and the CC BY 4.0 licence):

=========  ====  ==============================================
view       dim   meaning
=========  ====  ==============================================
fou        76    Fourier coefficients of the character shape
fac        216   profile correlations
kar        64    Karhunen-Loeve coefficients
pix        240   2x3-window pixel averages (values 0-6)
pix_image  1x16x15  the same pixels as an image, for the CNN encoder
zer        47    Zernike moments
mor        6     morphological features
=========  ====  ==============================================
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import numpy as np

from dus_gym.data.dataset import MultimodalDataset, check_views

__all__ = ["DIGIT_VIEWS", "DEFAULT_DIGIT_VIEWS", "load_digits"]

DIGIT_VIEWS = ("fou", "fac", "kar", "pix", "pix_image", "zer", "mor")
# pix is the view that fits fastest and zer the one left behind (docs/method.md section 1).
DEFAULT_DIGIT_VIEWS = ("pix", "zer")


@lru_cache(maxsize=1)
def _arrays() -> dict[str, np.ndarray]:
    with resources.files("dus_gym.data.builtin").joinpath("digits.npz").open("rb") as f:
        with np.load(f) as npz:
            return {k: npz[k] for k in npz.files}


def load_digits(views: Sequence[str] = DEFAULT_DIGIT_VIEWS) -> MultimodalDataset:
    """Load the built-in digits with the chosen views, in the given order.

    Args:
        views: two or more names from :data:`DIGIT_VIEWS`; ``"pix_image"`` is
            ``pix`` reshaped to ``(1, 16, 15)``.

    Returns:
        A :class:`MultimodalDataset` of 2000 samples, 10 classes ``"0"``-``"9"``.
    """
    views = check_views("digits", views, DIGIT_VIEWS, noun="view")
    arrays = _arrays()
    modalities = {
        v: arrays["pix"].reshape(-1, 1, 16, 15) if v == "pix_image" else arrays[v] for v in views
    }
    return MultimodalDataset(
        modalities, arrays["labels"], [str(d) for d in range(10)], name="digits"
    )
