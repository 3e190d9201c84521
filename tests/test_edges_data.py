"""Every edge a clear error, for data files: damaged bundles, the converter's
paths and options, and damaged or incomplete episode records.

Each test asserts the exception type and that the message names the file and
what is wrong with it.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dus_gym
from dus_gym.data import BundleError, save_bundle

N = 12


def _bundle(path: Path) -> Path:
    rng = np.random.default_rng(0)
    modalities = {"a": rng.normal(size=(N, 4)).astype(np.float32), "b": rng.normal(size=(N, 3)).astype(np.float32)}
    return save_bundle(path, modalities, np.arange(N) % 3, ["x", "y", "z"])


def _load(path: Path) -> None:
    dus_gym.load_dataset(f"bundle:{path}")


def _names(path: Path) -> str:
    """A pattern matching ``path`` as messages write it (alone or quoted)."""
    return re.escape(str(path))


# -- bundles ---------------------------------------------------------------------


def test_npz_with_corrupted_bytes_names_the_file_and_member(tmp_path: Path) -> None:
    path = _bundle(tmp_path / "b.npz")
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("a.npy")
    raw = bytearray(path.read_bytes())
    # Flip a byte of the member's data (past its local header and the .npy header): the CRC no longer matches.
    raw[info.header_offset + 30 + len(info.filename) + 140] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=rf"{_names(path)}:a: archive member a\.npy is corrupted \(Bad CRC-32"):
        _load(path)


def test_truncated_npz_names_the_file(tmp_path: Path) -> None:
    path = _bundle(tmp_path / "b.npz")
    path.write_bytes(path.read_bytes()[:200])  # the central directory at the end is gone
    with pytest.raises(BundleError, match=rf"{_names(path)}' is not a readable \.npz file: .*truncated or corrupted"):
        _load(path)


def test_empty_npz_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "b.npz"
    path.write_bytes(b"")
    with pytest.raises(BundleError, match=rf"{_names(path)}.*the file is empty \(0 bytes\); expected a zip archive"):
        _load(path)


def test_text_named_npz_is_not_blamed_on_pickle(tmp_path: Path) -> None:
    path = tmp_path / "b.npz"
    path.write_text("label,a,b\n0,1,2\n")
    with pytest.raises(BundleError) as info:
        _load(path)
    message = str(info.value)
    assert str(path) in message and "pickle" not in message
    assert "found a file starting with b'label,a,b" in message and "expected a zip archive" in message


def test_npy_array_named_npz(tmp_path: Path) -> None:
    path = tmp_path / "b.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(BundleError, match=rf"{_names(path)}.*found a single \.npy array; expected a zip archive"):
        _load(path)


@pytest.mark.parametrize(
    ("cut", "problem"),
    [
        (lambda raw: raw[: len(raw) - 20], r"truncated: the header declares shape \(12, 4\) of float32 \(192 bytes "
                                           r"of data\) but the file holds 172"),
        (lambda raw: raw[:40], r"the \.npy header cannot be read \(EOF: reading array header"),
        (lambda raw: b"", r"the file is empty \(0 bytes\); expected a \.npy array file"),
        (lambda raw: b"1.0 2.0\n", r"found a file starting with b'1.0 2.0\\n'; expected a \.npy array file"),
    ],
    ids=["data", "header", "empty", "text"],
)
def test_damaged_npy_in_a_folder_names_the_file(tmp_path: Path, cut, problem: str) -> None:
    folder = _bundle(tmp_path / "b")
    path = folder / "a.npy"
    path.write_bytes(cut(path.read_bytes()))
    with pytest.raises(BundleError, match=rf"{_names(path)}: {problem}") as info:
        _load(folder)
    assert "pickle" not in str(info.value)


def test_object_array_is_refused_as_needing_pickle(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "b")
    np.save(folder / "a.npy", np.array([{"x": 1}] * N, dtype=object), allow_pickle=True)
    with pytest.raises(BundleError, match=rf"{_names(folder / 'a.npy')}: dtype object holds Python objects"):
        _load(folder)


def test_save_bundle_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = np.save

    def save_then_fail(file: Any, x: np.ndarray, **kwargs: Any) -> None:
        if saved:  # the first array is written, the second fails: a folder half written
            raise OSError("disk full")
        saved.append(file)
        real_save(file, x, **kwargs)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    for name in ("b.npz", "b"):
        saved: list[object] = []
        if name.endswith(".npz"):
            monkeypatch.setattr(np, "savez", fail)
        else:
            monkeypatch.setattr(np, "save", save_then_fail)
        with pytest.raises(OSError, match="disk full"):
            _bundle(tmp_path / name)
        monkeypatch.undo()
        assert list(tmp_path.iterdir()) == [], "no bundle and no temporary file left"
    assert len(saved) == 1
    (tmp_path / "c.npz").mkdir()
    with pytest.raises(BundleError, match=r"c\.npz'\): a folder exists there; expected a new \.npz file path"):
        _bundle(tmp_path / "c.npz")
