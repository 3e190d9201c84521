"""What a conversion reports: every skipped row with its reason, the samples kept, the options used;
written as JSON beside (or inside) the bundle, also when no bundle is written."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["ConversionFailed", "ConversionRefused", "ConversionReport", "Skipped", "report_path_for"]


@dataclass
class Skipped:
    """A manifest row that did not become a sample, and why."""

    id: str
    where: str
    reason: str
    modality: str | None = None
    split: str | None = None


@dataclass
class ConversionReport:
    """What the conversion did: rows read, samples kept, rows skipped with reasons."""

    rows: int = 0
    kept: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    output: str = ""
    written: bool = False
    """whether the bundle was written (False in the report of a failed conversion)"""
    error: str | None = None
    layout: str | None = None
    modalities: dict[str, list[int]] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    rows_per_split: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    """counts of things done to samples that were kept: resampled, tiled, cropped, padded"""
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def reasons(self) -> Counter[str]:
        """Counts of skipped rows by modality and kind of reason."""
        return Counter(f"{s.modality or 'manifest'}: {s.reason.split(':')[0]}" for s in self.skipped)

    def summary(self) -> str:
        head = "kept" if self.written or not self.error else "would keep"
        lines = [f"{head} {self.kept} of {self.rows} samples -> {self.output}"]
        lines += [f"  {name}: {tuple(shape)}" for name, shape in self.modalities.items()]
        if self.split_sizes:
            lines.append("  splits: " + ", ".join(f"{k} {v}" for k, v in self.split_sizes.items()))
        lines += [f"  note: {n} x {what}" for what, n in sorted(self.notes.items())]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {n} x {r}" for r, n in sorted(self.reasons().items())]
            for s in self.skipped[:20]:
                lines.append(f"  {s.id} ({s.where}){' ' + s.modality if s.modality else ''}: {s.reason}")
            if len(self.skipped) > 20:
                lines.append(f"  ... {len(self.skipped) - 20} more in the JSON report")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class ConversionFailed(ValueError):
    """No bundle could be written from the rows (none readable, or a split
    left empty); the report with every skipped row was written to ``report_path``."""

    def __init__(self, message: str, report: ConversionReport, report_path: Path | None) -> None:
        super().__init__(message)
        self.report = report
        self.report_path = report_path


class ConversionRefused(ConversionFailed):
    """``strict`` conversion with rows that would be skipped: no bundle was written (the report was)."""


def report_path_for(out: str | Path, written: bool = True) -> Path:
    """Where the JSON report goes: ``OUT/report.json`` in a written folder
    bundle, else ``OUT.report.json`` beside it (an ``.npz``, or a folder that
    was not written because the conversion failed)."""
    out = Path(out)
    if out.suffix == ".npz":
        return out.with_suffix(".report.json")
    return out / "report.json" if written else out.with_name(out.name + ".report.json")



def _fail(report: ConversionReport, out: Path, message: str, kind: type[ConversionFailed] = ConversionFailed
          ) -> NoReturn:
    """Write the report of a conversion that writes no bundle, then raise ``kind``."""
    path: Path | None = report_path_for(out, written=False)
    report.error = message
    report.written = False
    try:
        assert path is not None
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(report.to_json() + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        path = None
    where = f"\nevery row and its reason: {path}" if path else ""
    raise kind(f"{message}\n{report.summary()}{where}", report, path)



def _reason(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, FileNotFoundError) and not text.startswith("missing"):
        return f"missing: {text}"
    if text.split(":")[0] in ("missing", "shape", "sample rate", "frames"):
        return text
    return f"unreadable: {text}"
