"""The default encoders: shapes, one-example batches, the choice by shape, and that they learn real spectrograms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dus_gym.data import load_dataset
from dus_gym.models import init_parameters, make_encoder
from dus_gym.models.encoders import CONV_STRIDE_FROM, ConvEncoder, GRUEncoder, MLPEncoder
from dus_gym.run import RunConfig


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 15), (1, 40, 32), (3, 64, 48), (2, 3, 5), (6, 20, 24)])
def test_the_small_cnn_takes_any_image_size_and_a_batch_of_one(shape: tuple[int, ...]) -> None:
    enc = make_encoder(shape, feature_dim=10)
    assert isinstance(enc, ConvEncoder)
    enc.train()
    # GroupNorm, not BatchNorm: under DUS a modality's batch can be a single example.
    one = enc(torch.randn(1, *shape))
    assert one.shape == (1, 10) and torch.isfinite(one).all()
    assert enc(torch.randn(5, *shape)).shape == (5, 10)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in enc.modules())


def test_large_inputs_get_a_strided_narrower_first_layer() -> None:
    def first(shape: tuple[int, ...]) -> nn.Conv2d:
        enc = make_encoder(shape)
        assert isinstance(enc, ConvEncoder)
        conv = enc.net[0]
        assert isinstance(conv, nn.Conv2d)
        return conv

    assert first((1, 40, 32)).stride == (2, 2) and first((1, 40, 32)).out_channels == 16
    assert first((1, CONV_STRIDE_FROM - 1, 64)).stride == (1, 1) and first((1, 31, 64)).out_channels == 32
    assert first((1, 8, 8)).stride == (1, 1)
    assert any(isinstance(m, nn.AdaptiveMaxPool2d) for m in make_encoder((1, 8, 8)).modules())


def test_kinds_by_shape() -> None:
    assert isinstance(make_encoder((47,)), MLPEncoder)
    assert isinstance(make_encoder((32, 40)), GRUEncoder)
    gru = make_encoder((32, 40), feature_dim=7)
    assert gru(torch.randn(3, 32, 40)).shape == (3, 7)


def _fit(shape_of: str, iterations: int, seed: int = 0) -> float:
    """Training accuracy of the default encoder + a linear head on 400 avdigits audio training pairs,
    with the run's optimiser settings and its per-channel (image) or per-feature (sequence) standardisation."""
    data = load_dataset("avdigits")
    assert data.split is not None
    train = torch.cat([torch.nonzero((data.split == 0) & (data.labels == c)).flatten()[:40] for c in range(10)])
    x, y = data.modalities["audio"][train], data.labels[train]
    if shape_of == "sequence":
        x = x[:, 0].transpose(1, 2)  # (N, T, F), as the converter's --audio-layout sequence
    dims = [0, 2, 3] if x.ndim == 4 else [0, 1]
    x = (x - x.mean(dims, keepdim=True)) / x.std(dims, keepdim=True)
    cfg = RunConfig()
    model = nn.Sequential(make_encoder(tuple(x.shape[1:])), nn.Linear(cfg.feature_dim, 10))
    init_parameters(model, torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    draws = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(iterations):
            idx = torch.randint(len(y), (cfg.base_batch,), generator=draws)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())
    finally:
        torch.set_num_threads(threads)


def test_the_default_cnn_fits_real_spectrograms() -> None:
    # The earlier CNN (global average pooling after three layers) stayed near 20% on these, even after
    # 30 epochs of the whole training split (docs/benchmarks.md, "Encoders").
    assert _fit("image", 150) >= 0.9


def test_the_default_gru_fits_real_spectrograms_read_as_sequences() -> None:
    # The earlier GRU read its last state, after the silence that pads each word to 1 s: about 18%.
    assert _fit("sequence", 150) >= 0.8


def test_the_gru_reads_each_sequence_standardised_over_its_own_time_axis() -> None:
    # What is constant within one sequence (a speaker's level per mel band) does not reach the GRU.
    gru = make_encoder((20, 6))
    init_parameters(gru, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 20, 6, generator=g)
    scale, shift = torch.rand(4, 1, 6, generator=g) + 0.5, torch.randn(4, 1, 6, generator=g) * 3
    torch.testing.assert_close(gru(x * scale + shift), gru(x), rtol=1e-3, atol=1e-3)  # up to EPS
    assert not torch.allclose(gru(x), gru(x.flip(1)))  # the order in time still counts
    # One frame, or a feature constant in time: finite features, not NaN from a zero variance.
    assert torch.isfinite(gru(torch.randn(2, 1, 6))).all()
    assert torch.isfinite(gru(torch.ones(2, 5, 6))).all()
