"""Instance sets: which training runs an agent trains on, and which it is judged on.

An *instance* is everything that makes one episode's training run what it is,
except the policy: the data split seed, the model initialisation seed, the
synthetic generator seed and, for an instance *family*, overrides of the
synthetic configuration (``{"shortcut_rho": 0.9, "signal": [2.0, 2.5]}``).
The batch-order seed (``sample_seed``) is not part of it: the env draws it at
every reset.

Training and evaluation never share an instance, by construction: every seed
of a ``train`` set lies in ``[0, 2**30)`` and every seed of an ``eval`` set in
``[2**30, 2**31 - 1)``, so no split, initialisation or data seed of one set
can appear in the other. :func:`check_disjoint` verifies it for any two sets.

Specs (the env's ``instances`` argument, ``agents/train.py --instances``):

===================  ========================================================
spec                 instances
===================  ========================================================
``train``            seeds only (the env's own dataset configuration)
``eval``             held-out seeds only
``shortcut:train``   the shortcut family: seeds plus ``shortcut_rho`` and
                     ``signal`` from :data:`SHORTCUT_TRAIN_GRID`
``shortcut:eval``    held-out seeds, strengths from :data:`SHORTCUT_EVAL_GRID`
                     (seen and unseen values)
===================  ========================================================

An explicit list of instance dicts is accepted wherever a spec is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "RUN_SEED_KEYS",
    "draw_instance",
    "EVAL_SEED_RANGE",
    "FAMILIES",
    "FAMILY_ENVS",
    "GENERAL_FAMILIES",
    "family_env_kwargs",
    "INSTANCE_KEYS",
    "SET_SIZES",
    "SHORTCUT_EVAL_GRID",
    "SHORTCUT_TRAIN_GRID",
    "SPLITS",
    "TRAIN_SEED_RANGE",
    "check_disjoint",
    "instance_key",
    "instance_set",
    "resolve_instances",
    "validate_instance",
]

SEED_KEYS = ("split_seed", "init_seed", "data_seed")
INSTANCE_KEYS = (*SEED_KEYS, "dataset_kwargs")
"""Keys of an instance dict; ``dataset_kwargs`` is optional."""
SPLITS = ("train", "eval")
TRAIN_SEED_RANGE = (0, 2**30)
EVAL_SEED_RANGE = (2**30, 2**31 - 1)
_SEED_RANGES = {"train": TRAIN_SEED_RANGE, "eval": EVAL_SEED_RANGE}
SET_SIZES = {"train": 1024, "eval": 64}
"""Default number of instances of each set."""

SHORTCUT_TRAIN_GRID: dict[str, tuple[Any, ...]] = {
    "shortcut_rho": (0.85, 0.9, 0.95),
    "signal": ((1.5, 2.5), (2.0, 2.5), (2.5, 2.5), (2.0, 2.0), (2.0, 3.0)),
}
"""Shortcut strengths and (signal a, signal b) pairs the family agent trains on."""
SHORTCUT_EVAL_GRID: dict[str, tuple[Any, ...]] = {
    "shortcut_rho": (0.8, 0.9, 0.975),
    "signal": ((2.0, 2.5), (1.75, 2.75), (3.0, 2.5), (2.0, 1.5)),
}
"""Held-out strengths: 0.9 and (2.0, 2.5) were seen in training, the others never."""
# The families of the general sampler (docs/agents.md): every held-out value of a
# varied knob lies outside the training grid, so no eval instance repeats a training
# configuration.
_SHORTCUT_GENERAL = (
    {"shortcut_rho": (0.85, 0.9, 0.95), "signal": ((1.5, 2.5), (2.0, 2.5), (2.5, 2.5), (2.0, 2.0), (2.5, 2.0))},
    {"shortcut_rho": (0.8, 0.875, 0.975), "signal": ((1.75, 2.75), (3.0, 2.5), (2.25, 1.75))},
)
_MEMORIZATION_SWITCH = (
    {"signal": ((5.0, 2.0), (4.5, 2.0), (5.5, 2.0), (5.0, 2.5))},
    {"signal": ((4.75, 2.25), (5.25, 1.75), (4.5, 1.75), (5.5, 2.25))},
)
FAMILIES: dict[str, tuple[dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]]] | None] = {
    "seeds": None,
    "shortcut": (SHORTCUT_TRAIN_GRID, SHORTCUT_EVAL_GRID),
    "shortcut_a": _SHORTCUT_GENERAL,
    "shortcut_b": _SHORTCUT_GENERAL,
    "memorization": (
        {"signal": ((3.0, 2.0), (2.5, 2.0), (3.5, 1.5), (3.0, 1.5))},
        {"signal": ((2.75, 1.75), (3.25, 2.25))},
    ),
    "complementary": (
        {"complementary": (2, 3, 4), "signal": ((3.0, 1.5), (2.5, 1.5), (3.0, 2.0))},
        {"complementary": (1, 5), "signal": ((2.75, 1.75), (3.25, 1.25))},
    ),
    "redundant": (
        {"signal": ((4.0, 4.0), (3.5, 4.0), (4.0, 3.5))},
        {"signal": ((3.75, 3.75), (4.25, 4.25))},
    ),
    "digits_pix_zer": None,
    "digits_fou_kar": None,
    "avdigits": None,
    "avmnist": None,
    "shortcut_switch": (
        {"shortcut_rho": (0.75, 0.8, 0.85), "signal": ((3.0, 2.0), (2.75, 2.0), (3.0, 2.25), (3.25, 1.75))},
        {"shortcut_rho": (0.775, 0.825), "signal": ((2.875, 2.125), (3.125, 1.875))},
    ),
    "memorization_switch": _MEMORIZATION_SWITCH,
    "shortcut_timing": (
        {"shortcut_rho": (0.8, 0.85, 0.9), "signal": ((3.5, 2.0), (3.25, 2.0), (3.5, 2.25), (3.75, 1.75))},
        {"shortcut_rho": (0.825, 0.875), "signal": ((3.375, 2.125), (3.625, 1.875))},
    ),
    "memorization_timing": _MEMORIZATION_SWITCH,  # the same knobs; larger validation and test splits
}
"""Instance families: ``None`` (seeds only) or the (train, eval) grids of config overrides."""

FAMILY_ENVS: dict[str, dict[str, Any]] = {
    "seeds": {},
    "shortcut": {"dataset": "synthetic:shortcut"},
    "shortcut_a": {"dataset": "synthetic:shortcut"},
    "shortcut_b": {"dataset": "synthetic:shortcut", "dataset_kwargs": {"shortcut_modality": 1}},
    "memorization": {"dataset": "synthetic:memorization"},
    "complementary": {"dataset": "synthetic:complementary"},
    "redundant": {"dataset": "synthetic:redundant"},
    "digits_pix_zer": {"dataset": "digits", "views": ["pix", "zer"]},
    "digits_fou_kar": {"dataset": "digits", "views": ["fou", "kar"]},
    "avdigits": {"dataset": "avdigits"},
    "avmnist": {"dataset": "avmnist"},
    "shortcut_switch": {"dataset": "synthetic:shortcut_switch"},
    "memorization_switch": {"dataset": "synthetic:memorization_switch"},
    "shortcut_timing": {"dataset": "synthetic:shortcut_timing"},
    "memorization_timing": {"dataset": "synthetic:memorization_timing"},
}
"""The env arguments (data set, views, fixed configuration) of each family's instances."""

GENERAL_FAMILIES = (
    "shortcut_a", "shortcut_b", "memorization", "complementary", "redundant", "digits_pix_zer", "digits_fou_kar",
    "avdigits", "avmnist", "shortcut_switch", "memorization_switch", "shortcut_timing", "memorization_timing",
)
"""The training distribution of the general sampler: where sampling matters a lot (shortcut on either
modality, memorization), where rebalancing hurts (complementary, the real audio-visual ``avdigits``),
where nothing matters (redundant), real data with two view pairs, AV-MNIST (``avmnist``: two weak real
modalities, fusion far from saturated), and four families where the best decision changes during the
run (``shortcut_switch``, ``memorization_switch`` and their stronger, better-measured ``_timing``
versions). The shipped ``general_ppo`` was trained on the first
eight; the others (added after it) are families it never saw (``avmnist``'s held-out row: docs/agents.md)."""


def family_env_kwargs(family: str, split: str = "train") -> dict[str, Any]:
    """``gym.make`` arguments for one family's instances of ``split`` (``"train"`` or ``"eval"``).

    >>> family_env_kwargs("shortcut_b", "eval")["instances"]
    'shortcut_b:eval'
    """
    if family not in FAMILY_ENVS or family == "seeds":
        raise ValueError(f"unknown family {family!r}; valid: {[f for f in FAMILY_ENVS if f != 'seeds']}")
    if split not in SPLITS:
        raise ValueError(f"family {family!r}: split {split!r}; expected one of {list(SPLITS)}")
    kwargs = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
              for k, v in FAMILY_ENVS[family].items()}
    return {**kwargs, "instances": f"{family}:{split}"}

# Fixed entropy of the set generator: a set depends only on its spec and size.
_SET_ENTROPY = 20260
# A set's seeds and grid order depend on its family's id, so ids are given once and never change:
# adding a family must not move another family's instances (published results name them).
_FAMILY_IDS = {
    "seeds": 0, "shortcut": 1, "shortcut_a": 2, "shortcut_b": 3, "memorization": 4, "complementary": 5,
    "redundant": 6, "digits_pix_zer": 7, "digits_fou_kar": 8, "avdigits": 9, "avmnist": 10,
    "shortcut_switch": 11, "memorization_switch": 12, "shortcut_timing": 13, "memorization_timing": 14,
}


def _json_value(v: Any) -> Any:
    """A grid value as JSON keeps it: tuples as lists of floats, ints as ints (counts such as
    ``complementary``), other numbers as floats."""
    if isinstance(v, (tuple, list)):
        return [float(x) for x in v]
    return v if isinstance(v, int) and not isinstance(v, bool) else float(v)


def instance_set(spec: str, size: int | None = None) -> list[dict[str, Any]]:
    """The instances of a named set, always the same for the same spec and size.

    Args:
        spec: ``"train"``, ``"eval"``, ``"FAMILY:train"`` or ``"FAMILY:eval"``
            (families: :data:`FAMILIES`).
        size: number of instances (default :data:`SET_SIZES`); the first ``k``
            instances of a set do not depend on ``size``.

    Returns:
        Instance dicts with keys ``split_seed``, ``init_seed``, ``data_seed``
        and, for a family, ``dataset_kwargs``. Families cycle through their
        grid in a shuffled order, so any ``len(grid)`` consecutive instances
        cover every combination once.
    """
    family, _, split = spec.rpartition(":")
    family = family or "seeds"
    if split not in SPLITS or family not in FAMILIES:
        raise ValueError(
            f"unknown instance set {spec!r}; expected 'train', 'eval' or 'FAMILY:train' / 'FAMILY:eval' "
            f"with FAMILY in {list(FAMILIES)}"
        )
    n = SET_SIZES[split] if size is None else int(size)
    if n < 1:
        raise ValueError(f"instance set {spec!r}: size must be >= 1, got {size}")
    lo, hi = _SEED_RANGES[split]
    rng = np.random.default_rng([_SET_ENTROPY, _FAMILY_IDS[family], SPLITS.index(split)])
    # Drawn in blocks of one instance so that a prefix does not depend on n.
    seeds = [rng.integers(lo, hi, size=len(SEED_KEYS)) for _ in range(n)]
    grids = FAMILIES[family]
    combos: list[tuple[Any, ...]] = []
    names: list[str] = []
    if grids is not None:
        grid = grids[SPLITS.index(split)]
        names = list(grid)
        base = list(itertools.product(*(grid[k] for k in names)))
        order = np.random.default_rng([_SET_ENTROPY, _FAMILY_IDS[family], SPLITS.index(split), 1]).permutation(
            len(base)
        )
        combos = [base[i] for i in order]
    out = []
    for i, s in enumerate(seeds):
        inst: dict[str, Any] = {k: int(v) for k, v in zip(SEED_KEYS, s)}
        if combos:
            inst["dataset_kwargs"] = {k: _json_value(v) for k, v in zip(names, combos[i % len(combos)])}
        out.append(inst)
    return out


def validate_instance(instance: Mapping[str, Any], where: str = "instance") -> dict[str, Any]:
    """A checked copy of one instance dict (seeds as ints, overrides as a dict)."""
    if not isinstance(instance, Mapping):
        raise ValueError(f"{where}: expected a dict with keys {list(INSTANCE_KEYS)}, got {instance!r}")
    unknown = set(instance) - set(INSTANCE_KEYS)
    missing = [k for k in ("split_seed", "init_seed") if k not in instance]
    if unknown or missing:
        raise ValueError(
            f"{where} {dict(instance)!r}: unknown keys {sorted(unknown)}, missing keys {missing}; "
            f"expected split_seed, init_seed and optionally data_seed, dataset_kwargs"
        )
    out: dict[str, Any] = {}
    for k in SEED_KEYS:
        if k in instance:
            v = instance[k]
            if isinstance(v, bool) or not float(v).is_integer() or not 0 <= int(v) < 2**31:
                raise ValueError(f"{where}: {k}={v!r}; expected an integer seed in [0, 2**31)")
            out[k] = int(v)
    if "dataset_kwargs" in instance:
        if not isinstance(instance["dataset_kwargs"], Mapping):
            raise ValueError(f"{where}: dataset_kwargs={instance['dataset_kwargs']!r}; expected a dict")
        out["dataset_kwargs"] = dict(instance["dataset_kwargs"])
    return out


def resolve_instances(instances: str | Sequence[Mapping[str, Any]], size: int | None = None) -> list[dict[str, Any]]:
    """A spec (see :func:`instance_set`) or an explicit list, as a checked list of instance dicts."""
    if isinstance(instances, str):
        return instance_set(instances, size)
    checked = [validate_instance(inst, f"instances[{k}]") for k, inst in enumerate(instances)]
    if not checked:
        raise ValueError("instances: an explicit instance list must not be empty")
    return checked


def instance_key(instance: Mapping[str, Any]) -> tuple[int | None, ...]:
    """The seeds that identify an instance's run: (split, init, data)."""
    return tuple(instance.get(k) for k in SEED_KEYS)


def check_disjoint(train: Iterable[Mapping[str, Any]], evaluation: Iterable[Mapping[str, Any]]) -> None:
    """Raise if an evaluation instance shares any seed with a training instance.

    Stricter than comparing whole instances: on synthetic data the split is
    fixed by the generator, so two instances with the same init and data seeds
    are the same run whatever their split seeds; no shared seed at all rules
    every such case out.
    """
    train, evaluation = list(train), list(evaluation)
    for k in SEED_KEYS:
        seen = {i[k] for i in train if i.get(k) is not None}
        shared = [dict(i) for i in evaluation if i.get(k) is not None and i[k] in seen]
        if shared:
            raise ValueError(
                f"training and evaluation instance sets share {k}={shared[0][k]} (evaluation instance {shared[0]}); "
                "evaluation must use held-out instances (e.g. the 'eval' set)"
            )


RUN_SEED_KEYS = ("split_seed", "init_seed", "sample_seed", "data_seed")
"""Every seed of one training run, in the order :func:`draw_instance` draws them."""


def draw_instance(
    rng: np.random.Generator,
    data_seed: int | None = None,
    instances: Sequence[Mapping[str, Any]] | None = None,
    given: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The instance of one episode: its run seeds and any dataset overrides.

    Four seeds are drawn from ``rng`` (always, so that the draws that follow
    do not depend on the options); then ``data_seed`` (the env's fixed
    synthetic seed) replaces the drawn one, an entry of ``instances`` drawn
    with ``rng`` replaces what it names, and ``given`` (a reset's
    ``options["instance"]``) replaces what it names, in that order.

    Returns:
        ``{"split_seed", "init_seed", "sample_seed", "data_seed": int,
        ["dataset_kwargs": dict]}``.
    """
    drawn: dict[str, Any] = {k: int(v) for k, v in zip(RUN_SEED_KEYS, rng.integers(0, 2**31 - 1, size=4))}
    if data_seed is not None:
        drawn["data_seed"] = int(data_seed)
    if instances is not None:
        drawn.update(instances[int(rng.integers(len(instances)))])
    given = dict(given or {})
    unknown = set(given) - {*RUN_SEED_KEYS, "dataset_kwargs"}
    if unknown:
        raise ValueError(
            f"reset options['instance']: unknown keys {sorted(unknown)}; valid: {[*RUN_SEED_KEYS, 'dataset_kwargs']}"
        )
    for k, v in given.items():
        if k == "dataset_kwargs":
            if not isinstance(v, Mapping):
                raise ValueError(f"reset options['instance']: dataset_kwargs={v!r}; expected a dict")
            drawn[k] = dict(v)
        elif isinstance(v, bool) or not float(v).is_integer() or not 0 <= int(v) < 2**31:
            raise ValueError(f"reset options['instance']: {k}={v!r}; expected an integer seed in [0, 2**31)")
        else:
            drawn[k] = int(v)
    return drawn
