"""Feature bundles: bring your own multimodal data as arrays plus a small JSON.

A bundle is either one ``.npz`` file or one folder of ``.npy`` files; both hold
the same named arrays:

=============  ==========================================================
array          content
=============  ==========================================================
``<name>``     one per modality listed in the metadata: ``(N, D)`` vectors,
               ``(N, C, H, W)`` images or spectrograms, ``(N, T, D)``
               sequences; any real dtype (float32 loads without a copy)
``labels``     ``(N,)`` integers in ``[0, num_classes)``
``split``      optional ``(N,)``: 0 train, 1 validation, 2 test
``ids``        optional ``(N,)`` strings, unique: the sample ids of the source
=============  ==========================================================

and the metadata, a JSON object (``meta.json`` in a folder, the 0-d string
array ``meta`` in an ``.npz``)::

    {"format": "dus_gym.bundle", "version": 1, "name": "cremad",
     "modalities": ["audio", "visual"],
     "class_names": ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]}

Folder arrays load memory-mapped (copy-on-write, so nothing is ever written
back), so a bundle larger than memory is read only where it is used.
:func:`load_bundle` validates everything and names the array, the index and
the expectation of any defect; ``load_dataset("bundle:PATH")`` calls it.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from dus_gym.data.dataset import MultimodalDataset

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "BundleError",
    "BundleMeta",
    "load_bundle",
    "load_bundle_ids",
    "read_bundle_meta",
    "save_bundle",
]

BUNDLE_FORMAT = "dus_gym.bundle"
BUNDLE_VERSION = 1
RESERVED = ("labels", "split", "ids", "meta")
"""Array names with a fixed meaning; no modality may use them."""
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_META_FILE = "meta.json"
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
"""How a zip archive starts: its first member's header, or the end record of an empty archive."""
_NPY_MAGIC = bytes(np.lib.format.MAGIC_PREFIX)
_NPZ_EXPECTED = "a zip archive of .npy arrays, as numpy.savez and save_bundle write"
_NPY_EXPECTED = "a .npy array file, as numpy.save writes"
# What reading a damaged archive or array raises, from zipfile, zlib (compressed
# members) and numpy; each is turned into a BundleError naming the file.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)


class BundleError(ValueError):
    """A bundle that cannot be read: the message names the file, the array and what was expected."""


@dataclass(frozen=True)
class BundleMeta:
    """The metadata of a bundle (its JSON), validated."""

    name: str
    modalities: list[str]
    class_names: list[str]
    extra: dict[str, Any]
    """any other JSON fields (provenance written by the converter, ...), kept as they are"""

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": BUNDLE_FORMAT,
                "version": BUNDLE_VERSION,
                "name": self.name,
                "modalities": self.modalities,
                "class_names": self.class_names,
                **self.extra,
            },
            indent=2,
        )


def _check_name(name: str, where: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".npy"):
        raise BundleError(
            f"{where}: modality name {name!r} is not usable as a file name; expected letters, digits, '_', '.', '-'"
        )
    if name in RESERVED:
        raise BundleError(f"{where}: modality name {name!r} is reserved; reserved names: {list(RESERVED)}")


def _parse_meta(text: str, where: str) -> BundleMeta:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise BundleError(f"{where}: metadata is not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: metadata must be a JSON object, got {type(raw).__name__}")
    if raw.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: metadata field 'format' is {raw.get('format')!r}; expected {BUNDLE_FORMAT!r}")
    if raw.get("version") != BUNDLE_VERSION:
        raise BundleError(
            f"{where}: metadata field 'version' is {raw.get('version')!r}; this dus_gym reads version {BUNDLE_VERSION}"
        )
    for key in ("modalities", "class_names"):
        value = raw.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BundleError(f"{where}: metadata field {key!r} must be a list of strings, got {value!r}")
    modalities, class_names = raw["modalities"], raw["class_names"]
    if len(modalities) < 2:
        raise BundleError(f"{where}: metadata lists {len(modalities)} modalities {modalities}; expected at least two")
    if len(set(modalities)) != len(modalities):
        dup = next(m for m in modalities if modalities.count(m) > 1)
        raise BundleError(f"{where}: metadata lists modality {dup!r} twice")
    for m in modalities:
        _check_name(m, where)
    if not class_names:
        raise BundleError(f"{where}: metadata field 'class_names' is empty; expected one name per class")
    name = raw.get("name", Path(where).stem)
    if not isinstance(name, str):
        raise BundleError(f"{where}: metadata field 'name' must be a string, got {name!r}")
    known = {"format", "version", "name", "modalities", "class_names"}
    return BundleMeta(name, modalities, class_names, {k: v for k, v in raw.items() if k not in known})


def _kind(path: Path) -> str:
    """``"npz"`` or ``"folder"``; raises if ``path`` is neither."""
    if path.is_dir():
        return "folder"
    if path.is_file() and path.suffix == ".npz":
        return "npz"
    if not path.exists():
        raise BundleError(f"bundle {str(path)!r} does not exist; expected a .npz file or a folder of .npy files")
    raise BundleError(f"bundle {str(path)!r} is neither a folder nor a .npz file")


def _check_start(path: Path, expected: str, signatures: tuple[bytes, ...], where: str) -> None:
    """Refuse a file that is not a plain file, is empty, or does not start the way its format must.

    Checked before numpy sees the file: numpy reads any file it does not
    recognise as a pickle and then blames pickle, and reads an empty one to an
    ``EOFError`` that names no file.
    """
    if not path.is_file():
        raise BundleError(f"{where}: found a folder or special file; expected {expected}")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise BundleError(f"{where}: the file is empty (0 bytes); expected {expected}")
    if not head.startswith(signatures):
        if head.startswith(_NPY_MAGIC):
            found = "a single .npy array"
        elif head.startswith(_ZIP_SIGNATURES):
            found = "a zip archive"
        else:
            found = f"a file starting with {head!r}"
        raise BundleError(f"{where}: found {found}; expected {expected}")


def _check_npy(f: IO[bytes], size: int, where: str) -> None:
    """Refuse a ``.npy`` stream of ``size`` bytes whose header is unreadable,
    whose dtype needs pickle, or whose data is shorter than its header declares."""
    try:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise BundleError(f"{where}: .npy format version {version}; expected 1.0, 2.0 or 3.0")
        # 2.0 and 3.0 differ only in the text encoding of field names, which no size depends on.
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    except ValueError as err:
        if isinstance(err, BundleError):
            raise
        raise BundleError(
            f"{where}: the .npy header cannot be read ({err}); the file is truncated or corrupted"
        ) from None
    if dtype.hasobject:
        raise BundleError(
            f"{where}: dtype {dtype} holds Python objects, which only pickle can read (refused: it could run "
            "code); store a numeric array"
        )
    offset = f.tell()
    expected = math.prod(shape) * dtype.itemsize
    if size - offset < expected:
        raise BundleError(
            f"{where}: truncated: the header declares shape {tuple(shape)} of {dtype} ({expected} bytes of data) "
            f"but the file holds {max(size - offset, 0)}; write the array again"
        )


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """An ``.npz`` bundle opened for reading (close it, or use it in ``with``)."""
    where = f"bundle {str(path)!r} is not a readable .npz file"
    _check_start(path, _NPZ_EXPECTED, _ZIP_SIGNATURES, where)
    try:
        return np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise BundleError(f"{where}: the zip archive is truncated or corrupted ({err}); write it again") from None


def _npz_array(npz: np.lib.npyio.NpzFile, name: str, where: str) -> np.ndarray:
    """The array ``name`` of an open ``.npz``, its header checked first; damage named at ``where``."""
    member = f"{name}.npy"
    archive = npz.zip
    assert archive is not None, "the NpzFile is closed"  # only None after close()
    if member not in archive.namelist():
        raise BundleError(f"{where}: archive member {name!r} is not a .npy array; expected {member}")
    try:
        info = archive.getinfo(member)
        with archive.open(info) as f:
            _check_npy(f, info.file_size, where)
        return np.asarray(npz[name])
    except _READ_ERRORS as err:
        if isinstance(err, BundleError):
            raise
        # CRC mismatch, a damaged zip entry or compressed stream: the bytes changed after writing.
        raise BundleError(
            f"{where}: archive member {member} is corrupted ({err}); expected an intact array, write the bundle again"
        ) from None


def read_bundle_meta(path: str | Path) -> BundleMeta:
    """The validated metadata of a bundle, without reading any data array."""
    path = Path(path)
    if _kind(path) == "folder":
        meta_path = path / _META_FILE
        if not meta_path.is_file():
            raise BundleError(f"bundle {str(path)!r}: no {_META_FILE}; expected the metadata JSON there")
        try:
            text = meta_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise BundleError(f"{meta_path}: metadata is not UTF-8 text ({err}); expected a JSON object") from None
        return _parse_meta(text, str(meta_path))
    with _open_npz(path) as npz:
        if "meta" not in npz.files:
            raise BundleError(f"bundle {str(path)!r}: no 'meta' array; expected the metadata JSON as a string")
        meta = _npz_array(npz, "meta", f"{path}:meta")
    if meta.shape != () or meta.dtype.kind != "U":
        raise BundleError(
            f"bundle {str(path)!r}: array 'meta' has shape {meta.shape} and dtype {meta.dtype}; "
            "expected a 0-d string array holding the JSON"
        )
    return _parse_meta(str(meta), f"{path}:meta")


class _Reader:
    """Named arrays of a bundle, from an ``.npz`` or memory-mapped from a folder.

    Every array is checked before numpy loads it (see :func:`_check_npy`), so a
    damaged file is reported with its path and what is wrong with it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = _kind(path)
        if self.kind == "folder":
            self.names = {p.stem for p in path.glob("*.npy")}
        else:
            with _open_npz(path) as npz:
                self.names = set(npz.files)

    def where(self, name: str) -> str:
        return str(self.path / f"{name}.npy") if self.kind == "folder" else f"{self.path}:{name}"

    def get(self, name: str) -> np.ndarray:
        where = self.where(name)
        if self.kind == "npz":
            with _open_npz(self.path) as npz:
                return _npz_array(npz, name, where)
        file = self.path / f"{name}.npy"
        _check_start(file, _NPY_EXPECTED, (_NPY_MAGIC,), where)
        with open(file, "rb") as f:
            _check_npy(f, file.stat().st_size, where)
        try:
            # "c": copy-on-write, so the arrays are writable (torch warns on
            # read-only ones) yet the files are never modified.
            return np.load(file, mmap_mode="c", allow_pickle=False)
        except _READ_ERRORS as err:  # checked above; this is for a file changed meanwhile
            raise BundleError(f"{where}: cannot be read ({err}); expected {_NPY_EXPECTED}") from None


def _real_array(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise BundleError(f"{where}: dtype {x.dtype}; expected a real numeric array (float32 loads fastest)")
    return x


def load_bundle(path: str | Path, views: Sequence[str] | None = None) -> MultimodalDataset:
    """Load and validate a bundle as a :class:`MultimodalDataset`.

    Args:
        path: a ``.npz`` file or a folder (see the module docstring).
        views: the modalities to load, in this order (default: all, in the
            metadata's order); the other modality arrays are not read.

    Raises:
        BundleError: (a ``ValueError``) unreadable files, bad metadata, a
            modality array missing or unlisted, a wrong dtype; and, through
            :class:`MultimodalDataset`, mismatched lengths, non-finite values
            and labels out of range, each naming the bundle, the array and
            the first bad index.
    """
    path = Path(path)
    meta = read_bundle_meta(path)
    reader = _Reader(path)
    where = f"bundle {str(path)!r}"
    listed = set(meta.modalities) | set(RESERVED)
    unlisted = sorted(reader.names - listed)
    if unlisted:
        raise BundleError(
            f"{where}: array {unlisted[0]!r} is not a modality listed in the metadata {meta.modalities} "
            f"nor one of {list(RESERVED[:3])}; add it to 'modalities' or remove it"
        )
    missing = [m for m in meta.modalities if m not in reader.names]
    if missing:
        raise BundleError(
            f"{where}: modality {missing[0]!r} is listed in the metadata but has no array {reader.where(missing[0])}"
        )
    if "labels" not in reader.names:
        raise BundleError(f"{where}: no labels array; expected {reader.where('labels')} with shape (N,)")
    chosen = meta.modalities if views is None else list(views)
    unknown = [v for v in chosen if v not in meta.modalities]
    if unknown:
        raise BundleError(f"{where}: unknown modality {unknown[0]!r}; valid: {meta.modalities}")

    labels = _real_array(reader.get("labels"), reader.where("labels"))
    if labels.dtype.kind == "f":
        raise BundleError(f"{reader.where('labels')}: dtype {labels.dtype}; expected integers")
    split = _real_array(reader.get("split"), reader.where("split")) if "split" in reader.names else None
    if "ids" in reader.names:
        _check_ids(reader.get("ids"), len(labels), reader.where("ids"))
    modalities = {m: _real_array(reader.get(m), reader.where(m)) for m in chosen}
    # Checks the data itself (lengths, finiteness, label range, split values);
    # the bundle path in `name` makes every message say where it came from.
    data = MultimodalDataset(
        {m: _as_tensor(x) for m, x in modalities.items()}, labels, meta.class_names, name=f"{where}", split=split
    )
    data.name = meta.name
    return data


def _as_tensor(x: np.ndarray) -> torch.Tensor | np.ndarray:
    # float32 memory maps become tensors that share the mapped pages (no copy);
    # other dtypes are converted by MultimodalDataset, in memory.
    return torch.from_numpy(x) if x.dtype == np.float32 else x


def _check_ids(ids: np.ndarray, n: int, where: str) -> None:
    if ids.dtype.kind != "U" or ids.shape != (n,):
        raise BundleError(f"{where}: shape {ids.shape}, dtype {ids.dtype}; expected ({n},) strings, one id per label")
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if np.any(counts > 1):
        k = int(np.flatnonzero(counts > 1)[0])
        raise BundleError(
            f"{where}: id {str(ids[first[k]])!r} occurs {int(counts[k])} times (first at index {int(first[k])}); "
            "ids must be unique"
        )


def load_bundle_ids(path: str | Path) -> np.ndarray | None:
    """The sample ids ``(N,)`` of a bundle (strings), or None when it has none."""
    reader = _Reader(Path(path))
    return np.asarray(reader.get("ids")) if "ids" in reader.names else None


def save_bundle(
    path: str | Path,
    modalities: Mapping[str, np.ndarray | torch.Tensor],
    labels: np.ndarray | Sequence[int],
    class_names: Sequence[str],
    split: np.ndarray | Sequence[int] | None = None,
    ids: Sequence[str] | np.ndarray | None = None,
    name: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a bundle: ``path`` ending in ``.npz`` gives one file, anything else a folder.

    Arrays are written as given (dtype included); load with :func:`load_bundle`.
    ``extra`` adds JSON fields to the metadata (provenance, notes). The data is
    validated first, with the same checks as loading, so a bundle that saves
    also loads. An existing folder is refused unless it is empty.
    """
    path = Path(path)
    meta = BundleMeta(
        name or path.stem, [str(m) for m in modalities], [str(c) for c in class_names], dict(extra or {})
    )
    _parse_meta(meta.to_json(), f"save_bundle({str(path)!r})")  # names, counts
    arrays: dict[str, np.ndarray] = {
        m: (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)) for m, x in modalities.items()
    }
    arrays["labels"] = np.asarray(labels)
    if split is not None:
        arrays["split"] = np.asarray(split)
    if ids is not None:
        arrays["ids"] = np.asarray(ids, dtype=str)
        _check_ids(arrays["ids"], len(arrays["labels"]), f"save_bundle({str(path)!r}): ids")
    where = f"save_bundle({str(path)!r})"
    for key, x in arrays.items():
        if key != "ids":
            _real_array(x, f"{where}: array {key!r}")
    MultimodalDataset(
        {m: arrays[m] for m in meta.modalities}, arrays["labels"], meta.class_names,
        name=where, split=arrays.get("split"),
    )
    if path.suffix == ".npz" and path.is_dir():
        raise BundleError(f"{where}: a folder exists there; expected a new .npz file path")
    if path.suffix != ".npz" and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BundleError(f"{where}: {str(path)!r} exists and is not an empty folder; choose a new path")
    # Written under a temporary name beside `path`, then renamed: an interrupted
    # save never leaves a half-written bundle under the real name.
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_sibling(path)
    try:
        if path.suffix == ".npz":
            payload: dict[str, Any] = {"meta": np.array(meta.to_json()), **arrays}
            with open(staging, "xb") as f:
                np.savez(f, **payload)
            os.replace(staging, path)
            return path
        staging.mkdir()
        for key, x in arrays.items():
            np.save(staging / f"{key}.npy", x, allow_pickle=False)
        (staging / _META_FILE).write_text(meta.to_json() + "\n", encoding="utf-8")
        _publish_folder(staging, path)
    except BaseException:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)
        raise
    return path


def _temporary_sibling(path: Path) -> Path:
    """A new, unused hidden name beside ``path``, for writing there and renaming at the end.

    Nothing is created: open it with ``"x"`` or ``mkdir`` it, so the result has
    the usual permissions (``tempfile`` would create it private to the user).
    In the same folder, so the final rename stays on one file system.
    """
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _publish_folder(staging: Path, path: Path) -> None:
    """Rename the finished folder ``staging`` to ``path``, which must not exist or be an empty folder."""
    if path.is_dir() and not any(path.iterdir()):
        # An empty folder the caller made for us: renaming a folder onto one is not portable.
        path.rmdir()
    if path.exists():
        raise BundleError(f"{str(path)!r} appeared while the bundle was written; choose a new path")
    os.rename(staging, path)
