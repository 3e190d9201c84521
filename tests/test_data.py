from __future__ import annotations

import numpy as np
import pytest
import torch

from dus_gym.data import (
    DIGIT_VIEWS,
    PRESETS,
    MultimodalDataset,
    dataset_modalities,
    load_dataset,
    load_digits,
    make_synthetic,
)


def _arrays(n: int = 20) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=(n, 3)), "b": rng.normal(size=(n, 2, 4, 4))}, np.arange(n) % 4


def test_dataset_holds_tensors_and_names() -> None:
    mods, y = _arrays()
    data = MultimodalDataset(mods, y, class_names=list("wxyz"), name="toy")
    assert data.modality_names == ["a", "b"]
    assert data.num_classes == 4 and len(data) == 20
    assert data.modalities["b"].dtype == torch.float32 and data.labels.dtype == torch.int64
    assert data.shapes() == {"a": (3,), "b": (2, 4, 4)}
    assert torch.equal(data.modalities["a"], torch.as_tensor(mods["a"]).float())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m, y: ({"a": m["a"]}, y), "at least two modalities"),
        (lambda m, y: ({"a": m["a"][:-1], "b": m["b"]}, y), "modality 'a' has 19 samples but labels have 20"),
        (lambda m, y: ({**m, "a": np.where(np.arange(20)[:, None] == 7, np.nan, m["a"])}, y), "sample 7"),
        (lambda m, y: (m, np.where(np.arange(20) == 3, 9, y)), r"labels\[3\] = 9"),
        (lambda m, y: (m, np.where(np.arange(20) == 5, -1, y)), r"labels\[5\] = -1"),
        (lambda m, y: (m, y + 0.5), "must be integers"),
        (lambda m, y: ({**m, "a": m["a"][:, 0]}, y), "must have shape"),
    ],
    ids=["one-modality", "lengths", "nan", "label-high", "label-negative", "label-float", "rank"],
)
def test_dataset_rejects_bad_input_with_a_precise_message(change, message) -> None:
    mods, y = _arrays()
    mods, y = change(mods, y)
    with pytest.raises(ValueError, match=message):
        MultimodalDataset(mods, y, class_names=list("wxyz"))


def test_bad_split_assignment_is_refused() -> None:
    mods, y = _arrays()
    with pytest.raises(ValueError, match=r"split\[2\] = 3"):
        MultimodalDataset(mods, y, split=[0, 1, 3] + [0] * 17)


def test_stratified_splits_are_disjoint_balanced_and_seeded() -> None:
    data = load_digits()
    s = data.splits(0)
    all_idx = torch.cat([s.train, s.val, s.test])
    assert len(all_idx) == 2000 and len(torch.unique(all_idx)) == 2000
    assert (len(s.train), len(s.val), len(s.test)) == (1200, 400, 400)
    for part in (s.train, s.val, s.test):
        counts = torch.bincount(data.labels[part], minlength=10)
        assert counts.min() == counts.max()  # 200 per class split exactly
    again, other = data.splits(0), data.splits(1)
    assert torch.equal(again.val, s.val)
    assert not torch.equal(other.val, s.val)


def test_digits_views_and_image() -> None:
    data = load_digits(["pix_image", "zer", "mor"])
    assert data.shapes() == {"pix_image": (1, 16, 15), "zer": (47,), "mor": (6,)}
    flat = load_digits(["pix", "fou"])
    assert torch.equal(flat.modalities["pix"].reshape(-1, 1, 16, 15), data.modalities["pix_image"])
    assert flat.modalities["pix"].min() == 0 and flat.modalities["pix"].max() == 6
    assert torch.equal(torch.bincount(data.labels), torch.full((10,), 200))
    assert set(DIGIT_VIEWS) >= {"fou", "fac", "kar", "pix", "zer", "mor"}


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown view 'abc'.*'fou'"):
        load_digits(["pix", "abc"])
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*'digits'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match=r"unknown synthetic preset 'nope'.*'shortcut'"):
        load_dataset("synthetic:nope")
    with pytest.raises(ValueError, match="valid fields"):
        make_synthetic("tiny", colour=3)


def test_synthetic_is_seeded_and_splits_are_fixed() -> None:
    a, b, c = make_synthetic("tiny", seed=1), make_synthetic("tiny", seed=1), make_synthetic("tiny", seed=2)
    assert all(torch.equal(a.modalities[k], b.modalities[k]) for k in a.modalities)
    assert not torch.equal(a.modalities["a"], c.modalities["a"])
    cfg = PRESETS["tiny"]
    s = a.splits(0)
    assert (len(s.train), len(s.val), len(s.test)) == (cfg.n_train, cfg.n_val, cfg.n_test)
    assert torch.equal(s.val, a.splits(123).val)  # fixed by construction, not by the seed


def _shortcut_agreement(data: MultimodalDataset, idx: torch.Tensor, dim: int, codes: int) -> float:
    """Fraction of samples whose shortcut features point to their own class's mean shortcut code."""
    s = data.modalities["a"][:, -dim:]
    y = data.labels
    train = data.splits(0).train
    centroids = torch.stack([s[train][y[train] == c].mean(0) for c in range(codes)])
    pred = torch.cdist(s[idx], centroids).argmin(1)
    return float((pred == y[idx]).float().mean())


def test_shortcut_predicts_the_label_on_train_only() -> None:
    data = make_synthetic("shortcut", seed=0, n_train=500, n_val=500, n_test=100)
    s = data.splits(0)
    on_train = _shortcut_agreement(data, s.train, 16, 10)
    on_val = _shortcut_agreement(data, s.val, 16, 10)
    assert on_train > 0.9 and on_val < 0.25


def test_complementary_merges_class_pairs_in_the_first_modality() -> None:
    data = make_synthetic("complementary", seed=0, noise=0.0)
    a, y = data.modalities["a"], data.labels
    mean = lambda c: a[y == c].mean(0)  # noqa: E731
    assert torch.allclose(mean(0), mean(1)) and not torch.allclose(mean(6), mean(7))
    b = data.modalities["b"]
    assert not torch.allclose(b[y == 0].mean(0), b[y == 1].mean(0))


def test_dataset_modalities_match_loading() -> None:
    for name, views in [("digits", None), ("digits", ["fou", "mor"]), ("synthetic:memorization", None)]:
        assert dataset_modalities(name, views) == load_dataset(name, views).modality_names


def test_views_are_checked_alike_for_every_built_in_source() -> None:
    with pytest.raises(ValueError, match=r"digits: view names must be distinct, got \['pix', 'pix'\]"):
        load_dataset("digits", ["pix", "pix"])
    with pytest.raises(ValueError, match=r"avdigits: modality names must be distinct"):
        load_dataset("avdigits", ["audio", "audio"])
    with pytest.raises(ValueError, match=r"digits: unknown modality 'zer'; valid: \['pix', 'fou'\]"):
        load_dataset("digits", ["pix", "fou"]).select(["zer"])
    with pytest.raises(ValueError, match=r"modality names must be distinct"):
        load_dataset("digits", ["pix", "fou"]).select(["pix", "pix"])  # was one modality, silently
