"""Datasets: the container, the built-in digits, synthetic families."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dus_gym.data.avdigits import AVDIGITS_MODALITIES, load_avdigits
from dus_gym.data.avmnist import AVMNIST_MODALITIES, load_avmnist
from dus_gym.data.bundle import BundleError, load_bundle, read_bundle_meta, save_bundle
from dus_gym.data.dataset import SPLIT_NAMES, MultimodalDataset, Splits, check_views, stratified_split
from dus_gym.data.digits import DEFAULT_DIGIT_VIEWS, DIGIT_VIEWS, load_digits
from dus_gym.data.synthetic import PRESETS, SyntheticConfig, make_synthetic, resolve_config

__all__ = [
    "AVDIGITS_MODALITIES",
    "AVMNIST_MODALITIES",
    "BundleError",
    "DatasetSource",
    "DATASETS",
    "DEFAULT_DIGIT_VIEWS",
    "DIGIT_VIEWS",
    "MultimodalDataset",
    "PRESETS",
    "SPLIT_NAMES",
    "Splits",
    "SyntheticConfig",
    "load_avdigits",
    "load_avmnist",
    "load_bundle",
    "load_dataset",
    "load_digits",
    "dataset_modalities",
    "make_synthetic",
    "read_bundle_meta",
    "save_bundle",
    "stratified_split",
]

DATASETS = ("digits", "avdigits", "avmnist", "synthetic")

_BUILTIN: dict[str, tuple[Sequence[str], Sequence[str], str]] = {
    "digits": (DEFAULT_DIGIT_VIEWS, DIGIT_VIEWS, "view"),
    "avdigits": (AVDIGITS_MODALITIES, AVDIGITS_MODALITIES, "modality"),
    "avmnist": (AVMNIST_MODALITIES, AVMNIST_MODALITIES, "modality"),
}
"""The built-in data sets with fixed modalities: (default, valid names, what a name is called)."""


def load_dataset(
    name: str, views: Sequence[str] | None = None, seed: int = 0, **kwargs: Any
) -> MultimodalDataset:
    """Load a dataset by name.

    Args:
        name: ``"digits"`` (built-in real data), ``"avdigits"`` (built-in
            spoken + handwritten digits, speaker-disjoint test split), ``"avmnist"``
            (built-in AV-MNIST: spoken digits + PCA-reduced MNIST digits, the same
            speaker-disjoint split), ``"synthetic"`` (the shortcut preset),
            ``"synthetic:PRESET"`` with a name from :data:`PRESETS`,
            or ``"bundle:PATH"``: your own data as a feature bundle (a ``.npz``
            file or a folder, see :mod:`dus_gym.data.bundle`).
        views: for ``digits``, the views to use (default ``("pix", "zer")``);
            for ``avdigits``, ``avmnist``, synthetic data and bundles, a subset of the modality names.
        seed: generator seed of synthetic data (ignored by ``digits``).
        kwargs: synthetic-config overrides (``shortcut_rho=0.8``).
    """
    family, _, detail = name.partition(":")
    if family == "digits" and not detail:
        if kwargs:
            raise ValueError(f"digits takes no options besides views, got {sorted(kwargs)}")
        return load_digits(DEFAULT_DIGIT_VIEWS if views is None else views)
    if family == "avdigits" and not detail:
        if kwargs:
            raise ValueError(f"avdigits takes no options besides views, got {sorted(kwargs)}")
        return load_avdigits(views)
    if family == "avmnist" and not detail:
        if kwargs:
            raise ValueError(f"avmnist takes no options besides views, got {sorted(kwargs)}")
        return load_avmnist(views)
    if family == "bundle":
        if kwargs:
            raise ValueError(f"{name}: a bundle takes no options besides views, got {sorted(kwargs)}")
        return load_bundle(_bundle_path(name), views)
    if family == "synthetic":
        data = make_synthetic(detail or "shortcut", seed=seed, **kwargs)
        return data if views is None else data.select(views)
    valid = [*_BUILTIN, "synthetic"] + [f"synthetic:{p}" for p in sorted(PRESETS)] + ["bundle:PATH"]
    raise ValueError(f"unknown dataset {name!r}; valid datasets: {valid}")


def dataset_modalities(name: str, views: Sequence[str] | None = None, **kwargs: Any) -> list[str]:
    """The modality names :func:`load_dataset` would give, without loading or generating data."""
    family, _, detail = name.partition(":")
    if family in _BUILTIN and not detail:
        if kwargs:
            raise ValueError(f"{family} takes no options besides views, got {sorted(kwargs)}")
        default, valid, noun = _BUILTIN[family]
        return check_views(family, default if views is None else views, valid, noun)
    if family == "synthetic":
        all_names = list(resolve_config(detail or "shortcut", **kwargs).names)
        return all_names if views is None else check_views(name, views, all_names)
    if family == "bundle":
        if kwargs:
            raise ValueError(f"{name}: a bundle takes no options besides views, got {sorted(kwargs)}")
        all_names = read_bundle_meta(_bundle_path(name)).modalities
        return all_names if views is None else check_views(name, views, all_names)
    return load_dataset(name, views, **kwargs).modality_names


def _bundle_path(name: str) -> str:
    path = name.partition(":")[2]
    if not path:
        raise ValueError(f"dataset {name!r}: expected 'bundle:PATH' with the path of a .npz file or a folder")
    return path


class DatasetSource:
    """The data of an env's episodes: a dataset by name (or object), checked
    once and loaded per episode, keeping the last one loaded.

    Built-in and bundle data load once; a synthetic family is generated again
    only when an episode's ``data_seed`` or configuration overrides change.

    Args:
        dataset: a name for :func:`load_dataset` or a :class:`MultimodalDataset`.
        views: the modalities to use (default: the dataset's own default);
            at least two, each named once.
        dataset_kwargs: synthetic-configuration overrides for every episode.

    Raises:
        ValueError: an unknown dataset or view, fewer than two views or a
            repeated one, naming the value and the valid choices; raised at
            construction, before any data is loaded.
    """

    def __init__(
        self,
        dataset: str | MultimodalDataset,
        views: Sequence[str] | None = None,
        dataset_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(views, str):
            raise ValueError(f"views={views!r}: expected a list of modality names, e.g. ['pix', 'zer']")
        self.spec = dataset
        self.views = None if views is None else list(views)
        self.kwargs = dict(dataset_kwargs or {})
        if self.views is not None:
            repeated = sorted({v for v in self.views if self.views.count(v) > 1})
            if repeated:
                raise ValueError(f"views={self.views}: {repeated} named more than once; each modality once")
        self._data: MultimodalDataset | None = None
        self._key: Any = None
        if isinstance(dataset, MultimodalDataset):
            if self.kwargs:
                raise ValueError(f"dataset_kwargs={self.kwargs}: only synthetic datasets given by name take options")
            self._data = dataset if views is None else dataset.select(views)
            self.modalities = self._data.modality_names
        elif isinstance(dataset, str):
            self.modalities = dataset_modalities(dataset, self.views, **self.kwargs)
        else:
            raise ValueError(f"dataset={dataset!r}: expected a name such as 'digits' or a MultimodalDataset")
        if len(self.modalities) < 2:
            raise ValueError(
                f"views={self.modalities}: multimodal training needs at least two modalities "
                f"(dataset {dataset if isinstance(dataset, str) else type(dataset).__name__})"
            )

    def load(self, data_seed: int = 0, overrides: Mapping[str, Any] | None = None) -> MultimodalDataset:
        """The dataset of an episode; reloaded only when its seed or overrides change it."""
        if isinstance(self.spec, MultimodalDataset):
            assert self._data is not None
            return self._data
        kwargs = {**self.kwargs, **dict(overrides or {})}
        key = (data_seed, json.dumps(kwargs, sort_keys=True)) if self.spec.startswith("synthetic") else None
        if self._data is None or key != self._key:
            self._data = load_dataset(self.spec, self.views, seed=data_seed, **kwargs)
            self._key = key
        return self._data
