"""Encoders phi_j, one per modality, chosen by the shape of its samples."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLPEncoder", "ConvEncoder", "GRUEncoder", "ResNet18Encoder", "CONV_STRIDE_FROM", "ENCODERS", "make_encoder"]


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

    Three 3x3 convolutions (widths ``w, 2w, 2w``; the last two with stride 2),
    each followed by GroupNorm and ReLU, then **adaptive max pooling to a
    ``grid x grid`` map** (default 4 x 4), flattened, and a linear layer.

    - The pooled map keeps *where* a pattern occurred, coarsely. The earlier
      version averaged everything to 1 x 1 after the third layer (global
      average pooling): on a ``(1, 40, 32)`` log-mel spectrogram the receptive
      field (15 x 15) is smaller than the frequency axis, the pooled features
      no longer say which band a pattern sat in, and the model could not even
      fit the spoken digits of ``avdigits`` (about 20% training accuracy).
      Neither GroupNorm, the learning rate, the momentum, the initialisation
      nor the standardisation was the cause (each changed alone, it stayed
      under 50%); a pooled grid alone fits it (99%). Measurements:
      docs/benchmarks.md, "Encoders".
    - Max rather than average over each cell: a word fills part of a
      fixed-length clip and silence the rest; the max keeps a region's
      strongest response instead of diluting it with the silence around it
      (``avdigits``' audio, each speaker held out in turn: 70% against 65%).
    - :func:`make_encoder` gives samples at least :data:`CONV_STRIDE_FROM`
      pixels high and wide a stride-2 first layer and ``width`` 16 (cost per
      example grows with the pixels: this keeps a 40 x 32 spectrogram about 9
      times cheaper than the earlier encoder, and it generalises better to an
      unheard speaker than the full-resolution width-32 network: 68% against
      47-51%), and
      smaller ones (8 x 8 or 16 x 15 digits) stride 1 and ``width`` 32, which
      they need.
    - GroupNorm rather than BatchNorm: a modality's batch can shrink to a single
      example under DUS, and batch statistics of one example are meaningless.
    """

    def __init__(
        self, in_channels: int, feature_dim: int = 64, width: int = 32, stem_stride: int = 1, grid: int = 4
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=stem_stride, padding=1), nn.GroupNorm(8, width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.ReLU(),
            nn.AdaptiveMaxPool2d(grid), nn.Flatten(),
            nn.Linear(2 * width * grid * grid, feature_dim), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


CONV_STRIDE_FROM = 32
"""Samples at least this many pixels high and wide get the small CNN with a stride-2 first layer and width 16."""


class GRUEncoder(nn.Module):
    """GRU over time for sequences: ``(N, T, D) -> (N, feature_dim)``.

    Each sequence is first standardised over its own time axis, per feature
    (zero mean, unit variance per sample: cepstral mean and variance
    normalisation, as speech front ends apply it per utterance), then read by
    the GRU, whose outputs are max-pooled over time.

    - The per-sequence standardisation removes what is constant within a
      clip (a speaker's voice, a channel's gain) and keeps how the sequence
      changes. Without it the GRU learned the training speakers and not the
      words: avdigits' audio as ``(32, 40)`` log-mel frames, tested on the
      unheard speaker, 41% against 54% for a logistic regression on the
      whole spectrogram; with it 76%, and 70.7% against 60.8% on average
      when each of the six speakers is held out in turn
      (``python -m benchmarks.encoders --speakers``). What it discards is
      each feature's level over the whole sequence; a task that needs that
      level should give it as a vector modality of its own.
    - The max over time, not the last hidden state: a sequence padded at
      its end (a spoken digit in a 1 s clip, about half of it silence) leaves
      the last state after the padding, and the GRU could not carry the word
      through it (18% training accuracy); the max keeps each unit's
      strongest response wherever it occurred (docs/benchmarks.md,
      "Encoders").
    """

    EPS = 1e-3
    """added to each sequence's per-feature variance; the run has already standardised every feature
    to unit variance over the training set, so this only guards constant features"""

    def __init__(self, in_dim: int, feature_dim: int = 64) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, feature_dim, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, correction=0)
        out, _ = self.gru((x - mean) * torch.rsqrt(var + self.EPS))
        return torch.relu(out.amax(dim=1))


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet's basic block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.GroupNorm(_groups(out_channels), out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _groups(channels: int) -> int:
    return min(32, channels // 4) if channels >= 8 else 1


class ResNet18Encoder(nn.Module):
    """ResNet-18 trained from scratch, as OGM-GE and MLA use for spectrograms and
    frames: ``(N, C, H, W) -> (N, feature_dim)``.

    The torchvision layout (7x7 stem with stride 2, max-pool, four stages of two
    basic blocks, widths ``w, 2w, 4w, 8w`` with ``w = width``, global average
    pooling) with a linear projection to ``feature_dim``. Frames of a clip are
    stacked along the channels (``C = k * 3``), so the stem fuses them early.
    Normalisation is GroupNorm instead of BatchNorm, for the reason given at
    :class:`ConvEncoder`: under DUS a modality's batch can be a single example.
    Inputs smaller than 32 x 32 work but are pooled to 1 x 1 early.
    """

    def __init__(self, in_channels: int, feature_dim: int = 64, width: int = 64) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.GroupNorm(_groups(width), width), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
        ]
        prev = width
        for stage, w in enumerate(widths):
            stride = 1 if stage == 0 else 2
            layers += [_BasicBlock(prev, w, stride), _BasicBlock(w, w, 1)]
            prev = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, feature_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


ENCODERS = {"mlp": 1, "gru": 2, "cnn": 3, "resnet18": 3}
"""Encoder names and the number of per-sample dimensions each accepts."""


def make_encoder(sample_shape: tuple[int, ...], feature_dim: int = 64, kind: str = "auto") -> nn.Module:
    """An encoder for samples of ``sample_shape`` (without the batch axis).

    ``kind="auto"`` picks by shape: ``(D,)`` -> MLP, ``(T, D)`` -> GRU,
    ``(C, H, W)`` -> the small CNN (with a stride-2 first layer and width 16
    when ``H`` and ``W`` are both at least :data:`CONV_STRIDE_FROM`, else
    stride 1 and width 32). ``"resnet18"`` (by name only) is the
    larger image encoder of OGM-GE and MLA. Naming a kind checks that it fits
    the shape.
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
    if kind == "resnet18":
        return ResNet18Encoder(sample_shape[0], feature_dim)
    if min(sample_shape[1:]) >= CONV_STRIDE_FROM:
        return ConvEncoder(sample_shape[0], feature_dim, width=16, stem_stride=2)
    return ConvEncoder(sample_shape[0], feature_dim)
