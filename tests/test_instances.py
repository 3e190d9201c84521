"""Instance sets: disjoint by construction, stable, and drawn by the env at reset."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import pytest
from conftest import unwrapped

import dus_gym  # noqa: F401
from dus_gym import make_synthetic
from dus_gym.instances import (
    EVAL_SEED_RANGE,
    FAMILIES,
    GENERAL_FAMILIES,
    SHORTCUT_TRAIN_GRID,
    TRAIN_SEED_RANGE,
    check_disjoint,
    family_env_kwargs,
    instance_set,
    resolve_instances,
    validate_instance,
)

SEEDS = ("split_seed", "init_seed", "data_seed")


@pytest.mark.parametrize("family", ["", "shortcut:"])
def test_train_and_eval_sets_are_disjoint(family: str) -> None:
    train = instance_set(family + "train")
    evaluation = instance_set(family + "eval")
    check_disjoint(train, evaluation)
    for inst in train:
        assert all(TRAIN_SEED_RANGE[0] <= inst[k] < TRAIN_SEED_RANGE[1] for k in SEEDS)
    for inst in evaluation:
        assert all(EVAL_SEED_RANGE[0] <= inst[k] < EVAL_SEED_RANGE[1] for k in SEEDS)
    train_seeds = {inst[k] for inst in train for k in SEEDS}
    assert not train_seeds & {inst[k] for inst in evaluation for k in SEEDS}


def test_check_disjoint_rejects_a_shared_seed() -> None:
    train = instance_set("train", 4)
    leaked = [dict(instance_set("eval", 1)[0], init_seed=train[2]["init_seed"])]
    with pytest.raises(ValueError, match="init_seed"):
        check_disjoint(train, leaked)


def test_sets_are_stable_and_prefix_independent_of_size() -> None:
    assert instance_set("shortcut:train", 5) == instance_set("shortcut:train", 40)[:5]
    assert instance_set("eval", 3) == instance_set("eval", 3)
    assert instance_set("train", 3) != instance_set("eval", 3)


def test_shortcut_family_covers_its_grid_and_holds_out_unseen_strengths() -> None:
    train = instance_set("shortcut:train", 15)
    rhos = {inst["dataset_kwargs"]["shortcut_rho"] for inst in train}
    signals = {tuple(inst["dataset_kwargs"]["signal"]) for inst in train}
    assert rhos == set(SHORTCUT_TRAIN_GRID["shortcut_rho"])
    assert signals == set(SHORTCUT_TRAIN_GRID["signal"])
    evaluation = instance_set("shortcut:eval", 12)
    eval_rhos = {inst["dataset_kwargs"]["shortcut_rho"] for inst in evaluation}
    assert eval_rhos - rhos, "the held-out set must include shortcut strengths never trained on"
    assert eval_rhos & rhos, "and strengths seen in training, for comparison"


@pytest.mark.parametrize(
    ("spec", "match"),
    [("test", "unknown instance set"), ("nofamily:train", "unknown instance set"), ("train:eval", "unknown")],
)
def test_unknown_specs_are_named(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        instance_set(spec)


def test_explicit_instances_are_validated() -> None:
    assert resolve_instances([{"split_seed": 1, "init_seed": 2}]) == [{"split_seed": 1, "init_seed": 2}]
    with pytest.raises(ValueError, match="missing keys"):
        validate_instance({"split_seed": 1})
    with pytest.raises(ValueError, match="unknown keys"):
        validate_instance({"split_seed": 1, "init_seed": 2, "colour": 3})
    with pytest.raises(ValueError, match="integer seed"):
        validate_instance({"split_seed": 1.5, "init_seed": 2})
    with pytest.raises(ValueError, match="must not be empty"):
        resolve_instances([])


def test_env_draws_its_instances_from_the_set(tiny_env_kwargs: dict[str, Any]) -> None:
    env = gym.make("DUS-Synthetic-v0", **tiny_env_kwargs, instances="shortcut:eval")
    allowed = instance_set("shortcut:eval")
    drawn = []
    env.reset(seed=3)
    for _ in range(4):
        inst = unwrapped(env).instance
        assert {k: inst[k] for k in (*SEEDS, "dataset_kwargs")} in allowed
        drawn.append(inst)
        env.reset()
    # the overrides reach the dataset
    data = unwrapped(env).source.load(drawn[-1]["data_seed"], drawn[-1]["dataset_kwargs"])
    assert data.name.startswith("synthetic")
    again = gym.make("DUS-Synthetic-v0", **tiny_env_kwargs, instances="shortcut:eval")
    again.reset(seed=3)
    assert unwrapped(again).instance == drawn[0]


def test_env_with_an_explicit_instance_list(tiny_env_kwargs: dict[str, Any]) -> None:
    only = {"split_seed": 11, "init_seed": 12, "data_seed": 13, "dataset_kwargs": {"shortcut_rho": 0.5}}
    env = gym.make("DUS-Synthetic-v0", **tiny_env_kwargs, instances=[only])
    for seed in (0, 1):
        env.reset(seed=seed)
        inst = unwrapped(env).instance
        assert {k: inst[k] for k in only} == only
    assert unwrapped(env).source._key == (13, '{"shortcut_rho": 0.5}')


@pytest.mark.parametrize("family", GENERAL_FAMILIES)
def test_general_families_hold_out_every_varied_knob_value(family: str) -> None:
    train, evaluation = instance_set(f"{family}:train", 60), instance_set(f"{family}:eval", 20)
    check_disjoint(train, evaluation)
    seen = {json.dumps(i.get("dataset_kwargs"), sort_keys=True) for i in train}
    grids = FAMILIES[family]
    if grids is not None:  # no held-out configuration was ever trained on
        assert not seen & {json.dumps(i["dataset_kwargs"], sort_keys=True) for i in evaluation}
        for knob, values in grids[1].items():
            unseen = set(map(str, values)) - set(map(str, grids[0][knob]))
            assert unseen, f"{family}: every held-out {knob} value was also a training value"
    env = gym.make("DUS-v0", **family_env_kwargs(family, "eval"), n_steps=1, iterations_per_step=1, device="cpu")
    env.reset(seed=0)
    assert {k: unwrapped(env).instance[k] for k in ("split_seed", "init_seed", "data_seed")} in [
        {k: i[k] for k in ("split_seed", "init_seed", "data_seed")} for i in instance_set(f"{family}:eval")
    ]


def test_family_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"unknown family 'nope'"):
        family_env_kwargs("nope")
    with pytest.raises(ValueError, match=r"split 'test'"):
        family_env_kwargs("redundant", "test")
    # The shortcut can sit on either modality; on b it widens b, not a.
    a, b = (make_synthetic("shortcut", seed=0, shortcut_modality=k) for k in (0, 1))
    assert a.modalities["a"].shape[1] == b.modalities["a"].shape[1] + 16
    assert b.modalities["b"].shape[1] == a.modalities["b"].shape[1] + 16
    with pytest.raises(ValueError, match="shortcut_modality must index a modality"):
        make_synthetic("shortcut", seed=0, shortcut_modality=2)


def test_every_family_has_its_own_fixed_id() -> None:
    """A set's seeds come from its family's id: ids are given once, so adding a family moves no other's
    instances (the published tables name them)."""
    from dus_gym.instances import _FAMILY_IDS

    assert set(FAMILIES) <= set(_FAMILY_IDS)
    assert len(set(_FAMILY_IDS.values())) == len(_FAMILY_IDS)
    assert [_FAMILY_IDS[f] for f in list(FAMILIES)[:10]] == list(range(10))  # the order before ids were fixed
