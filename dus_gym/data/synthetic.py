"""Seeded synthetic multimodal families (docs/method.md section 7).

Every modality ``j`` of a sample of class ``y`` is ``signal[j] * code_j(y) +
noise * N(0, I)``, where the class codes are random unit vectors (one set per
modality, drawn from the seed). On top of that:

- **complementary**: the first ``2 * complementary`` classes are merged in
  pairs in modality 0 (classes ``2i`` and ``2i+1`` share a code), so only the
  other modalities separate them;
- **shortcut**: modality ``shortcut_modality`` (default 0) gets ``shortcut_dim`` extra features
  ``shortcut_scale * code_S(c) + shortcut_noise * N(0, I)``, where ``c = y``
  with probability ``shortcut_rho`` on the *training split only* and a random
  class elsewhere; a model that leans on it fails on the clean validation and
  test splits.

The splits are fixed by construction (train first, then val, then test), and
labels are balanced within each split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dus_gym.data.dataset import MultimodalDataset

__all__ = ["PRESETS", "SyntheticConfig", "make_synthetic", "resolve_config"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic generator. Dimensions are features per sample."""

    num_classes: int = 10
    """number of classes C >= 2"""
    dims: tuple[int, ...] = (64, 32)
    """signal dimension of each modality (two or more modalities)"""
    signal: tuple[float, ...] = (2.0, 2.0)
    """signal strength (norm of the class code) of each modality, >= 0"""
    noise: float = 1.0
    """standard deviation of the Gaussian noise on every feature"""
    names: tuple[str, ...] = ("a", "b")
    """modality names"""
    n_train: int = 2000
    n_val: int = 1000
    n_test: int = 1000
    complementary: int = 0
    """number of class pairs that modality 0 cannot tell apart (0 <= k <= C/2)"""
    shortcut_rho: float = 0.0
    """probability that the shortcut shows the true class, on the training split"""
    shortcut_modality: int = 0
    """the modality that carries the shortcut features"""
    shortcut_dim: int = 16
    shortcut_scale: float = 3.0
    shortcut_noise: float = 0.5

    def validate(self) -> None:
        m = len(self.dims)
        if m < 2:
            raise ValueError(f"SyntheticConfig.dims: need at least two modalities, got {self.dims}")
        for field in ("signal", "names"):
            if len(getattr(self, field)) != m:
                raise ValueError(
                    f"SyntheticConfig.{field} has {len(getattr(self, field))} entries, "
                    f"expected one per modality ({m}, from dims={self.dims})"
                )
        if self.num_classes < 2:
            raise ValueError(f"SyntheticConfig.num_classes must be >= 2, got {self.num_classes}")
        if not 0 <= self.complementary <= self.num_classes // 2:
            raise ValueError(
                f"SyntheticConfig.complementary must lie in [0, {self.num_classes // 2}], got {self.complementary}"
            )
        if not 0 <= self.shortcut_modality < m:
            raise ValueError(
                f"SyntheticConfig.shortcut_modality must index a modality (0 .. {m - 1}), got {self.shortcut_modality}"
            )
        if not 0.0 <= self.shortcut_rho <= 1.0:
            raise ValueError(f"SyntheticConfig.shortcut_rho must lie in [0, 1], got {self.shortcut_rho}")
        if min(self.n_train, self.n_val, self.n_test) < self.num_classes:
            raise ValueError(
                "SyntheticConfig: every split needs at least one sample per class, got "
                f"n_train={self.n_train}, n_val={self.n_val}, n_test={self.n_test}"
            )


# Calibrated so that the sampling decision matters (numbers in the README's
# "Instance families" section; docs/method.md section 7 for the prototype's).
PRESETS: dict[str, SyntheticConfig] = {
    # A is confident on the training split thanks to a shortcut; B is the
    # honest but weaker modality. Giving A fewer samples helps.
    "shortcut": SyntheticConfig(
        dims=(64, 32), signal=(2.0, 2.5), names=("a", "b"), shortcut_rho=0.95
    ),
    # Few samples; A is very high-dimensional and noisy (memorises, does not
    # generalise), B is low-dimensional and clean.
    "memorization": SyntheticConfig(
        dims=(2000, 8), signal=(3.0, 2.0), noise=1.0, names=("a", "b"),
        n_train=300, n_val=300, n_test=1000,
    ),
    # B carries information A lacks (A merges class pairs): uniform is best.
    "complementary": SyntheticConfig(
        dims=(64, 32), signal=(3.0, 1.5), names=("a", "b"), complementary=3
    ),
    # Both modalities strong and clean: every sampling policy reaches the same
    # accuracy, so a sampler that acts here only risks losing.
    "redundant": SyntheticConfig(dims=(64, 32), signal=(4.0, 4.0), names=("a", "b")),
    # Families where the best decision changes during the run (docs/agents.md, "When does learning
    # pay?"): on both, schedules that switch the ratio once or twice beat every constant ratio and
    # the rules by several points (benchmarks.ceiling), so a sampler that adapts has room to win.
    # A strong honest signal and a weaker training-only shortcut on A, a smaller training set: e.g.
    # B first, then A, beats uniform, gap and any constant ratio.
    "shortcut_switch": SyntheticConfig(
        dims=(64, 32), signal=(3.0, 2.0), names=("a", "b"), shortcut_rho=0.8, n_train=1000,
    ),
    # Memorization with a strong A (it alone beats B) in 1000 noisy dimensions: A is worth most of
    # the samples for a while, then it memorises.
    "memorization_switch": SyntheticConfig(
        dims=(1000, 8), signal=(5.0, 2.0), noise=1.0, names=("a", "b"), n_train=300, n_val=1000, n_test=1000,
    ),
    # The two families above made stronger and measurable (docs/agents.md, "When does learning pay?"):
    # with 2,000 validation samples a search (or an agent) reads a schedule's worth from validation
    # with half the noise of 1,000, and every rule and constant ratio sits 3-4 points below the
    # best schedule (chosen on validation, measured on test).
    # A stronger honest signal and shortcut on A, 800 training samples.
    "shortcut_timing": SyntheticConfig(
        dims=(64, 32), signal=(3.5, 2.0), names=("a", "b"), shortcut_rho=0.85, n_train=800, n_val=2000,
        n_test=2000,
    ),
    # memorization_switch with 3,000 validation and test samples.
    "memorization_timing": SyntheticConfig(
        dims=(1000, 8), signal=(5.0, 2.0), noise=1.0, names=("a", "b"), n_train=300, n_val=3000, n_test=3000,
    ),
    # Small and fast, for tests.
    "tiny": SyntheticConfig(
        num_classes=4, dims=(8, 6), signal=(3.0, 1.5), names=("a", "b"),
        n_train=96, n_val=48, n_test=48, shortcut_rho=0.9, shortcut_dim=4,
    ),
}


def _unit_codes(rng: np.random.Generator, num: int, dim: int) -> np.ndarray:
    codes = rng.standard_normal((num, dim))
    return codes / np.linalg.norm(codes, axis=1, keepdims=True)


def resolve_config(config: SyntheticConfig | str = "shortcut", **overrides: Any) -> SyntheticConfig:
    """The validated config of a preset name (or a config) with fields replaced by ``overrides``.

    Lists in ``overrides`` (from JSON or a command line) become tuples.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown synthetic preset {config!r}; valid presets: {sorted(PRESETS)}")
        config = PRESETS[config]
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    try:
        config = replace(config, **values)
    except TypeError as err:
        valid = list(SyntheticConfig.__dataclass_fields__)
        raise ValueError(f"synthetic config: {err}; valid fields: {valid}") from None
    config.validate()
    return config


def make_synthetic(
    config: SyntheticConfig | str = "shortcut", seed: int = 0, **overrides: Any
) -> MultimodalDataset:
    """Generate one instance of a synthetic family.

    Args:
        config: a :class:`SyntheticConfig` or a preset name from :data:`PRESETS`.
        seed: generator seed; the same seed gives the same arrays.
        overrides: fields of the config to replace (``shortcut_rho=0.8``).

    Returns:
        A :class:`MultimodalDataset` with a fixed train/val/test assignment.
    """
    config = resolve_config(config, **overrides)
    rng = np.random.default_rng(seed)
    C = config.num_classes
    sizes = (config.n_train, config.n_val, config.n_test)
    labels = np.concatenate([rng.permutation(np.arange(n) % C) for n in sizes])
    split = np.repeat(np.arange(3), sizes)
    n = len(labels)

    modalities: dict[str, np.ndarray] = {}
    for j, (name, dim, mu) in enumerate(zip(config.names, config.dims, config.signal)):
        codes = _unit_codes(rng, C, dim)
        if j == 0 and config.complementary:
            for i in range(config.complementary):
                codes[2 * i + 1] = codes[2 * i]
        x = mu * codes[labels] + config.noise * rng.standard_normal((n, dim))
        if j == config.shortcut_modality and config.shortcut_dim and config.shortcut_rho > 0:
            shortcut_codes = _unit_codes(rng, C, config.shortcut_dim)
            random_class = rng.integers(0, C, size=n)
            honest = (split == 0) & (rng.random(n) < config.shortcut_rho)
            c = np.where(honest, labels, random_class)
            s = config.shortcut_scale * shortcut_codes[c]
            s += config.shortcut_noise * rng.standard_normal((n, config.shortcut_dim))
            x = np.concatenate([x, s], axis=1)
        modalities[name] = x.astype(np.float32)
    return MultimodalDataset(
        modalities, labels, [str(c) for c in range(C)], name=f"synthetic(seed={seed})", split=split
    )
