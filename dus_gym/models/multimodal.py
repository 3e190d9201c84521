"""The multimodal model: one encoder per modality, linear heads, late fusion."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dus_gym.models.encoders import make_encoder

__all__ = ["MultimodalModel", "build_model", "init_parameters"]


class MultimodalModel(nn.Module):
    """Encoders ``phi_j`` and heads ``h_j`` (or one shared head ``h``).

    Branch logits of modality j: ``h_j(phi_j(x_j))``, shape ``(N, num_classes)``.
    With per-modality heads, summing branch logits is late fusion, the same as
    one linear layer on the concatenated features (docs/method.md section 5).
    """

    def __init__(
        self, encoders: Sequence[nn.Module], feature_dim: int, num_classes: int, shared_head: bool = False
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.shared_head = shared_head
        n_heads = 1 if shared_head else len(encoders)
        self.heads = nn.ModuleList(nn.Linear(feature_dim, num_classes) for _ in range(n_heads))

    @property
    def num_modalities(self) -> int:
        return len(self.encoders)

    def head(self, j: int) -> nn.Module:
        return self.heads[0 if self.shared_head else j]

    def features(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """``phi_j(x)``: ``(N, ...) -> (N, feature_dim)``."""
        return self.encoders[j](x)

    def branch_logits(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """``h_j(phi_j(x))``: ``(N, ...) -> (N, num_classes)``."""
        return self.head(j)(self.encoders[j](x))


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Initialise every parameter as PyTorch's defaults do, but from ``generator``.

    PyTorch's own ``reset_parameters`` draws from the global RNG; taking an
    explicit generator keeps runs reproducible without seeding global state.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, (nn.GRU, nn.LSTM, nn.RNN)):
            bound = 1 / math.sqrt(m.hidden_size)
            for p in m.parameters(recurse=False):
                nn.init.uniform_(p, -bound, bound, generator=generator)
        elif isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
            m.reset_parameters()  # deterministic: ones and zeros
        elif any(True for _ in m.parameters(recurse=False)):
            raise TypeError(f"init_parameters: no generator-aware initialisation for {type(m).__name__}")


def build_model(
    sample_shapes: Sequence[tuple[int, ...]],
    num_classes: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    feature_dim: int = 64,
    shared_head: bool = False,
    encoders: Sequence[str] | None = None,
) -> MultimodalModel:
    """Build a :class:`MultimodalModel` initialised from ``generator`` (a CPU generator).

    Args:
        sample_shapes: per-modality sample shape, without the batch axis.
        encoders: per-modality encoder kind (``"auto"``, ``"mlp"``, ``"cnn"``,
            ``"resnet18"``, ``"gru"``); default picks by shape.
    """
    kinds = list(encoders) if encoders is not None else ["auto"] * len(sample_shapes)
    if len(kinds) != len(sample_shapes):
        raise ValueError(f"encoders: expected one per modality ({len(sample_shapes)}), got {kinds}")
    # Built on the meta device, so construction consumes no global randomness.
    with torch.device("meta"):
        model = MultimodalModel(
            [make_encoder(tuple(s), feature_dim, k) for s, k in zip(sample_shapes, kinds)],
            feature_dim, num_classes, shared_head,
        )
    model.to_empty(device="cpu")
    init_parameters(model, generator)
    return model.to(device)
