"""The results file of a comparison: one JSON line per finished episode, appended atomically, so an
interrupted sweep keeps every whole line and a rerun resumes from them."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = ["RESULTS_FILE", "append_record", "pending_cells", "read_records", "record_key"]

RESULTS_FILE = "results.jsonl"


class _Keyed(Protocol):
    """What :func:`pending_cells` reads of a cell (:class:`benchmarks.compare.Cell`)."""

    @property
    def key(self) -> tuple[str, str, str, int]: ...

    @property
    def settings(self) -> str: ...


CellT = TypeVar("CellT", bound=_Keyed)


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as one line, atomically: a single ``write`` on an ``O_APPEND`` file.

    Readers never see half a line from this call, and concurrent appenders
    never interleave within a line.
    """
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(f"{path}: wrote {written} of {len(data)} bytes of a result line (disk full?)")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a results file; ``[]`` when it does not exist.

    A last line without its newline can only come from a writer that died
    mid-write outside :func:`append_record`; it is cut off (with a warning), so
    the next append starts a fresh line.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        warnings.warn(f"{path}: dropping an unfinished last line ({len(data) - end} bytes)", stacklevel=2)
        with path.open("r+b") as f:
            f.truncate(end)
        data = data[:end]
    records = []
    for number, line in enumerate(data.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON result line ({err})") from None
    return records


def record_key(record: dict[str, Any]) -> tuple[str, str, str, int]:
    """What identifies a record: ``(policy, dataset, method, seed)``, the key of its cell."""
    return (record["policy"], record["dataset"], record["method"], int(record["seed"]))


def pending_cells(cells: Sequence[CellT], records: Iterable[dict[str, Any]], path: str | Path) -> list[CellT]:
    """The cells with no record yet; a record with other settings is an error (not silently mixed)."""
    done: dict[tuple[str, str, str, int], dict[str, Any]] = {record_key(r): r for r in records}
    pending = []
    for cell in cells:
        record = done.get(cell.key)
        if record is None:
            pending.append(cell)
        elif record["settings"] != json.loads(cell.settings):
            raise ValueError(
                f"{path}: cell {cell.key} was run with settings {record['settings']}, this run asks for "
                f"{json.loads(cell.settings)}; use another --output (or the same settings)"
            )
    return pending
