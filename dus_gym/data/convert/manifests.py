"""Manifests: the ``(id, class, split)`` rows of a sample list in a codebase's format, class lists
(``stat.txt``) and the order that numbers the classes (``--class-order``)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLASS_LIST_FORMATS",
    "CLASS_ORDERS",
    "MANIFEST_FORMATS",
    "SPLITS",
    "Row",
    "read_class_list",
    "read_manifest",
]

MANIFEST_FORMATS = ("csv", "class_first", "mla", "last", "vggsound", "balancedav")
CLASS_LIST_FORMATS = ("csv", "lines", "mla_ks")
CLASS_ORDERS = ("sorted", "numeric", "listed", "first_train")
SPLITS = {"train": 0, "val": 1, "test": 2}
MEDIA_EXTS = (".mp4", ".flv", ".avi", ".mkv", ".webm", ".mov", ".wav", ".mp3", ".m4a", ".jpg", ".png")
"""Extensions dropped from an id in ``mla`` and ``last`` lists (``clip.flv`` -> ``clip``)."""
_BALANCEDAV_SUBSETS = {"training": "train", "testing": "test", "validation": "val", "validating": "val"}


@dataclass(frozen=True)
class Row:
    """One manifest entry: a sample id, its class name, its split (or None), and where it was read."""

    id: str
    label: str
    split: str | None
    where: str


def _check_path(path: Path, what: str, folder: bool) -> None:
    """Refuse a path that does not exist or is of the wrong kind, in one line naming it.

    Raises:
        FileNotFoundError: nothing at ``path``.
        IsADirectoryError, NotADirectoryError: a folder where a file is
            expected, or the other way round.
    """
    expected = "a folder" if folder else "a file"
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; expected {expected}")
    if path.is_dir() and not folder:
        raise IsADirectoryError(f"{what} {str(path)!r} is a folder; expected {expected}")
    if folder and not path.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r} is a file; expected {expected}")


def _strip_ext(name: str) -> str:
    lower = name.lower()
    return next((name[: -len(e)] for e in MEDIA_EXTS if lower.endswith(e)), name)


def _read_text(path: Path, what: str) -> str:
    try:
        # utf-8-sig: OGM-GE's CSV files start with a byte-order mark.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{what} {str(path)!r} is not UTF-8 text ({err}); expected a list of ids and classes"
        ) from None


def read_manifest(path: str | Path, fmt: str = "auto", split: str | None = None) -> list[Row]:
    """Read the ``(id, class)`` rows of a manifest.

    Args:
        path: the list file.
        fmt: one of :data:`MANIFEST_FORMATS` or ``"auto"``:

            - ``"csv"``: ``id,class`` per row (a first row ``id,...`` or
              ``name,...`` is a header): OGM-GE's and BalanceBenchmark's
              CREMA-D lists;
            - ``"class_first"``: ``class,id`` per row: OGM-GE's KS and AVE
              lists (``dataset/dataset.py``);
            - ``"mla"``: ``ID.EXT CLASS`` per line, the class being the rest of
              the line (spaces allowed): MLA's lists;
            - ``"last"``: fields separated by commas (if the line has one) or
              whitespace, the id first, the class last: BalanceBenchmark's KS
              lists, whose class is a number. Lines with different numbers of
              fields are refused (a class name with spaces cannot be told
              from the fields before it);
            - ``"vggsound"``: VGGSound's CSV ``ytid,start,class,split``; the id
              is ``ytid_start`` and every row carries its split;
            - ``"balancedav"``: BalancedAV's JSON
              (``{"database": {id: {"subset": "training", "label": ...}},
              "labels": [...]}``); every row carries its split;
            - ``"auto"``: ``csv`` for ``.csv``, ``balancedav`` for ``.json``,
              else ``last``.

            ``mla`` and ``last`` drop a media extension from the id
            (``.flv``, ``.mp4``, ...).
        split: ``"train"``, ``"val"``, ``"test"`` or None, given to every row
            (not allowed for the formats whose rows carry their split).

    Raises:
        ValueError: an unknown format, a file that is not UTF-8 text, or a
            line that has no class (naming the file and line number).
        FileNotFoundError, IsADirectoryError: no file at ``path``.
    """
    path = Path(path)
    _check_path(path, "manifest", folder=False)
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = "csv" if suffix == ".csv" else "balancedav" if suffix == ".json" else "last"
    if fmt not in MANIFEST_FORMATS:
        raise ValueError(f"unknown manifest format {fmt!r}; valid: {['auto', *MANIFEST_FORMATS]}")
    if fmt in ("vggsound", "balancedav") and split is not None:
        raise ValueError(
            f"manifest {str(path)!r}: a {fmt} manifest carries the split of every row; give it without SPLIT="
        )
    text = _read_text(path, "manifest")
    if fmt == "balancedav":
        return _read_balancedav(path, text)
    if fmt in ("csv", "class_first", "vggsound"):
        return _csv_rows(path, text, fmt, split)
    return _line_rows(path, text, fmt, split)


def _csv_rows(path: Path, text: str, fmt: str, split: str | None) -> list[Row]:
    """The rows of a ``csv``, ``class_first`` or ``vggsound`` manifest (:func:`read_manifest`)."""
    rows: list[Row] = []
    for number, fields_ in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        where = f"{path}:{number}"
        fields_ = [x.strip() for x in fields_]
        if not any(fields_):
            continue
        if number == 1 and fields_[0].lower() in ("id", "name", "file", "filename", "path", "video", "class",
                                                   "label", "youtube_id", "ytid"):
            continue
        if fmt == "vggsound":
            if len(fields_) < 4 or not all(fields_[:4]):
                raise ValueError(f"{where}: expected 'youtube_id,start,class,split', got {','.join(fields_)!r}")
            rows.append(Row(f"{fields_[0]}_{fields_[1]}", fields_[2], fields_[3], where))
            continue
        if len(fields_) < 2 or not fields_[0] or not fields_[1]:
            expected = "id,class" if fmt == "csv" else "class,id"
            raise ValueError(f"{where}: expected '{expected}', got {','.join(fields_)!r}")
        if fmt == "class_first" and len(fields_) == 3 and fields_[1].isdigit() and fields_[2].isdigit():
            # The lists OGM-GE ships (data/KineticSound/my_train.txt) are 'id,10,class'; its own
            # dataset.py reads 'class,id' and would find no file for any row.
            raise ValueError(
                f"{where}: {','.join(fields_)!r} is an 'id,N,class' row, as OGM-GE ships its Kinetics-Sounds "
                "lists, not 'class,id' (which its dataset.py reads): give --manifest-format last (the id first, "
                "the class last)"
            )
        sample_id, label = (fields_[0], fields_[1]) if fmt == "csv" else (fields_[1], fields_[0])
        rows.append(Row(sample_id, label, split, where))
    return rows


def _line_rows(path: Path, text: str, fmt: str, split: str | None) -> list[Row]:
    """The rows of an ``mla`` or ``last`` manifest (:func:`read_manifest`)."""
    rows: list[Row] = []
    counts: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if fmt == "mla":
            parts = line.split(maxsplit=1)
            if len(parts) < 2:
                raise ValueError(f"{where}: expected 'ID.EXT CLASS', got {line!r}")
            rows.append(Row(_strip_ext(parts[0]), parts[1].strip(), split, where))
            continue
        parts = [p.strip() for p in line.split(",")] if "," in line else line.split()
        if len(parts) < 2 or not parts[-1]:
            raise ValueError(f"{where}: expected the id first and the class last, got {line!r}")
        if counts and len(parts) not in counts:
            (n1, w1), n2, w2 = next(iter(counts.items())), len(parts), where
            raise ValueError(
                f"{path}: lines have different numbers of fields ({n1} at {w1}, {n2} at {w2}); the 'last' format "
                "takes the last field as the class, so a class name with spaces would be cut: use a list whose "
                "class is one field (BalanceBenchmark's KS lists end with a class number), or --manifest-format mla"
            )
        counts.setdefault(len(parts), where)
        rows.append(Row(_strip_ext(parts[0]), parts[-1], split, where))
    return rows


def _read_balancedav(path: Path, text: str) -> list[Row]:
    try:
        data = json.loads(text)
        database = data["database"]
        if not isinstance(database, dict):
            raise TypeError("'database' is not an object")
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"manifest {str(path)!r}: {err}; expected BalancedAV's JSON {{'database': {{id: {{'subset', 'label'}}}}, "
            "'labels': [...]}}"
        ) from None
    rows = []
    for key, entry in database.items():
        where = f"{path}:database[{key!r}]"
        if not isinstance(entry, dict) or "label" not in entry or "subset" not in entry:
            raise ValueError(f"{where}: expected an object with 'subset' and 'label', got {entry!r}")
        subset = str(entry["subset"])
        rows.append(Row(str(key), str(entry["label"]), _BALANCEDAV_SUBSETS.get(subset, subset), where))
    return rows


def _manifest_classes(path: Path, fmt: str) -> list[str] | None:
    """The class list a manifest itself declares (BalancedAV's ``labels``), else None."""
    if fmt != "balancedav" and not (fmt == "auto" and path.suffix.lower() == ".json"):
        return None
    labels = json.loads(_read_text(path, "manifest")).get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"manifest {str(path)!r}: 'labels' must be a list of class names, got {labels!r}")
    return labels


def read_class_list(path: str | Path, fmt: str = "csv") -> list[str]:
    """Class names from a class list file (``stat.txt``), in file order.

    ``fmt``: ``"csv"``: the first field of each CSV row (OGM-GE's
    ``dataset/dataset.py`` reads ``stat.txt`` so); ``"lines"``: each line,
    stripped (MLA's ``stat_cre.txt``); ``"mla_ks"``: of the lines that split
    into three parts at ``" >"``, the first part (MLA's ``stat_ks.txt``).
    Empty lines are skipped.
    """
    path = Path(path)
    _check_path(path, "class list", folder=False)
    if fmt not in CLASS_LIST_FORMATS:
        raise ValueError(f"unknown class list format {fmt!r}; valid: {list(CLASS_LIST_FORMATS)}")
    text = _read_text(path, "class list")
    if fmt == "csv":
        names = [r[0].strip() for r in csv.reader(io.StringIO(text, newline="")) if r and r[0].strip()]
    elif fmt == "lines":
        names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        names = [parts[0] for line in text.splitlines() if len(parts := line.strip().split(" >")) == 3]
    if not names:
        raise ValueError(f"class list {str(path)!r} names no class (format {fmt!r})")
    return names



def _class_order(rows: Sequence[Row], order: str) -> list[str]:
    """The class names of ``rows`` in ``order``: ``first_train``, ``sorted`` (Python's ``sorted()`` on the
    names, as OGM-GE's and MLA's loaders sort theirs: ``'13' < '27' < '4'``) or ``numeric`` (by value;
    names that are not all integers are sorted as strings, as ``sorted``)."""
    if order == "first_train":
        ordered = [r.label for r in rows if r.split == "train"] + [r.label for r in rows]
        return list(dict.fromkeys(ordered))
    seen = sorted({r.label for r in rows})
    if order == "numeric" and all(re.fullmatch(r"-?\d+", c) for c in seen):
        return sorted(seen, key=int)
    return seen


def _choose_classes(
    rows: Sequence[Row],
    manifests: Sequence[tuple[str | None, str | Path]],
    manifest_format: str,
    classes: Sequence[str] | None,
    class_list: str | Path | None,
    class_list_format: str,
    class_order: str | None,
) -> tuple[list[str], str]:
    """The class names in label order, and the order's name, as :func:`dus_gym.data.convert.convert`
    documents its ``classes``, ``class_list`` and ``class_order``.

    Raises:
        ValueError: an unknown order, or a class listed twice.
    """
    declared = None
    if classes is None and class_list is None:
        declared = next((c for _, p in manifests if (c := _manifest_classes(Path(p), manifest_format))), None)
    if classes is not None:
        classes = list(classes)
        order = class_order or "listed"
    elif class_list is not None:
        classes = read_class_list(class_list, class_list_format)
        order = class_order or "numeric"
    elif declared is not None:
        classes = declared
        order = class_order or "listed"
    else:
        order = class_order or "numeric"
    if order not in CLASS_ORDERS:
        raise ValueError(f"convert: class order {order!r}; valid: {list(CLASS_ORDERS)}")
    if classes is None:
        classes = _class_order(rows, order)
    elif order in ("sorted", "numeric"):
        classes = _class_order([Row("", c, None, "") for c in classes], order)
    elif order == "first_train":
        appearing = [c for c in _class_order(rows, "first_train") if c in set(classes)]
        classes = appearing + [c for c in classes if c not in set(appearing)]
    if len(set(classes)) != len(classes):
        raise ValueError(f"convert: class {next(c for c in classes if classes.count(c) > 1)!r} is listed twice")
    return list(classes), order
