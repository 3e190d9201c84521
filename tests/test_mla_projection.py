"""MLA's head-gradient projection: an update on one modality keeps the shared
head's response to the other modality's features."""

from __future__ import annotations

import pytest
import torch

from dus_gym.data import load_dataset
from dus_gym.methods import MLAMethod, TrainContext
from dus_gym.run import RunConfig, TrainingRun


def response_change(projection: bool) -> tuple[float, float]:
    """One MLA iteration (modality 0, then 1) with fixed batches and plain SGD.

    Returns how much modality 1's step changed the head's logits on the
    features modality 0 had just trained on, and how much it changed the
    head's weights (both max absolute differences).
    """
    config = RunConfig(
        method="mla", method_kwargs={"projection": projection, "projection_alpha": 1e-4},
        momentum=0.0, weight_decay=0.0, base_batch=8, device="cpu",
    )
    run = TrainingRun(load_dataset("synthetic:tiny", seed=0), config)
    model, head = run.model, run.model.heads[0]
    assert isinstance(head, torch.nn.Linear)  # the shared head (ModuleList indexing is typed Module)
    batches = [run.splits.train[:8], run.splits.train[8:16]]
    seen: dict[str, torch.Tensor] = {}

    def draw(n: int) -> torch.Tensor:
        # Called as each modality's turn begins: the second call comes after modality 0's step.
        with torch.no_grad():
            if "features" not in seen:
                seen["features"] = model.features(0, run.inputs[0][batches[0]])
            else:
                seen["before"] = head(seen["features"])
                seen["weight"] = head.weight.detach().clone()
        return batches[len(seen) // 2]

    ctx = TrainContext(model, run.optimizer, run.inputs, run.labels, draw, run.generator, 8)
    run.method.train_iteration(ctx, [8, 8])
    with torch.no_grad():
        after = head(seen["features"])
    return (after - seen["before"]).abs().max().item(), (head.weight - seen["weight"]).abs().max().item()


def test_projection_preserves_the_head_response_to_the_earlier_modality() -> None:
    change_on, weight_on = response_change(projection=True)
    change_off, weight_off = response_change(projection=False)
    assert change_off > 1e-3  # without projection modality 1's step moves modality 0's logits
    assert change_on < 1e-3 * change_off
    assert weight_on > 0.1 * weight_off  # the head still learns from modality 1


def test_projector_shrinks_recorded_directions_only() -> None:
    method = MLAMethod(projection=True, projection_alpha=1e-4)
    assert method.projector(0) is None  # nothing seen yet: no projection
    feats = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    method._record_features(0, feats)
    assert method.projector(0) is None  # a modality does not protect against itself
    P = method.projector(1)
    assert P is not None and P.shape == (8, 8)
    x = torch.cat([feats, torch.ones(5, 1)], dim=1)
    assert (x @ P).abs().max() < 1e-3 * x.abs().max()
    # A direction orthogonal to every recorded augmented feature passes unchanged.
    basis = torch.linalg.svd(x).Vh  # rows: 5 in the span of x, 3 orthogonal to it
    free = basis[-1]
    # A float32 solve of aI + R with a small a: condition number 3.75e4 here, so up to eps32 * cond = 4.5e-3
    # off (a wrong projector is off by O(1)).
    torch.testing.assert_close(P @ free, free, atol=5e-3, rtol=0)


def test_projection_is_off_by_default_and_options_are_checked() -> None:
    method = MLAMethod()
    assert not method.projection
    with pytest.raises(ValueError, match="projection_alpha"):
        MLAMethod(projection=True, projection_alpha=0.0)
    with pytest.raises(ValueError, match="projection_beta"):
        MLAMethod(projection=True, projection_beta=1.0)
