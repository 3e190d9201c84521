"""Feature bundles: round trip, memory mapping, and one refusal per defect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dus_gym.data import BundleError, dataset_modalities, load_bundle, load_dataset, read_bundle_meta, save_bundle
from dus_gym.data.bundle import load_bundle_ids


def _arrays(n: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "audio": rng.normal(size=(n, 1, 8, 6)).astype(np.float32),
        "visual": rng.normal(size=(n, 3, 4, 4)).astype(np.float32),
        "text": rng.normal(size=(n, 5, 7)).astype(np.float32),
    }


def _save(path: Path, **overrides: object) -> Path:
    n = 12
    args: dict = {
        "modalities": _arrays(n),
        "labels": np.arange(n) % 3,
        "class_names": ["a", "b", "c"],
        "split": np.arange(n) % 3,
        "ids": [f"clip{i:03d}" for i in range(n)],
    }
    args.update(overrides)
    return save_bundle(path, **args)


@pytest.mark.parametrize("suffix", ["", ".npz"], ids=["folder", "npz"])
def test_round_trip_is_identical(tmp_path: Path, suffix: str) -> None:
    arrays = _arrays()
    labels = np.array([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2])
    split = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    ids = [f"clip{i:03d}" for i in range(12)]
    path = save_bundle(tmp_path / f"b{suffix}", arrays, labels, ["NEU", "HAP", "SAD"], split, ids, name="mine")
    data = load_bundle(path)
    assert data.name == "mine"
    assert data.modality_names == ["audio", "visual", "text"]
    assert data.class_names == ["NEU", "HAP", "SAD"]
    for m, x in arrays.items():
        assert data.modalities[m].dtype == torch.float32
        assert np.array_equal(data.modalities[m].numpy(), x)
    assert np.array_equal(data.labels.numpy(), labels)
    assert data.split is not None and np.array_equal(data.split.numpy(), split)
    loaded_ids = load_bundle_ids(path)
    assert loaded_ids is not None and list(loaded_ids) == ids
    meta = read_bundle_meta(path)
    assert meta.modalities == ["audio", "visual", "text"] and meta.class_names == ["NEU", "HAP", "SAD"]


def test_views_order_and_load_dataset(tmp_path: Path) -> None:
    path = _save(tmp_path / "b")
    spec = f"bundle:{path}"
    assert dataset_modalities(spec) == ["audio", "visual", "text"]
    assert dataset_modalities(spec, ["text", "audio"]) == ["text", "audio"]
    data = load_dataset(spec, ["text", "audio"])
    assert data.modality_names == ["text", "audio"]
    with pytest.raises(ValueError, match="unknown modality 'depth'"):
        dataset_modalities(spec, ["depth", "audio"])
    with pytest.raises(ValueError, match="unknown modality 'depth'"):
        load_dataset(spec, ["depth", "audio"])
    with pytest.raises(ValueError, match="bundle:PATH"):
        load_dataset("bundle:")
    with pytest.raises(ValueError, match=r"valid datasets: .*bundle:PATH"):
        load_dataset("nosuchdata")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's memory maps (Linux)")
def test_folder_loads_memory_mapped(tmp_path: Path) -> None:
    path = _save(tmp_path / "b")
    data = load_bundle(path)
    x = data.modalities["audio"]
    # The tensor's storage lies inside a mapping of the file: no copy was made.
    ptr = x.data_ptr()
    maps = Path("/proc/self/maps").read_text().splitlines()
    mapped = [line for line in maps if line.endswith(str(path / "audio.npy"))]
    assert any(int(a, 16) <= ptr < int(b, 16) for a, b in (line.split()[0].split("-") for line in mapped))
    # Copy-on-write: changing the loaded tensor never touches the file.
    x[0] += 1.0
    assert np.array_equal(np.load(path / "audio.npy"), _arrays()["audio"])


def test_other_dtypes_are_converted(tmp_path: Path) -> None:
    arrays = {k: (v * 10).astype(np.int16) for k, v in _arrays().items()}
    data = load_bundle(_save(tmp_path / "b.npz", modalities=arrays))
    assert data.modalities["audio"].dtype == torch.float32
    assert np.array_equal(data.modalities["audio"].numpy(), arrays["audio"].astype(np.float32))


def _write_folder(tmp_path: Path) -> Path:
    return _save(tmp_path / "b")


def _meta(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


def test_mismatched_lengths(tmp_path: Path) -> None:
    path = _write_folder(tmp_path)
    np.save(path / "visual.npy", _arrays(n=11)["visual"])
    with pytest.raises(ValueError, match=r"modality 'visual' has 11 samples but labels have 12"):
        load_bundle(path)


def test_nan(tmp_path: Path) -> None:
    path = _write_folder(tmp_path)
    x = _arrays()["text"]
    x[7, 2, 3] = np.nan
    np.save(path / "text.npy", x)
    with pytest.raises(ValueError, match=r"bundle .*modality 'text' has a non-finite value .* in sample 7"):
        load_bundle(path)


def test_labels_out_of_range(tmp_path: Path) -> None:
    path = _write_folder(tmp_path)
    labels = np.arange(12) % 3
    labels[5] = 3
    np.save(path / "labels.npy", labels)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\) \(3 classes\); labels\[5\] = 3"):
        load_bundle(path)


def test_float_labels(tmp_path: Path) -> None:
    path = _write_folder(tmp_path)
    np.save(path / "labels.npy", (np.arange(12) % 3).astype(np.float32))
    with pytest.raises(BundleError, match=r"labels.npy: dtype float32; expected integers"):
        load_bundle(path)


def test_missing_modality_array(tmp_path: Path) -> None:
    path = _write_folder(tmp_path)
    (path / "visual.npy").unlink()
    with pytest.raises(BundleError, match=r"modality 'visual' is listed in the metadata but has no array .*visual.npy"):
        load_bundle(path)


def test_missing_labels(tmp_path: Path) -> None:
    path = _write_folder(tmp_path)
    (path / "labels.npy").unlink()
    with pytest.raises(BundleError, match=r"no labels array"):
        load_bundle(path)


def test_unlisted_array(tmp_path: Path) -> None:
    path = _write_folder(tmp_path)
    np.save(path / "depth.npy", _arrays()["visual"])
    with pytest.raises(BundleError, match=r"array 'depth' is not a modality listed in the metadata"):
        load_bundle(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: "{not json", r"meta.json: metadata is not valid JSON"),
        (lambda m: [1, 2], r"metadata must be a JSON object, got list"),
        (lambda m: {**m, "format": "other"}, r"field 'format' is 'other'; expected 'dus_gym.bundle'"),
        (lambda m: {**m, "version": 9}, r"field 'version' is 9; this dus_gym reads version 1"),
        (lambda m: {**m, "modalities": "audio"}, r"field 'modalities' must be a list of strings, got 'audio'"),
        (lambda m: {k: v for k, v in m.items() if k != "class_names"}, r"field 'class_names' must be a list"),
        (lambda m: {**m, "modalities": ["audio"]}, r"lists 1 modalities \['audio'\]; expected at least two"),
        (lambda m: {**m, "modalities": ["audio", "audio"]}, r"lists modality 'audio' twice"),
        (lambda m: {**m, "modalities": ["audio", "labels"]}, r"modality name 'labels' is reserved"),
        (lambda m: {**m, "modalities": ["audio", "../x"]}, r"modality name '../x' is not usable as a file name"),
    ],
    ids=["syntax", "not-object", "format", "version", "modalities-type", "no-classes", "one-modality",
         "duplicate", "reserved", "bad-name"],
)
def test_wrong_json(tmp_path: Path, edit, message: str) -> None:
    path = _write_folder(tmp_path)
    new = edit(_meta(path))
    (path / "meta.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(BundleError, match=message):
        load_bundle(path)
    # The env sizes its spaces from the metadata alone: the same refusal there.
    with pytest.raises(BundleError, match=message):
        dataset_modalities(f"bundle:{path}")


def test_missing_json_and_missing_path(tmp_path: Path) -> None:
    path = _write_folder(tmp_path)
    (path / "meta.json").unlink()
    with pytest.raises(BundleError, match=r"no meta.json"):
        load_bundle(path)
    with pytest.raises(BundleError, match=r"does not exist"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(BundleError, match=r"neither a folder nor a .npz"):
        load_bundle(tmp_path / "x.txt")


def test_npz_defects(tmp_path: Path) -> None:
    arrays = _arrays()
    np.savez(tmp_path / "nometa.npz", allow_pickle=False, labels=np.zeros(12, int), **arrays)
    with pytest.raises(BundleError, match=r"no 'meta' array"):
        load_bundle(tmp_path / "nometa.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match=r"not a readable .npz"):
        load_bundle(tmp_path / "broken.npz")


def test_bad_ids_split_and_dtype(tmp_path: Path) -> None:
    path = _write_folder(tmp_path)
    ids = np.array([f"c{i}" for i in range(12)])
    ids[9] = "c2"
    np.save(path / "ids.npy", ids)
    with pytest.raises(BundleError, match=r"id 'c2' occurs 2 times \(first at index 2\)"):
        load_bundle(path)
    np.save(path / "ids.npy", np.array([f"c{i}" for i in range(12)]))
    split = np.zeros(12, int)
    split[4] = 5
    np.save(path / "split.npy", split)
    with pytest.raises(ValueError, match=r"split values must be 0, 1 or 2; split\[4\] = 5"):
        load_bundle(path)
    (path / "split.npy").unlink()
    np.save(path / "text.npy", np.full((12, 5, 7), "x"))
    with pytest.raises(BundleError, match=r"text.npy: dtype <U1; expected a real numeric array"):
        load_bundle(path)


def test_save_refuses_what_load_would(tmp_path: Path) -> None:
    bad = _arrays()
    bad["visual"] = bad["visual"][:10]
    with pytest.raises(ValueError, match=r"save_bundle.*modality 'visual' has 10 samples"):
        _save(tmp_path / "b", modalities=bad)
    assert not (tmp_path / "b").exists()
    _save(tmp_path / "c")
    with pytest.raises(BundleError, match=r"exists and is not an empty folder"):
        _save(tmp_path / "c")
