"""The shipped AV-MNIST: its build recipe on committed source files, loading, splits, the env on its id."""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from tolerances import float16_half_step, spectral_excess

import dus_gym
from dus_gym import make_policy
from dus_gym.data import dataset_modalities, load_dataset, read_bundle_meta
from dus_gym.data.avmnist import (
    AVMNIST_TEST_SPEAKER,
    AVMNIST_VAL_SPEAKER,
    avmnist_ids,
    avmnist_pca,
    avmnist_reconstruct,
    avmnist_speakers,
    load_avmnist,
)
from scripts.build_avdigits import N_FFT, SPEAKERS, spectrogram
from scripts.build_avmnist import KEPT_VARIANCE, fit_pca, pixels, project, read_idx

DATA = Path(__file__).parent / "data"
WAVS = sorted((DATA / "fsdd").glob("*.wav"))
MNIST = DATA / "mnist_t10k"  # MNIST test-set images and labels of the committed wavs' pairs, as idx files
BUILTIN = Path(dus_gym.__file__).parent / "data" / "builtin" / "avmnist.npz"
F64_EPS = float(np.finfo(np.float64).eps)


def _by_recording() -> dict[str, int]:
    """Row of each pair in the shipped file, by its recording's file stem."""
    return {i.split("+")[0]: k for k, i in enumerate(avmnist_ids())}


def test_shipped_avmnist_shapes_split_and_pairing() -> None:
    data = load_dataset("avmnist")
    k = len(avmnist_pca()[1])
    assert data.shapes() == {"audio": (1, 40, 32), "image": (k,)}
    assert k == 4
    assert np.bincount(data.labels.numpy()).tolist() == [300] * 10
    assert data.split is not None and torch.bincount(data.split).tolist() == [2000, 500, 500]
    assert all(torch.isfinite(x).all() for x in data.modalities.values())
    ids = avmnist_ids()
    recordings = [i.split("+mnist-t10k:")[0] for i in ids]
    images = [int(i.split("+mnist-t10k:")[1]) for i in ids]
    # Every FSDD recording once (6 speakers x 10 digits x 50), each MNIST test image at most once.
    assert sorted(recordings) == sorted(f"{c}_{s}_{n}" for c in range(10) for s in SPEAKERS for n in range(50))
    assert len(set(images)) == 3000 and 0 <= min(images) and max(images) < 10_000
    assert all(int(r.split("_")[0]) == y for r, y in zip(recordings, data.labels.tolist()))  # paired by class
    assert BUILTIN.stat().st_size <= 10_000_000


def test_validation_and_test_are_each_one_speaker_never_heard_in_training() -> None:
    split = load_avmnist().split
    assert split is not None
    speakers, split_np = avmnist_speakers(), split.numpy()
    assert set(speakers[split_np == 2]) == {AVMNIST_TEST_SPEAKER}
    assert set(speakers[split_np == 1]) == {AVMNIST_VAL_SPEAKER}
    assert set(speakers[split_np == 0]) == set(SPEAKERS) - {AVMNIST_TEST_SPEAKER, AVMNIST_VAL_SPEAKER}


def test_views_pick_and_order_the_modalities() -> None:
    assert load_dataset("avmnist", views=["image", "audio"]).modality_names == ["image", "audio"]
    assert dataset_modalities("avmnist") == ["audio", "image"]
    with pytest.raises(ValueError, match=r"avmnist: unknown modality 'video'; valid: \['audio', 'image'\]"):
        load_dataset("avmnist", views=["audio", "video"])
    with pytest.raises(ValueError, match="avmnist takes no options"):
        load_dataset("avmnist", shortcut_rho=0.5)


def test_shipped_spectrograms_are_the_recipe_applied_to_the_committed_wavs() -> None:
    # All 3000 recordings are in the set, so the 70 committed ones are; the audio recipe is avdigits'
    # (tests/test_avdigits.py shows the tolerance still catches a change of recipe).
    rows, audio = _by_recording(), load_avmnist().modalities["audio"].numpy()
    assert len(WAVS) == 70
    for wav in WAVS:
        ref = audio[rows[wav.stem]]
        assert spectral_excess(spectrogram(wav)[0], ref[0], band_axis=0, n_fft=N_FFT, stored_float16=True) <= 1


def test_shipped_images_are_the_committed_mnist_images_projected() -> None:
    # tests/data/mnist_t10k: the MNIST test images (and labels) paired with the committed wavs, in the
    # wavs' sorted order, with their t10k indices.
    images, labels = read_idx(MNIST / "images-idx3-ubyte.gz", 3), read_idx(MNIST / "labels-idx1-ubyte.gz", 1)
    indices = [int(v) for v in (MNIST / "indices.txt").read_text().split()]
    assert images.shape == (70, 28, 28) and len(labels) == len(indices) == 70
    rows, data, ids = _by_recording(), load_avmnist(), avmnist_ids()
    ref = data.modalities["image"].numpy().astype(np.float64)
    mean, comps = avmnist_pca()
    got = (pixels(images) - mean) @ comps.T  # float64, before the float16 rounding
    for k, wav in enumerate(WAVS):
        row = rows[wav.stem]
        assert ids[row] == f"{wav.stem}+mnist-t10k:{indices[k]}"
        assert int(labels[k]) == int(data.labels[row]) == int(wav.stem.split("_")[0])
        # float64 dot products of 784 terms of size <= 1 (another machine sums in another order), then
        # the float16 rounding of the shipped value.
        tol = float16_half_step(ref[row]) + 784 * 2 * F64_EPS
        assert np.all(np.abs(got[k] - ref[row]) <= tol), (wav.stem, got[k], ref[row])
    np.testing.assert_array_equal(project(images, mean, comps), ref[[rows[w.stem] for w in WAVS]].astype(np.float16))


def test_the_pca_was_fitted_on_the_training_images_and_keeps_a_quarter_of_their_variance() -> None:
    mean, comps = avmnist_pca()
    assert mean.shape == (784,) and comps.shape == (4, 784)
    np.testing.assert_allclose(comps @ comps.T, np.eye(4), atol=1e-12)  # orthonormal
    ratio = read_bundle_meta(BUILTIN).extra["pca"]["variance_ratio"]
    assert sum(ratio[:-1]) < KEPT_VARIANCE <= sum(ratio)  # the fewest components reaching 25%
    data = load_avmnist()
    assert data.split is not None
    train = data.modalities["image"][data.split == 0].double().numpy()
    held = data.modalities["image"][data.split == 2].double().numpy()
    # PCA's coefficients on the data it was fitted on have zero mean, variances in decreasing order and no
    # correlation between components; the test images' do not need to. Up to the float16 rounding:
    # measured train |mean| <= 1.4e-5, |correlation| <= 5.8e-6; test |mean| up to 0.056, |correlation| up to 0.067
    # (validation: 0.12, 0.083).
    assert np.abs(train.mean(axis=0)).max() < 0.01 < np.abs(held.mean(axis=0)).max()
    var = train.var(axis=0)
    assert np.all(np.diff(var) < 0)
    corr = np.corrcoef(train.T) - np.eye(4)
    assert np.abs(corr).max() < 0.01 < np.abs(np.corrcoef(held.T) - np.eye(4)).max()
    # Each component's variance over the training images, as a fraction of the total, is the recorded ratio.
    assert np.allclose(var / var.sum() * sum(ratio), ratio, rtol=1e-2)


def test_reconstruction_is_closer_to_the_original_images_than_their_mean() -> None:
    images = pixels(read_idx(MNIST / "images-idx3-ubyte.gz", 3))
    rows = _by_recording()
    coeffs = load_avmnist().modalities["image"][[rows[w.stem] for w in WAVS]]
    recon = avmnist_reconstruct(coeffs).reshape(70, 784)
    assert recon.shape == (70, 784) and recon.dtype == np.float32
    mean = avmnist_pca()[0]
    err, base = ((recon - images) ** 2).sum(axis=1), ((mean - images) ** 2).sum(axis=1)
    assert np.all(err < base)
    with pytest.raises(ValueError, match=r"coefficients of shape \(3, 5\); expected \(N, 4\)"):
        avmnist_reconstruct(np.zeros((3, 5)))


def test_fit_pca_keeps_the_fewest_components_reaching_the_fraction_with_fixed_signs() -> None:
    rng = np.random.default_rng(0)
    # Variances 16, 4, 1, ... along the axes: ratios 16/21.3, 4/21.3, ...
    scales = np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    x = rng.standard_normal((4000, 5)) * scales
    mean, comps, ratio = fit_pca(x, kept=0.9)
    assert comps.shape == (2, 5) and np.all(np.abs(comps).max(axis=1) == comps.max(axis=1))
    np.testing.assert_allclose(np.abs(comps), np.eye(5)[:2], atol=0.05)
    assert ratio.sum() >= 0.9 > ratio[0]
    mean2, comps2, _ = fit_pca(1 - x, kept=0.9)  # a mirrored set: the same components, with the same signs
    np.testing.assert_allclose(comps2, comps, atol=1e-12)
    np.testing.assert_allclose(mean2, 1 - mean, atol=1e-12)


def _idx_bytes(magic: int, shape: tuple[int, ...]) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in shape) + bytes(int(np.prod(shape)))


def test_read_idx_refuses_other_bytes_naming_what_it_found(tmp_path: Path) -> None:
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = _idx_bytes(2049, (3,))
    labels.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(labels, 1, hashlib.md5(raw).hexdigest()), [0, 0, 0])
    with pytest.raises(ValueError, match=rf"decompressed MD5 {hashlib.md5(raw).hexdigest()} \(11 bytes\); "
                                         "expected 27ae3e4e09519cfbb04c329615203637"):
        read_idx(labels, 1, "27ae3e4e09519cfbb04c329615203637")
    with pytest.raises(ValueError, match="idx magic number 2049; expected 2051"):
        read_idx(labels, 3)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(2051, (2, 28, 28))[:-1])
    with pytest.raises(ValueError, match=r"1567 data bytes; the header's shape \(2, 28, 28\) needs 1568"):
        read_idx(short, 3)


def test_the_id_passes_both_env_checkers_and_plays_an_episode() -> None:
    env = gym.make("DUS-AVMNIST-v0", n_steps=3, iterations_per_step=4, base_batch=16, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)
    policy = make_policy("dus_h", env)
    obs, info = env.reset(seed=0)
    steps, done = 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy.predict(obs)[0])
        assert np.isfinite(float(reward)) and env.observation_space.contains(obs)
        steps, done = steps + 1, terminated or truncated
    assert steps == 3
    test = info["test"]
    assert set(test["branch_accuracy"]) == {"audio", "image"}
    assert 0.0 <= test["accuracy"] <= 1.0
    json.dumps(test)  # a plain record
