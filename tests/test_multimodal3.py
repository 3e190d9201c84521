"""Three modalities end to end: an NVGesture-style bundle (RGB frames, depth
frames, a flow sequence) in the env, both checkers, the heuristic, both
methods; the ResNet-18 encoder; host-resident data."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import unwrapped
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dus_gym  # noqa: F401  (registers DUS-v0)
from dus_gym.data import load_dataset, save_bundle
from dus_gym.envs import DUSEnv
from dus_gym.models import build_model
from dus_gym.models.encoders import ResNet18Encoder, make_encoder
from dus_gym.policies import dus_h_quantities, make_policy
from dus_gym.run import RunConfig, TrainingRun

SMALL: dict[str, Any] = {"n_steps": 2, "iterations_per_step": 2, "base_batch": 8, "device": "cpu"}


def _gesture_bundle(path: Path, n: int = 36, seed: int = 0) -> Path:
    """RGB (3x8x8), depth (1x8x8) and flow (6 steps x 4) of 3 classes; each
    modality carries the class at a different strength, as real ones do."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    rgb = rng.normal(size=(n, 3, 8, 8)).astype(np.float32)
    rgb[:, 0, :4, :4] += 2.0 * labels[:, None, None]
    depth = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    depth[:, 0, 4:, 4:] += 0.5 * labels[:, None, None]
    flow = rng.normal(size=(n, 6, 4)).astype(np.float32)
    flow[:, :, 0] += 1.0 * labels[:, None]
    return save_bundle(path, {"rgb": rgb, "depth": depth, "flow": flow}, labels, ["swipe", "push", "pinch"])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _gesture_bundle(tmp_path_factory.mktemp("gesture") / "nvgesture")


def test_env_on_three_modality_bundle_passes_both_checkers(bundle: Path) -> None:
    env = unwrapped(gym.make("DUS-v0", dataset=f"bundle:{bundle}", **SMALL))
    assert env.modalities == ["rgb", "depth", "flow"]
    assert env.observation_space.shape == (env.layout.size,)
    assert env.action_space.shape == (3,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env)
        sb3_check_env(env, warn=True)


def test_gym_make_bundle_episode(bundle: Path) -> None:
    env = gym.make("DUS-v0", dataset=f"bundle:{bundle}", max_episode_steps=2, **SMALL)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert len(info["quantities"]) == 3
    steps = 0
    truncated = terminated = False
    while not (truncated or terminated):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(float(reward))
        steps += 1
    assert steps == 2 and truncated
    assert set(info["test"]["branch_accuracy"]) == {"rgb", "depth", "flow"}


@pytest.mark.parametrize("method", ["joint", "mla"])
def test_dus_h_runs_each_method_on_three_modalities(bundle: Path, method: str) -> None:
    env = DUSEnv(
        dataset=f"bundle:{bundle}", method=method, run_config={"encoders": ("resnet18", "cnn", "gru")}, **SMALL
    )
    # A strong lam, so that the small score gaps of a 2-step run move the counts.
    policy = make_policy("dus_h:10", env)
    obs, _ = env.reset(seed=0)
    assert env.run is not None
    assert isinstance(env.run.model.encoders[0], ResNet18Encoder)
    scores = None
    for _ in range(2):
        action, _ = policy.predict(obs, deterministic=True)
        assert np.shape(action) == (3,)
        obs, reward, terminated, truncated, info = env.step(action)
        assert not terminated and np.isfinite(reward)
        assert sum(info["quantities"]) == 3 * SMALL["base_batch"]
        if scores is not None:
            # The heuristic read all three modalities' scores from the observation:
            # the leading one gets the fewest examples, the lagging one the most
            # (as the exact rule does; the discrete action levels round it).
            q = np.asarray(info["quantities"])
            assert np.argmax(scores) == np.argmin(q) and np.argmin(scores) == np.argmax(q)
            exact = dus_h_quantities(scores, SMALL["base_batch"], lam=10.0)
            assert np.abs(q - exact).max() <= 2
        scores = info["scores"]
    assert truncated and 0.0 <= info["test"]["accuracy"] <= 1.0


def test_resnet18_by_name_only_and_reproducible() -> None:
    assert type(make_encoder((3, 16, 16))).__name__ == "ConvEncoder"  # the small CNN stays the default
    enc = make_encoder((6, 20, 24), feature_dim=10, kind="resnet18")
    assert isinstance(enc, ResNet18Encoder)
    assert enc(torch.zeros(1, 6, 20, 24)).shape == (1, 10)  # one example: GroupNorm, no batch statistics
    with pytest.raises(ValueError, match=r"encoder 'resnet18' expects samples with 3 dims, got shape \(6, 4\)"):
        make_encoder((6, 4), kind="resnet18")
    shapes = [(3, 16, 16), (6, 4)]
    a = build_model(shapes, 3, torch.Generator().manual_seed(1), encoders=["resnet18", "gru"])
    b = build_model(shapes, 3, torch.Generator().manual_seed(1), encoders=["resnet18", "gru"])
    c = build_model(shapes, 3, torch.Generator().manual_seed(2), encoders=["resnet18", "gru"])
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    # ResNet-18 shape: 4 stages x 2 basic blocks, widths up to 512.
    assert sum(isinstance(m, torch.nn.Conv2d) for m in a.encoders[0].modules()) == 1 + 8 * 2 + 3


def test_host_resident_data_matches_device_cached(bundle: Path) -> None:
    data = load_dataset(f"bundle:{bundle}")
    config = RunConfig(method="joint", base_batch=8, device="cpu")
    cached = TrainingRun(data, config, 0, 0, 0)
    hosted = TrainingRun(data, RunConfig(**{**config.to_dict(), "data_placement": "host"}), 0, 0, 0)
    assert cached.data_placement == "device" and hosted.data_placement == "host"
    idx = cached.splits.test[:5]
    for x, h in zip(cached.inputs, hosted.inputs):
        # Same standardisation (statistics accumulated in float64 on the host path).
        assert torch.allclose(x[idx], h[idx], atol=1e-5)
    for run in (cached, hosted):
        run.train([8, 4, 12], 3)
    a, b = cached.evaluate("val"), hosted.evaluate("val")
    assert a.accuracy == pytest.approx(b.accuracy, abs=1e-6)
    assert np.allclose(a.branch_loss, b.branch_loss, atol=1e-4)
    with pytest.raises(ValueError, match=r"unknown data_placement 'disk'; valid: \['auto', 'device', 'host'\]"):
        TrainingRun(data, RunConfig(device="cpu", data_placement="disk"))
