"""Every edge a clear error, for data files: damaged bundles, the converter's
paths and options, and damaged or incomplete episode records (and that none
of them is ever left half written).

Each test asserts the exception type and that the message names the file and
what is wrong with it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import dus_gym
from dus_gym import EpisodeRecord, make_policy, record_episode
from dus_gym.data import BundleError, save_bundle
from dus_gym.data.convert import convert, main
from dus_gym.records import RecordError

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


# -- the converter ---------------------------------------------------------------


def _convert_inputs(root: Path, n: int = 9) -> tuple[Path, Path, Path]:
    """A manifest (no split) and two features folders of per-id ``.npy`` files."""
    rng = np.random.default_rng(0)
    a, b = root / "fa", root / "fb"
    a.mkdir(parents=True)
    b.mkdir()
    lines = []
    for i in range(n):
        np.save(a / f"s{i}.npy", rng.normal(size=4).astype(np.float32))
        np.save(b / f"s{i}.npy", rng.normal(size=(2, 3)).astype(np.float32))
        lines.append(f"s{i},{'xyz'[i % 3]}")
    manifest = root / "list.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, a, b


def _cli(out: Path, manifest: str, a: Path, b: Path, *more: str) -> list[str]:
    return [str(out), "--manifest", manifest, "--features", f"a={a}", "--features", f"b={b}", "--no-progress", *more]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("python -m dus_gym.data.convert: error: ")
    return lines[0]


def test_convert_manifest_folder_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, a, b = _convert_inputs(tmp_path)
    folder = tmp_path / "lists"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=rf"manifest '{_names(folder)}' is a folder; expected a file"):
        convert(tmp_path / "out", [(None, folder)], features=[("a", a), ("b", b)], progress=False)
    assert main(_cli(tmp_path / "out", str(folder), a, b)) == 2
    assert f"manifest '{folder}' is a folder; expected a file" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_convert_path_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, a, b = _convert_inputs(tmp_path)
    missing = tmp_path / "nope.csv"
    (tmp_path / "taken.npz").mkdir()
    cases = [
        (_cli(tmp_path / "o", str(missing), a, b), f"manifest '{missing}' does not exist; expected a file"),
        (_cli(tmp_path / "o", str(manifest), manifest, b), f"modality 'a': folder '{manifest}' is a file; "
                                                            "expected a folder"),
        (_cli(tmp_path / "o", str(manifest), tmp_path / "none", b), f"modality 'a': folder '{tmp_path / 'none'}' "
                                                                     "does not exist; expected a folder"),
        (_cli(manifest / "o", str(manifest), a, b), f"cannot write '{manifest / 'o'}': '{manifest}' is a file; "
                                                    "expected a folder"),
        (_cli(tmp_path / "taken.npz", str(manifest), a, b), f"'{tmp_path / 'taken.npz'}' is a folder; "
                                                            "expected a new .npz file path"),
    ]
    for argv, problem in cases:
        assert main(argv) == 2, argv
        assert problem in _one_error_line(capsys.readouterr().err)
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert main(_cli(tmp_path / "o", str(tmp_path / "binary.csv"), a, b)) == 2
    assert f"manifest '{tmp_path / 'binary.csv'}' is not UTF-8 text" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("more", "problem"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--n-mels", "0"], "argument --n-mels: '0' is out of range; expected a number >= 1"),
        (["--seconds", "soon"], "argument --seconds: 'soon' is not a number"),
        (["--val-fraction", "1.5"], "argument --val-fraction: '1.5' is out of range; expected a number >= 0 and < 1"),
        (["--manifest-format", "tsv"], "argument --manifest-format: invalid choice: 'tsv'"),
        (["--features", "c"], "--features: expected NAME=PATH, got 'c'"),
        (["--gray", "a"], "--gray 'a': not a --frames modality"),
    ],
    ids=["option", "range", "number", "fraction", "choice", "pair", "gray"],
)
def test_convert_bad_option_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], more: list[str], problem: str
) -> None:
    manifest, a, b = _convert_inputs(tmp_path)
    try:
        status = main(_cli(tmp_path / "o", str(manifest), a, b, *more))
    except SystemExit as exit_info:  # argparse's own checks exit; ours return the status
        status = exit_info.code  # type: ignore[assignment]
    assert status == 2
    assert problem in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--manifest", "tarin={manifest}"], "--manifest 'tarin={manifest}': unknown split 'tarin'; expected "
                                              "SPLIT=PATH with SPLIT one of ['train', 'val', 'test']"),
        (["--manifest", "{manifest}", "--features", "labels={a}"], "modality name 'labels' is reserved"),
        (["--manifest", "{manifest}", "--features", "../x={a}"], "modality name '../x' is not usable"),
    ],
    ids=["split", "reserved", "file-name"],
)
def test_convert_bad_name_is_refused_before_converting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    manifest, a, b = _convert_inputs(tmp_path)
    argv = [x.format(manifest=manifest, a=a) for x in argv]
    assert main([str(tmp_path / "o"), *argv, "--features", f"b={b}", "--no-progress"]) == 2
    assert problem.format(manifest=manifest) in _one_error_line(capsys.readouterr().err)


def test_convert_command_prints_no_traceback(tmp_path: Path) -> None:
    folder = tmp_path / "lists"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "dus_gym.data.convert", str(tmp_path / "o"), "--manifest", str(folder),
         "--features", f"a={folder}", "--features", f"b={folder}"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert f"manifest '{folder}' is a folder; expected a file" in _one_error_line(done.stderr)


@pytest.mark.parametrize("suffix", ["", ".npz"], ids=["folder", "npz"])
def test_failed_conversion_leaves_no_half_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    manifest, a, b = _convert_inputs(tmp_path / "in")
    out = tmp_path / "out" / f"bundle{suffix}"
    calls: list[object] = []
    real = np.savez if suffix else np.save

    def write_then_fail(file: Any, *args: Any, **kwargs: Any) -> None:
        if calls:  # the second array (folder) or the archive (npz) fails half way
            raise OSError("disk full")
        calls.append(file)
        real(file, *args, **kwargs)
        if suffix:
            raise OSError("disk full")

    monkeypatch.setattr(np, "savez" if suffix else "save", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        convert(out, [(None, manifest)], features=[("a", a), ("b", b)], progress=False)
    assert calls and list(out.parent.iterdir()) == [], "no bundle, no report, no temporary folder"
    monkeypatch.undo()
    report = convert(out, [(None, manifest)], features=[("a", a), ("b", b)], progress=False)
    assert report.kept == 9 and len(dus_gym.load_dataset(f"bundle:{out}")) == 9
    expected = {out.name, "bundle.report.json"} if suffix else {out.name}
    assert {p.name for p in out.parent.iterdir()} == expected, "only the bundle and its report"


# -- episode records -------------------------------------------------------------


def _record() -> EpisodeRecord:
    """A record written by hand (no env is run): enough for the reading checks."""
    return EpisodeRecord("DUS-Synthetic-v0", {"n_steps": 3}, 0, [[4, 4]] * 3, [0.5, 0.25, 0.0])


def test_record_lacking_its_last_steps_is_a_mismatch(tiny_env_kwargs: dict[str, Any], tmp_path: Path) -> None:
    env = gym.make("DUS-Synthetic-v0", **tiny_env_kwargs)
    full = record_episode(env, make_policy("random", env, seed=1), seed=2)
    assert len(full.actions) == tiny_env_kwargs["n_steps"] == 3
    short = EpisodeRecord.from_json(full.to_json())
    del short.actions[-1], short.rewards[-1]
    report = dus_gym.replay(short.save(tmp_path / "short.json"))
    assert not report and not report.matches
    assert report.steps == 2 and report.first_mismatch == 2 and report.expected is None and report.got is None
    assert report.rewards == full.rewards[:2]
    assert "the record has 2 step(s) but the replayed episode had not ended after them" in report.message
    assert "its settings declare 3 (n_steps=3); the record lacks its last 1 step(s)" in report.message
    assert dus_gym.replay(full).matches  # the whole record still matches


@pytest.mark.parametrize("cut", [0.5, 0.97], ids=["half", "last-bytes"])
def test_truncated_record_file_names_the_file(tmp_path: Path, cut: float) -> None:
    path = _record().save(tmp_path / "episode.json")
    text = path.read_text()
    path.write_text(text[: int(len(text) * cut)])
    pattern = rf"episode record '{_names(path)}': the JSON ends early, after \d+ characters \(truncated\?\)"
    with pytest.raises(RecordError, match=pattern):
        EpisodeRecord.load(path)
    with pytest.raises(ValueError, match=pattern):  # RecordError is a ValueError; replay reads the same way
        dus_gym.replay(path)


def test_record_with_unknown_field_is_refused(tmp_path: Path) -> None:
    data = json.loads(_record().to_json())
    data["reward_scale"] = 2.0
    path = tmp_path / "episode.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError) as info:
        EpisodeRecord.load(path)
    message = str(info.value)
    assert f"episode record '{path}': unknown field 'reward_scale'; valid fields: ['env_id', 'env_kwargs'" in message
    assert "'max_episode_steps', 'device', 'format', 'machine']" in message


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: {k: v for k, v in d.items() if k != "seed"}, r"field 'seed' is missing; required fields: \["),
        (lambda d: {**d, "seed": "0"}, r"field 'seed' is '0'; expected an integer"),
        (lambda d: {**d, "rewards": [0.5, "x", 0.0]}, r"field 'rewards' is \[0\.5, 'x', 0\.0\]; expected a list"),
        (lambda d: {**d, "rewards": [0.5]}, r"3 actions but 1 rewards; expected one per step"),
        (lambda d: [d], r"the JSON is a list; expected an object of record fields"),
        (lambda d: '{\n"seed": 0,,\n}', r"not valid JSON \(Expecting property name .* at line 2 column 11\)"),
        (lambda d: " \n", r"it is empty; expected a record as EpisodeRecord.save writes"),
    ],
    ids=["missing", "type", "reward-type", "lengths", "list", "syntax", "empty"],
)
def test_bad_record_files_name_the_file_and_the_problem(tmp_path: Path, edit, problem: str) -> None:
    new = edit(json.loads(_record().to_json()))
    path = tmp_path / "episode.json"
    path.write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(RecordError, match=rf"episode record '{_names(path)}': {problem}"):
        EpisodeRecord.load(path)


def test_record_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"'{_names(tmp_path / 'nope.json')}' does not exist; expected a JSON"):
        EpisodeRecord.load(tmp_path / "nope.json")
    with pytest.raises(RecordError, match=rf"'{_names(tmp_path)}' is a folder; expected a JSON file"):
        EpisodeRecord.load(tmp_path)


def test_record_save_never_leaves_half_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _record().save(tmp_path / "episode.json")
    before = path.read_text()
    changed = _record()
    changed.rewards[0] = 9.0

    def crash(fd: int) -> None:  # the new text is written but not yet on disk: the process dies here
        raise OSError("power cut")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="power cut"):
        changed.save(path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["episode.json"]
