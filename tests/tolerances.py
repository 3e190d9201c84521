"""Tolerances for holding a float computed here against a reference computed elsewhere.

A stored reference (a committed ``.npz``, the shipped data set) was computed on
another CPU, and a float is not bit-equal across CPUs: an FFT or a matrix
product may sum in another order there (another BLAS or FFT kernel, another
vector width, another thread count). Exact comparison is kept for same-machine
determinism (the same computation twice); against a stored reference the
tolerance comes from the arithmetic, as below (README, "Development": which
results are exact on one machine only and which hold across machines).

Spectra. The rounding error of a float32 FFT is bounded in norm by the whole
frame, not by each bin: ``||dX|| <= c log2(n) eps ||X||`` (Higham, *Accuracy
and Stability of Numerical Algorithms*, 2nd ed., section 24.1; c ~ 2 for
radix-2 kernels). So a power ``|X_k|^2`` is off by up to ``2 c log2(n) eps``
times the frame's energy, however faint the bin: a band 1e-7 of its frame's
energy has no correct digit in float32 and its log may differ by any amount,
while the bands that carry the signal agree to ~1e-5 of their own value. Hence
the comparison in :func:`spectral_excess`, in energies (``exp`` of the log):

    |E_got - E_ref| <= 2 * (2 c log2(n_fft) eps) * sum_band(E_ref)   (FFT, both sides: c = 2)
                     + 2 * (n_fft / 2 + 1) eps * E_ref                 (the filterbank product, both sides)
                     + expm1(half a float16 step of log E_ref) * E_ref (when the reference was stored in float16)

A floor inside the log (``log(E + 1e-6)``, ``log(max(E, eps))``) only shrinks
differences, so it needs no term of its own.
"""

from __future__ import annotations

import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7
FFT_C = 2.0  # the constant of the FFT bound above, per side


def float16_half_step(x: np.ndarray) -> np.ndarray:
    """Half the float16 spacing at each value of ``x``: how far a float16 rounding may have moved it."""
    return np.spacing(np.abs(np.asarray(x, dtype=np.float16))).astype(np.float64) / 2


def spectral_excess(
    got: np.ndarray, ref: np.ndarray, *, band_axis: int, n_fft: int, stored_float16: bool = False
) -> float:
    """The worst ratio of ``|E_got - E_ref|`` to the tolerance above, over all elements.

    ``got`` and ``ref`` are log energies of the same shape (frames along one
    axis, bands along ``band_axis``); ``n_fft`` is the FFT size;
    ``stored_float16`` says ``ref`` was rounded to float16 when stored. At most
    1 where the two agree as float32 arithmetic on two machines can; a change
    of recipe gives ratios of hundreds or more (the tests that use this show
    theirs).
    """
    if got.shape != ref.shape:
        raise AssertionError(f"shapes differ: computed {got.shape}, reference {ref.shape}")
    e_got, e_ref = np.exp(got.astype(np.float64)), np.exp(ref.astype(np.float64))
    frame = e_ref.sum(axis=band_axis, keepdims=True)
    tol = 2 * (2 * FFT_C * np.log2(n_fft) * F32_EPS) * frame + 2 * (n_fft // 2 + 1) * F32_EPS * e_ref
    if stored_float16:
        tol = tol + np.expm1(float16_half_step(ref)) * e_ref
    return float((np.abs(e_got - e_ref) / tol).max())
