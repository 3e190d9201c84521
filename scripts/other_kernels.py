"""Run a command on CPU kernels other than the ones this machine picks by itself.

    python scripts/other_kernels.py python -m pytest

A float is not bit-equal across CPUs: another vector width or BLAS/FFT kernel
sums in another order. This runs the command with settings that make this
machine sum as another one would, so that a result promised across machines
(README, "Development") is checked for it here:

- ``ATEN_CPU_CAPABILITY``: torch's own kernels of another vector width
  (``avx2`` on an AVX-512 machine, otherwise the unvectorised ``default``);
  on an AVX-512 machine this alone changes a DUS-Synthetic-v0 episode's
  rewards from its third step;
- ``MKL_CBWR=COMPATIBLE``: MKL's most conservative code path, for torch's
  FFTs and matrix products (moves a log-mel spectrogram by ~1e-6);
- one OpenMP / MKL / OpenBLAS thread (the defaults use every core).

The settings are printed before the command runs; its exit code is returned.
"""

from __future__ import annotations

import os
import subprocess
import sys


def other_kernel_env() -> dict[str, str]:
    """The variables to set, chosen for this machine's CPU."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()  # e.g. "AVX512", "AVX2", "DEFAULT"
    return {
        "ATEN_CPU_CAPABILITY": "avx2" if capability.upper().startswith("AVX512") else "default",
        "MKL_CBWR": "COMPATIBLE",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python scripts/other_kernels.py COMMAND [ARG ...]", file=sys.stderr)
        return 2
    settings = other_kernel_env()
    print("other kernels: " + " ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    return subprocess.call(argv, env={**os.environ, **settings})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
