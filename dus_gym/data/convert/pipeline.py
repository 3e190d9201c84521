"""The conversion: manifests and per-id files in, one bundle (:mod:`dus_gym.data.bundle`) and its report
out. Every row becomes a sample or a reported skip; everything is written in a temporary folder beside the
output and renamed into place at the end, so a failed or interrupted conversion leaves no half bundle."""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

# Package-internal helpers of the bundle module: name rules and the write-then-rename steps.
from dus_gym.data.bundle import _check_name, _publish_folder, save_bundle
from dus_gym.data.convert.audio import AudioOptions
from dus_gym.data.convert.frames import FrameOptions
from dus_gym.data.convert.manifests import SPLITS, Row, _check_path, _choose_classes, read_manifest
from dus_gym.data.convert.report import (
    ConversionRefused,
    ConversionReport,
    Skipped,
    _fail,
    _reason,
    report_path_for,
)
from dus_gym.data.convert.sources import Loader, _audio_loader, _features_loader, _frames_loader, _Source, _sources
from dus_gym.data.dataset import stratified_split

__all__ = ["convert"]


def convert(
    out: str | Path,
    manifests: Sequence[tuple[str | None, str | Path]],
    audio: Sequence[tuple[str, str | Path]] = (),
    frames: Sequence[tuple[str, str | Path]] = (),
    features: Sequence[tuple[str, str | Path]] = (),
    manifest_format: str = "auto",
    classes: Sequence[str] | None = None,
    audio_options: AudioOptions | None = None,
    frame_options: Mapping[str, FrameOptions] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    strict: bool = False,
    progress: bool = True,
    name: str | None = None,
    *,
    class_list: str | Path | None = None,
    class_list_format: str = "csv",
    class_order: str | None = None,
    duplicates: str = "first",
    layout: str | None = None,
) -> ConversionReport:
    """Build a bundle at ``out`` (``.npz`` or a folder) from manifests and per-id files.

    Args:
        manifests: ``(split, path)`` pairs; ``split`` is ``"train"``,
            ``"val"``, ``"test"`` or None: the rows of a manifest without split
            have none (the bundle then has no fixed split and runs draw one
            from their seed) unless its format carries one per row
            (``vggsound``, ``balancedav``). Rows with and without split
            together are refused.
        audio, frames, features: ``(modality, folder)`` pairs, in the order
            the bundle lists the modalities (audio, then frames, then
            features). ``modality@split`` gives the folder of one split; a
            folder may hold ``{split}``, replaced by each row's split.
        classes: class names; with ``class_list`` (a ``stat.txt`` read by
            :func:`read_class_list` in ``class_list_format``) the other way
            to fix the classes (a row of another class is skipped).
        class_order: ``"listed"`` (as given), ``"sorted"`` (Python's
            ``sorted()`` on the names, as OGM-GE's and MLA's loaders: numbers
            too are sorted as strings, ``'13' < '27' < '4'``), ``"numeric"``
            (by value when all names are integers, else as ``sorted``) or
            ``"first_train"`` (order of first appearance among training rows,
            OGM-GE's VGGSound). Default: ``listed`` for ``classes``,
            ``numeric`` otherwise (the layouts set the loader's own order); a
            ``balancedav`` manifest's own ``labels`` are listed.
        duplicates: ``"first"`` keeps the first row of an id, ``"last"`` the
            last (OGM-GE's AVE loader); the others are skipped.
        audio_options: one for every audio modality; default :class:`AudioOptions`.
        frame_options: per frames modality; default :class:`FrameOptions`.
        val_fraction: with train and test rows but no val rows, this
            fraction of the kept training samples becomes the validation split
            (stratified, from ``seed``).
        strict: write no bundle if a row would be skipped.
        layout: the ``--layout`` name, recorded in the report.

    Returns:
        the report (also written as JSON, see :func:`report_path_for`).

    Raises:
        ConversionFailed: no row could be read, or a split is left empty;
            ``ConversionRefused`` (a subclass) for ``strict``. The report,
            with every skipped row, is written beside ``out`` first.
    """
    out = Path(out)
    _check_output(out)
    audio_options = (audio_options or AudioOptions()).resolved()
    frame_options = dict(frame_options or {})
    sources = _check_sources(audio, frames, features, frame_options)
    _check_arguments(manifests, duplicates)
    rows = _read_rows(manifests, manifest_format, sources)
    classes, order = _choose_classes(
        rows, manifests, manifest_format, classes, class_list, class_list_format, class_order
    )
    report = _new_report(out, rows, classes, layout)
    report.options = {
        "manifest_format": manifest_format, "class_order": order, "duplicates": duplicates,
        "audio": asdict(audio_options) if audio else None,
        "frames": {m: asdict(o) for m, o in frame_options.items()},
    }
    notes: Counter[str] = Counter()
    loaders = _loaders(sources, audio_options, frame_options, notes)

    # Everything is written inside a temporary folder beside `out` (the sample
    # buffers, then the bundle and its report) and renamed into place at the
    # end: a conversion that fails or is interrupted leaves no half bundle.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.convert-", dir=out.parent))
    buffers: dict[str, np.ndarray] = {}
    try:
        kept_rows = _read_samples(rows, loaders, classes, duplicates, buffers, tmp, report, progress, out.name)
        _note_kept(report, kept_rows, buffers, notes)
        if strict and report.skipped:
            _fail(report, out, f"strict: {len(report.skipped)} rows would be skipped; no bundle written",
                  ConversionRefused)
        if not kept_rows:
            _fail(report, out, "convert: no sample could be read")
        class_index = {c: i for i, c in enumerate(classes)}
        labels = np.array([class_index[r.label] for r in kept_rows], dtype=np.int64)
        split_codes = None
        if any(r.split is not None for r in rows):
            split_codes = _split_codes(kept_rows, labels, val_fraction, seed, report, out)
        source = {
            "converter": "dus_gym.data.convert", "layout": layout, "manifests": [[s, str(p)] for s, p in manifests],
            "modalities": {src.name: {str(k): v for k, v in src.folders.items()} for src in sources},
            "skipped": len(report.skipped),
        }
        arrays = {m: b[: len(kept_rows)] for m, b in buffers.items()}
        staged = tmp / "bundle" / out.name  # a subfolder: no clash with the buffers' names
        staged.parent.mkdir()
        save_bundle(
            staged, arrays, labels, classes, split_codes, [r.id for r in kept_rows],
            name=name or out.stem, extra={"source": source},
        )
        report.written = True
        _publish(staged, out, report.to_json() + "\n")
        if out.suffix != ".npz":  # the report of an earlier failed try, beside the folder
            report_path_for(out, written=False).unlink(missing_ok=True)
    finally:
        buffers.clear()  # the memory maps of the sample buffers, before their folder goes
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _check_output(out: Path) -> None:
    """Refuse an output path the bundle could not be written to. Checked first: a conversion can take
    hours, and save_bundle would refuse at the end."""
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise FileExistsError(f"convert: {str(out)!r} exists; choose a new path or remove it")
    if out.suffix == ".npz" and out.is_dir():
        raise IsADirectoryError(f"convert: {str(out)!r} is a folder; expected a new .npz file path")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(f"convert: cannot write {str(out)!r}: {str(blocking)!r} is a file; expected a folder")


def _check_sources(
    audio: Sequence[tuple[str, str | Path]],
    frames: Sequence[tuple[str, str | Path]],
    features: Sequence[tuple[str, str | Path]],
    frame_options: Mapping[str, FrameOptions],
) -> list[_Source]:
    """The modalities in bundle order (audio, frames, features), their names and fixed folders checked."""
    sources = [*_sources("audio", audio), *_sources("frames", frames), *_sources("features", features)]
    names = [s.name for s in sources]
    if len(sources) < 2 or len(set(names)) != len(names):
        raise ValueError(f"convert: expected at least two modalities with distinct names, got {names}")
    unknown = [m for m in frame_options if m not in {s.name for s in sources if s.kind == "frames"}]
    if unknown:
        raise ValueError(f"convert: frame options for {unknown[0]!r}, which is not a frames modality")
    for src in sources:
        _check_name(src.name, "convert")
        for template in src.folders.values():
            if "{split}" not in template:
                _check_path(Path(template), f"convert: modality {src.name!r}: folder", folder=True)
    return sources


def _check_arguments(manifests: Sequence[tuple[str | None, str | Path]], duplicates: str) -> None:
    if not manifests:
        raise ValueError("convert: give at least one manifest")
    bad = [s for s, _ in manifests if s is not None and s not in SPLITS]
    if bad:
        raise ValueError(f"convert: unknown split {bad[0]!r}; valid: {list(SPLITS)}")
    if duplicates not in ("first", "last"):
        raise ValueError(f"convert: duplicates={duplicates!r}; expected 'first' or 'last'")


def _read_rows(
    manifests: Sequence[tuple[str | None, str | Path]], manifest_format: str, sources: Sequence[_Source]
) -> list[Row]:
    """Every manifest row, in order; refused when some rows have a split and others not, or when a
    modality has no existing folder for a split the rows use."""
    rows = [r for split, path in manifests for r in read_manifest(path, manifest_format, split)]
    has_split = [r.split is not None for r in rows]
    if any(has_split) and not all(has_split):
        raise ValueError("convert: give manifests either all with a split (train=..., test=...) or one without")
    splits_used: set[str | None] = {r.split for r in rows if r.split in SPLITS} if any(has_split) else {None}
    for src in sources:
        for split, folder in src.concrete(splits_used):
            where = f"convert: modality {src.name!r}: folder" + (f" (split {split!r})" if split else "")
            _check_path(folder, where, folder=True)
    return rows


def _loaders(
    sources: Sequence[_Source], audio_options: AudioOptions, frame_options: Mapping[str, FrameOptions],
    notes: Counter[str],
) -> dict[str, Loader]:
    """Per modality, the function that reads a row's array (notes of what was done to it go to ``notes``)."""
    loaders: dict[str, Loader] = {}
    for src in sources:
        if src.kind == "audio":
            loaders[src.name] = _audio_loader(src, audio_options, notes)
        elif src.kind == "frames":
            loaders[src.name] = _frames_loader(src, frame_options.get(src.name, FrameOptions()))
        else:
            loaders[src.name] = _features_loader(src)
    return loaders


def _new_report(out: Path, rows: Sequence[Row], classes: list[str], layout: str | None) -> ConversionReport:
    report = ConversionReport(rows=len(rows), output=str(out), layout=layout, class_names=list(classes))
    report.rows_per_split = dict(Counter(str(r.split) for r in rows))
    if all(re.fullmatch(r"-?\d+", c) for c in classes) and [int(c) for c in classes] != list(range(len(classes))):
        report.warnings.append(
            f"the class names are numbers but not 0..{len(classes) - 1} ({classes[:5]}...): label k is the k-th "
            "class in this order, not the number itself"
        )
    return report


def _read_samples(
    rows: Sequence[Row],
    loaders: Mapping[str, Loader],
    classes: Sequence[str],
    duplicates: str,
    buffers: dict[str, np.ndarray],
    tmp: Path,
    report: ConversionReport,
    progress: bool,
    out_name: str,
) -> list[Row]:
    """Read every row into ``buffers`` (one memory-mapped array per modality in ``tmp``, filled in
    place), a skipped row into ``report.skipped`` with its reason; returns the rows kept, in order."""
    class_index = {c: i for i, c in enumerate(classes)}
    last_of: dict[str, int] = {}
    if duplicates == "last":
        for i, r in enumerate(rows):
            if r.label in class_index:
                last_of[r.id] = i
    kept_rows: list[Row] = []
    seen_ids: dict[str, str] = {}
    for index, row in enumerate(tqdm(rows, desc=f"convert -> {out_name}", unit="sample", disable=not progress)):
        skip = functools.partial(Skipped, row.id, row.where, split=row.split)
        if row.split is not None and row.split not in SPLITS:
            report.skipped.append(skip(f"split: {row.split!r} is not one of {list(SPLITS)}"))
            continue
        if row.label not in class_index:
            report.skipped.append(skip(f"unknown class: {row.label!r} is not in {list(classes)}"))
            continue
        if duplicates == "last" and last_of[row.id] != index:
            later = rows[last_of[row.id]].where
            report.skipped.append(skip(f"duplicate id: listed again at {later}, which is kept (--duplicates last)"))
            continue
        if row.id in seen_ids:
            report.skipped.append(skip(f"duplicate id: first listed at {seen_ids[row.id]}"))
            continue
        seen_ids[row.id] = row.where
        sample = _load_sample(row, loaders, buffers, skip)
        if isinstance(sample, Skipped):
            report.skipped.append(sample)
            continue
        for mod, x in sample.items():
            if mod not in buffers:
                # On disk, so a set larger than memory converts; one row per manifest row at most.
                buffers[mod] = np.lib.format.open_memmap(
                    tmp / f"{mod}.npy", mode="w+", dtype=np.float32, shape=(len(rows), *x.shape)
                )
            buffers[mod][len(kept_rows)] = x
        kept_rows.append(row)
    return kept_rows


def _load_sample(
    row: Row, loaders: Mapping[str, Loader], buffers: Mapping[str, np.ndarray], skip: Any
) -> dict[str, np.ndarray] | Skipped:
    """Every modality of ``row`` as float32, or why the row is skipped (``skip(reason, modality)``): an
    unreadable file, a shape other than the first sample's, non-finite values."""
    sample: dict[str, np.ndarray] = {}
    for mod, load in loaders.items():
        try:
            x = np.asarray(load(row), dtype=np.float32)
        except Exception as err:  # any unreadable sample is reported, never fatal
            return skip(_reason(err), mod)
        if mod in buffers and x.shape != buffers[mod].shape[1:]:
            return skip(f"shape: {x.shape}, expected {buffers[mod].shape[1:]} (the first sample's)", mod)
        if not np.isfinite(x).all():
            return skip("non-finite: NaN or inf values", mod)
        sample[mod] = x
    return sample


def _note_kept(
    report: ConversionReport, kept_rows: Sequence[Row], buffers: Mapping[str, np.ndarray], notes: Counter[str]
) -> None:
    """Record in ``report`` what was kept: counts, shapes, what was done to the samples."""
    report.kept = len(kept_rows)
    report.notes = dict(notes)
    report.modalities = {m: list(b.shape[1:]) for m, b in buffers.items()}
    fitted = [k for k in notes if ": arrays " in k and ("tiled" in k or "zero-padded" in k)]
    if fitted:
        report.warnings.append(
            "; ".join(f"{notes[k]} of {report.kept} samples' {k}" for k in fitted)
            + ": check --time-axis and the length if this is unexpected"
        )


def _split_codes(
    kept_rows: Sequence[Row], labels: np.ndarray, val_fraction: float, seed: int, report: ConversionReport,
    out: Path,
) -> np.ndarray:
    """The split code of every kept row (:data:`SPLITS`); without val rows, ``val_fraction`` of the
    training samples (stratified, from ``seed``) become validation. An empty split fails the conversion."""
    split_codes = np.array([SPLITS[str(r.split)] for r in kept_rows], dtype=np.int64)
    if not np.any(split_codes == 1) and val_fraction > 0:
        train = np.flatnonzero(split_codes == 0)
        rng = np.random.default_rng(seed)
        carved = stratified_split(labels[train], (1 - val_fraction, val_fraction, 0.0), rng)
        split_codes[train[carved.val.numpy()]] = 1
    report.split_sizes = {s: int(np.sum(split_codes == i)) for s, i in SPLITS.items()}
    # A split whose rows were all skipped first: it says more than a split nobody listed.
    empty = sorted((s for s, size in report.split_sizes.items() if size == 0),
                   key=lambda s: report.rows_per_split.get(s, 0) == 0)
    if empty:
        s = empty[0]
        read = report.rows_per_split.get(s, 0)
        lost = Counter(f"{k.modality or 'manifest'}: {k.reason.split(':')[0]}" for k in report.skipped
                       if k.split == s)
        why = (
            f"its {read} rows were all skipped ({', '.join(f'{v} x {k}' for k, v in lost.most_common(3))})"
            if read else "no row has it"
        )
        hint = (
            f"; give a manifest for it or a larger --val-fraction (now {val_fraction}; it is rounded down "
            "class by class)" if s == "val" and not read else
            "; are its files in another folder (a {split} folder, or NAME@" + s + "=DIR)?" if read else
            "; give a manifest for it"
        )
        _fail(report, out, f"convert: split {s!r} is empty ({report.split_sizes}): {why}{hint}")
    return split_codes


def _publish(staged: Path, out: Path, report: str) -> None:
    """Move the finished bundle ``staged`` to ``out`` with its JSON ``report``:
    ``OUT/report.json`` in a folder, ``OUT.report.json`` beside an ``.npz``."""
    if out.suffix != ".npz":
        (staged / "report.json").write_text(report, encoding="utf-8")
        _publish_folder(staged, out)
        return
    if out.exists():
        raise FileExistsError(f"convert: {str(out)!r} appeared while converting; choose a new path")
    report_path = out.with_suffix(".report.json")
    staged_report = staged.with_suffix(".report.json")
    staged_report.write_text(report, encoding="utf-8")
    # The report first: once the bundle is there, its report is too.
    os.replace(staged_report, report_path)
    try:
        os.replace(staged, out)
    except BaseException:
        report_path.unlink(missing_ok=True)
        raise

