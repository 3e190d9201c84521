"""OGM-GE (docs/method.md section 5): the coefficient, which modality is damped, the GE noise."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dus_gym.data import load_dataset
from dus_gym.methods import OGMGEMethod, TrainContext, make_method
from dus_gym.methods.ogm_ge import ogm_coefficients
from dus_gym.models import build_model
from dus_gym.run import RunConfig, TrainingRun

# float32 tanh is within 2 ulps (1.2e-7 near 0.76) of the float64 one and 1 - tanh rounds by at most half an
# ulp of the result (3e-8): 2.5e-7 absolute. pytest.approx's default (1e-6 relative) is only 1.4x the bound at
# 1 - tanh(1) = 0.24, too tight for a tanh kernel of another CPU.
TANH32 = 2.5e-7


def test_coefficients_match_hand_computation() -> None:
    # s = (0.8, 0.4): ratio_0 = 2 > 1, so modality 0 is damped by 1 - tanh(0.5 * 1).
    k = ogm_coefficients(torch.tensor([0.8, 0.4]), alpha=0.5)
    assert k.tolist() == pytest.approx([1 - math.tanh(0.5), 1.0], abs=TANH32)
    k = ogm_coefficients(torch.tensor([0.3, 0.6]), alpha=0.5)
    assert k.tolist() == pytest.approx([1.0, 1 - math.tanh(0.5)], abs=TANH32)
    # M = 3, each against the mean of the others: 0.9 / 0.45 = 2 (damped),
    # 0.3 / 0.75 = 0.4 (not), 0.6 / 0.6 = 1 (not: only a ratio above 1 is damped).
    k = ogm_coefficients(torch.tensor([0.9, 0.3, 0.6]), alpha=1.0)
    assert k.tolist() == pytest.approx([1 - math.tanh(1.0), 1.0, 1.0], abs=TANH32)
    assert ogm_coefficients(torch.tensor([0.9, 0.1]), alpha=0.0).tolist() == [1.0, 1.0]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        OGMGEMethod(alpha=-1.0)
    with pytest.raises(ValueError, match="alpah"):
        make_method("ogm_ge", alpah=0.1)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., M\) with M >= 2"):
        ogm_coefficients(torch.tensor([0.5]), 0.5)


def test_modulation_scales_only_the_dominant_encoder() -> None:
    model = build_model([(3,), (5,)], 4, torch.Generator().manual_seed(0), feature_dim=6)
    grads: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(len(grads)))
        grads[name] = p.grad.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = TrainContext(model, optimizer, [], torch.zeros(0), lambda n: torch.arange(n), torch.Generator(), 8)
    OGMGEMethod(alpha=0.5, noise=False).modulate_gradients(ctx, [], torch.tensor([0.2, 0.6]))
    k = 1 - math.tanh(0.5 * (0.6 / 0.2 - 1))
    for name, p in model.named_parameters():
        expected = grads[name] * k if name.startswith("encoders.1.") else grads[name]
        torch.testing.assert_close(p.grad, expected, msg=name)


def _run(method: str, **kwargs: object) -> TrainingRun:
    config = RunConfig(method=method, method_kwargs=kwargs, base_batch=8, device="cpu")
    return TrainingRun(load_dataset("synthetic:tiny", seed=0), config, 0, 0, 0)


def test_training_iteration_damps_the_dominant_modality_by_the_hand_coefficient() -> None:
    joint, ogm = _run("joint"), _run("ogm_ge", alpha=0.5, noise=False)
    counts = [5, 11]  # unequal: the scores are per-example means (see the module docstring)
    r_joint = joint.method.train_iteration(joint._ctx, counts)
    r_ogm = ogm.method.train_iteration(ogm._ctx, counts)
    s = r_ogm.score.tolist()
    assert s == r_joint.score.tolist()  # same draws, same forward pass
    dominant = 0 if s[0] > s[1] else 1
    k = 1 - math.tanh(0.5 * (s[dominant] / s[1 - dominant] - 1))
    assert 0 < k < 1
    assert isinstance(ogm.method, OGMGEMethod) and ogm.method.last_coefficients is not None
    assert ogm.method.last_coefficients.tolist() == pytest.approx([k if j == dominant else 1.0 for j in range(2)])
    for (name, p_joint), p_ogm in zip(joint.model.named_parameters(), ogm.model.parameters()):
        scale = k if name.startswith(f"encoders.{dominant}.") else 1.0
        assert p_joint.grad is not None, name
        torch.testing.assert_close(p_ogm.grad, p_joint.grad * scale, msg=name)


def test_ge_noise_matches_gradient_std_and_is_reproducible() -> None:
    runs = [_run("ogm_ge", alpha=0.5), _run("ogm_ge", alpha=0.5, noise=False)]
    for run in runs:
        run.method.train_iteration(run._ctx, [8, 8])
    noisy = dict(runs[0].model.named_parameters())["encoders.0.net.0.weight"].grad
    clean = dict(runs[1].model.named_parameters())["encoders.0.net.0.weight"].grad
    assert noisy is not None and clean is not None
    method = runs[1].method
    assert isinstance(method, OGMGEMethod) and method.last_coefficients is not None
    k = method.last_coefficients[0]  # noise is drawn after the draws, so both runs saw the same batch
    # The noise std is that of the unmodulated gradient (clean / k), per tensor.
    noise = noisy - clean
    assert noise.std().item() == pytest.approx((clean / k).std().item(), rel=0.15)
    again = _run("ogm_ge", alpha=0.5)
    again.method.train_iteration(again._ctx, [8, 8])
    repeated = dict(again.model.named_parameters())["encoders.0.net.0.weight"].grad
    assert repeated is not None and torch.equal(repeated, noisy)


def test_method_kwargs_reach_the_method_from_the_env_and_survive_json(tiny_env_kwargs) -> None:
    from dus_gym import DUSEnv

    env = DUSEnv(**tiny_env_kwargs, method="ogm_ge", method_kwargs={"alpha": 0.3, "noise": False})
    env.reset(seed=0)
    assert env.run is not None
    assert isinstance(env.run.method, OGMGEMethod)
    assert (env.run.method.alpha, env.run.method.noise) == (0.3, False)
    with pytest.raises(ValueError, match="alpah"):  # refused at construction, not at the first reset
        DUSEnv(**tiny_env_kwargs, method="ogm_ge", method_kwargs={"alpah": 0.3})
    config = env.config
    data = json.loads(json.dumps(config.to_dict()))  # pairs come back as lists
    assert RunConfig(**{**data, "split_fractions": tuple(data["split_fractions"])}) == config
