"""Encoders phi_j, one per modality, chosen by the shape of its samples."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLPEncoder", "ConvEncoder", "GRUEncoder", "ENCODERS", "make_encoder"]


class MLPEncoder(nn.Module):
    """Two-layer MLP for vectors: ``(N, D) -> (N, feature_dim)``."""

    def __init__(self, in_dim: int, feature_dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, feature_dim), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvEncoder(nn.Module):
    """Small CNN for images and spectrograms: ``(N, C, H, W) -> (N, feature_dim)``.

    GroupNorm rather than BatchNorm: a modality's batch can shrink to a single
    example under DUS, and batch statistics of one example are meaningless.
    """

    def __init__(self, in_channels: int, feature_dim: int = 64, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, feature_dim), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GRUEncoder(nn.Module):
    """GRU over time for sequences: ``(N, T, D) -> (N, feature_dim)`` (last hidden state)."""

    def __init__(self, in_dim: int, feature_dim: int = 64) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, feature_dim, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return torch.relu(h[-1])


ENCODERS = {"mlp": 1, "gru": 2, "cnn": 3}
"""Encoder names and the number of per-sample dimensions each accepts."""


def make_encoder(sample_shape: tuple[int, ...], feature_dim: int = 64, kind: str = "auto") -> nn.Module:
    """An encoder for samples of ``sample_shape`` (without the batch axis).

    ``kind="auto"`` picks by shape: ``(D,)`` -> MLP, ``(T, D)`` -> GRU,
    ``(C, H, W)`` -> CNN. Naming a kind checks that it fits the shape.
    """
    by_rank = {1: "mlp", 2: "gru", 3: "cnn"}
    if kind == "auto":
        if len(sample_shape) not in by_rank:
            raise ValueError(f"no encoder for samples of shape {sample_shape}; expected (D,), (T, D) or (C, H, W)")
        kind = by_rank[len(sample_shape)]
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; valid encoders: {['auto', *ENCODERS]}")
    if ENCODERS[kind] != len(sample_shape):
        raise ValueError(f"encoder {kind!r} expects samples with {ENCODERS[kind]} dims, got shape {sample_shape}")
    if kind == "mlp":
        return MLPEncoder(sample_shape[0], feature_dim)
    if kind == "gru":
        return GRUEncoder(sample_shape[1], feature_dim)
    return ConvEncoder(sample_shape[0], feature_dim)
