"""Batched runs (dus_gym.batched) and the batched vector env: equal to single runs, per sub-run."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import unwrapped
from gymnasium.vector import AutoresetMode

import dus_gym
from dus_gym import RunConfig, TrainingRun, load_dataset, make_synthetic
from dus_gym.batched import BatchedTrainingRun, LoopedRuns, batching_support, loop_reason, make_run_batch
from dus_gym.data import MultimodalDataset
from dus_gym.envs import DUSEnv, DUSVectorEnv
from dus_gym.envs.sb3 import ConcatVecEnv, DUSVecEnv, make_family_vec_env, make_sb3_vec_env

TINY: dict[str, Any] = {"dataset": "synthetic:tiny", "n_steps": 3, "iterations_per_step": 2, "base_batch": 8,
                        "device": "cpu"}
SEEDS = [{"split_seed": s, "init_seed": 100 + s, "sample_seed": 200 + s} for s in range(3)]


def _images(seed: int = 0) -> MultimodalDataset:
    """A small image + vector set, so that the CNN encoder is batched too."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(120) % 4
    image = torch.randn(120, 1, 8, 8, generator=g) + labels[:, None, None, None] * 0.5
    vector = torch.randn(120, 6, generator=g) + labels[:, None] * 0.3
    return MultimodalDataset({"img": image, "vec": vector}, labels, [str(c) for c in range(4)], "images")


def _counts(k: int) -> np.ndarray:
    """Non-uniform per-run counts (sum 2B = 16 per run) that change every iteration."""
    return np.array([[8 + (k % 5), 8 - (k % 5)], [3, 13], [1 + k % 15, 15 - k % 15]])


@pytest.mark.parametrize("method", ["joint", "ogm_ge", "mla"])
@pytest.mark.parametrize("data", ["tiny", "images"])
def test_batched_runs_equal_single_runs_iteration_by_iteration(method: str, data: str) -> None:
    dataset = make_synthetic("tiny", seed=0) if data == "tiny" else _images()
    config = RunConfig(method=method, base_batch=8, device="cpu")
    batch = BatchedTrainingRun([dataset] * 3, config, SEEDS)
    singles = [TrainingRun(dataset, config, **s) for s in SEEDS]
    # Stacked and single products round differently (1e-7 relative at first); SGD carries the
    # difference on, to at most 2e-5 after 30 iterations (every case here, on this machine's
    # kernels and on scripts/other_kernels.py's), then amplifies it: mla on the CNN reached 7e-3 by
    # iteration 50 on the other kernels, a property of SGD, not of the batching. So 30 iterations,
    # with 50x to spare after the 10th. A wrong mask or normalisation is off by 1e-2 or more from
    # the first iteration.
    for k in range(30):
        counts = _counts(k)
        reports = batch.step(counts, iterations=1)
        rtol = 1e-5 if k < 10 else 1e-3
        for run, c, rb in zip(singles, counts, reports):
            rs = run.step(c, 1)
            np.testing.assert_array_equal(rb.counts, rs.counts)
            np.testing.assert_allclose(rb.train_loss, rs.train_loss, rtol=rtol, atol=1e-6, err_msg=f"iteration {k}")
            np.testing.assert_allclose(rb.branch_loss, rs.branch_loss, rtol=rtol, atol=1e-6, err_msg=f"iteration {k}")
            np.testing.assert_allclose(rb.scores, rs.scores, rtol=rtol, atol=1e-6, err_msg=f"iteration {k}")
            assert rb.finite and rs.finite
    # Logits that far apart can put a test example within them of the decision boundary on one side of
    # it: one example of the test split may differ.
    for i, run in enumerate(singles):
        assert batch.report(i, "test", probe=False)["accuracy"] == pytest.approx(
            run.report("test", probe=False)["accuracy"], abs=1 / len(run.splits.test) + 1e-9
        )


def test_runs_with_their_own_data_are_stacked_and_still_equal_single_runs() -> None:
    datasets = [make_synthetic("tiny", seed=s) for s in (1, 2, 3)]
    config = RunConfig(base_batch=8, device="cpu")
    batch = BatchedTrainingRun(datasets, config, SEEDS)
    singles = [TrainingRun(d, config, **s) for d, s in zip(datasets, SEEDS)]
    for k in range(10):
        for run, c, rb in zip(singles, _counts(k), batch.step(_counts(k), iterations=1)):
            np.testing.assert_allclose(rb.train_loss, run.step(c, 1).train_loss, rtol=1e-4, atol=1e-5)


def test_one_run_reset_leaves_the_others_alone() -> None:
    dataset = make_synthetic("tiny", seed=0)
    config = RunConfig(base_batch=8, device="cpu", optimizer="adam", lr=1e-3)
    batch = BatchedTrainingRun([dataset] * 3, config, SEEDS)
    singles = [TrainingRun(dataset, config, **s) for s in SEEDS]
    fresh = {"split_seed": 7, "init_seed": 8, "sample_seed": 9}
    for k in range(6):
        if k == 3:  # run 1 starts over; its optimizer state and monitor too
            batch.reset_run(1, dataset, fresh)
            singles[1] = TrainingRun(dataset, config, **fresh)
        for run, c, rb in zip(singles, _counts(k), batch.step(_counts(k), iterations=2)):
            rs = run.step(c, 2)
            np.testing.assert_allclose(rb.train_loss, rs.train_loss, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(rb.scores, rs.scores, rtol=1e-4, atol=1e-6)


def test_a_diverging_run_is_flagged_and_the_others_are_untouched() -> None:
    dataset = make_synthetic("tiny", seed=0)
    config = RunConfig(base_batch=8, device="cpu")
    batch = BatchedTrainingRun([dataset] * 3, config, SEEDS)
    singles = [TrainingRun(dataset, config, **s) for s in SEEDS]
    with torch.no_grad():
        next(iter(batch.params.values()))[1].fill_(float("nan"))
    reports = batch.step(_counts(0), iterations=2)
    assert [r.finite for r in reports] == [True, False, True]
    for i in (0, 2):
        assert reports[i].train_loss == pytest.approx(singles[i].step(_counts(0)[i], 2).train_loss, rel=1e-4)


def test_batches_refuse_mismatched_data_and_counts() -> None:
    config = RunConfig(base_batch=8, device="cpu")
    tiny = make_synthetic("tiny", seed=0)
    with pytest.raises(ValueError, match=r"run 1: dataset with modalities .*runs of one batch share"):
        BatchedTrainingRun([tiny, _images()], config, SEEDS[:2])
    batch = BatchedTrainingRun([tiny] * 2, config, SEEDS[:2])
    with pytest.raises(ValueError, match=r"expected integers >= 1 of shape \(2, 2\)"):
        batch.step(np.array([[8, 8]]), 1)
    with pytest.raises(ValueError, match=r"expected integers >= 1"):
        batch.step(np.array([[8, 0], [8, 8]]), 1)


def test_what_is_not_stacked_falls_back_to_a_loop_of_single_runs() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    seq = MultimodalDataset(
        {"a": torch.randn(60, 5, 4, generator=g), "b": torch.randn(60, 4, generator=g)}, labels, ["0", "1", "2"], "seq"
    )
    config = RunConfig(base_batch=8, device="cpu")
    assert "GRUEncoder" in (batching_support(config, seq) or "")
    assert isinstance(make_run_batch([seq] * 2, config, SEEDS[:2]), LoopedRuns)
    projection = RunConfig(method="mla", method_kwargs={"projection": True}, base_batch=8, device="cpu")
    assert "projection" in (batching_support(projection, make_synthetic("tiny", seed=0)) or "")
    with pytest.raises(ValueError, match="use make_run_batch"):
        BatchedTrainingRun([seq] * 2, config, SEEDS[:2])


def test_cnns_on_the_cpu_and_single_runs_loop_while_mlps_stack() -> None:
    config = RunConfig(base_batch=8, device="cpu")
    images, tiny = _images(), make_synthetic("tiny", seed=0)
    # Stacking a CNN applies (the equivalence tests above run it) but costs more than a loop on the CPU.
    assert batching_support(config, images) is None
    assert "CNN encoders on the CPU" in (loop_reason(config, images, 3) or "")
    assert isinstance(make_run_batch([images] * 3, config, SEEDS), LoopedRuns)
    assert loop_reason(config, tiny, 3) is None
    assert isinstance(make_run_batch([tiny] * 3, config, SEEDS), BatchedTrainingRun)
    assert loop_reason(config, tiny, 1) == "a single run"
    assert isinstance(make_run_batch([tiny], config, SEEDS[:1]), LoopedRuns)
    with pytest.raises(ValueError, match="0 datasets for 0 seed sets"):
        make_run_batch([], config, [])


# -- the vector env -------------------------------------------------------------------------------


def _vec(n: int, **kwargs: Any) -> DUSVectorEnv:
    venv = gym.make_vec("DUS-Synthetic-v0", num_envs=n, vectorization_mode="vector_entry_point", **{**TINY, **kwargs})
    assert isinstance(venv.unwrapped, DUSVectorEnv)
    return venv.unwrapped


@pytest.mark.parametrize("env_id", dus_gym.ENV_IDS)
def test_every_id_has_the_batched_vector_env_with_the_single_spaces(env_id: str) -> None:
    kwargs: dict[str, Any] = {"n_steps": 2, "iterations_per_step": 1, "device": "cpu"}
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    single = gym.make(env_id, **kwargs)
    assert isinstance(venv.unwrapped, DUSVectorEnv)
    assert venv.single_observation_space == single.observation_space
    assert venv.single_action_space == single.action_space
    # Gymnasium's default, in the attribute and the metadata as its own vector envs have them.
    assert venv.unwrapped.autoreset_mode == venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_sub_env_i_is_the_single_env_seeded_s_plus_i(mode: AutoresetMode) -> None:
    venv = _vec(3, autoreset_mode=mode)
    singles = [gym.make("DUS-Synthetic-v0", **TINY) for _ in range(3)]
    obs, info = venv.reset(seed=5)
    for i, env in enumerate(singles):
        o, inf = env.reset(seed=5 + i)
        assert venv.instances[i] == unwrapped(env).instance
        np.testing.assert_allclose(obs[i], o, rtol=1e-5, atol=1e-6)  # val_loss may reach 10, where ulp32 is 1e-6
    rng = np.random.default_rng(0)
    for _ in range(TINY["n_steps"]):
        actions = rng.integers(0, 9, size=(3, 2))
        obs, rewards, terminated, truncated, info = venv.step(actions)
        for i, env in enumerate(singles):
            o, r, term, trunc, inf = env.step(actions[i])
            np.testing.assert_array_equal(venv.sub_infos[i]["quantities"], inf["quantities"])
            assert rewards[i] == pytest.approx(r, abs=1e-5)
            assert (terminated[i], truncated[i]) == (term, trunc)
            if trunc:
                np.testing.assert_allclose(venv.final_observations[i], o, atol=1e-5)
                assert venv.sub_infos[i]["test"]["accuracy"] == pytest.approx(inf["test"]["accuracy"], abs=0.05)
    assert truncated.all()
    if mode == AutoresetMode.SAME_STEP:
        assert info["_final_info"].all() and set(info["final_info"]["test"]) >= {"accuracy", "probe_accuracy"}
        # The next episode has begun, each sub-env's next instance from its own np_random.
        for i, env in enumerate(singles):
            env.reset()
            assert venv.instances[i] == unwrapped(env).instance
        return
    # NEXT_STEP: the last observation and info are the step's own; the next step resets, whatever the action.
    assert "final_info" not in info and info["_test"].all() and set(info["test"]) >= {"accuracy", "probe_accuracy"}
    np.testing.assert_array_equal(obs, np.stack([venv.final_observations[i] for i in range(3)]))
    obs, rewards, terminated, truncated, info = venv.step(rng.integers(0, 9, size=(3, 2)))
    assert rewards.tolist() == [0.0, 0.0, 0.0] and not terminated.any() and not truncated.any()
    for i, env in enumerate(singles):
        o, _ = env.reset()
        assert venv.instances[i] == unwrapped(env).instance
        np.testing.assert_allclose(obs[i], o, rtol=1e-5, atol=1e-6)


def test_same_seed_same_batched_episode() -> None:
    def episode() -> list[np.ndarray]:
        venv = _vec(2)
        out = [venv.reset(seed=0)[0]]
        for _ in range(TINY["n_steps"]):
            out.append(venv.step(np.array([[2, 6], [4, 4]]))[0])
        return out

    for a, b in zip(episode(), episode()):
        np.testing.assert_array_equal(a, b)


def test_vector_env_bad_actions_name_the_sub_env() -> None:
    venv = _vec(2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions of shape \(3, 2\); expected \(2, 2\)"):
        venv.step(np.zeros((3, 2), dtype=np.int64))
    cont = _vec(2, action_type="continuous")
    cont.reset(seed=0)
    with pytest.raises(ValueError, match=r"sub-env 1: DUSEnv.step: action .* is not finite"):
        cont.step(np.array([[0.0, 0.0], [np.nan, 0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"max_episode_steps=5 differs from n_steps=3"):
        DUSVectorEnv(2, max_episode_steps=5, **TINY)


def _diverge(venv: DUSVectorEnv, i: int) -> None:
    assert isinstance(venv.batch, BatchedTrainingRun)
    with torch.no_grad():
        next(iter(venv.batch.params.values()))[i].fill_(float("nan"))


def test_a_diverging_sub_env_ends_alone_and_restarts() -> None:
    venv = _vec(3, autoreset_mode=AutoresetMode.SAME_STEP)
    venv.reset(seed=0)
    _diverge(venv, 1)
    _, rewards, terminated, truncated, info = venv.step(np.full((3, 2), 4))
    assert terminated.tolist() == [False, True, False] and not truncated.any()
    assert bool(info["final_info"]["diverged"][1]) and rewards[1] == -1.0
    # The broken run's test metrics are kept (compare.py reports them); nothing to probe in a NaN encoder.
    assert set(venv.final_tests) == {1} and np.isnan(venv.final_tests[1]["probe_accuracy"]["a"])
    assert venv.envs[1]._step == 0 and venv.envs[0]._step == 1  # sub-env 1 began a new episode
    _, _, terminated, _, _ = venv.step(np.full((3, 2), 4))
    assert not terminated.any()  # the restarted run trains normally


def test_next_step_a_diverged_sub_env_sits_out_one_step_and_restarts_fresh() -> None:
    venv = _vec(3)  # NEXT_STEP
    venv.reset(seed=0)
    _diverge(venv, 1)
    _, rewards, terminated, _, info = venv.step(np.full((3, 2), 4))
    assert terminated.tolist() == [False, True, False] and bool(info["diverged"][1]) and rewards[1] == -1.0
    assert set(venv.final_tests) == {1} and venv.envs[1]._step == 1  # not reset yet
    obs, rewards, terminated, _, info = venv.step(np.full((3, 2), 4))
    assert rewards[1] == 0.0 and not terminated.any() and info["_step"].tolist() == [True] * 3
    assert [env._step for env in venv.envs] == [2, 0, 2]  # the others trained, sub-env 1 sat out
    # The run that sat out is fresh, as the single env starts the same instance: its placeholder step was undone.
    single = DUSEnv(**TINY)
    o, _ = single.reset(options={"instance": venv.envs[1].instance})
    np.testing.assert_allclose(obs[1], o, rtol=1e-5, atol=1e-6)
    obs, _, _, _, _ = venv.step(np.full((3, 2), 2))
    np.testing.assert_allclose(obs[1], single.step(np.array([2, 2]))[0], rtol=1e-4, atol=1e-5)


def test_disabled_autoreset_waits_for_a_masked_reset() -> None:
    venv = _vec(2, autoreset_mode="Disabled")
    assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    venv.reset(seed=0)
    for _ in range(TINY["n_steps"]):
        obs, _, _, truncated, info = venv.step(np.full((2, 2), 4))
    assert truncated.all() and "test" in info
    with pytest.raises(RuntimeError, match=r"sub-env\(s\) \[0, 1\] ended and autoreset_mode is DISABLED"):
        venv.step(np.full((2, 2), 4))
    first, info = venv.reset(options={"reset_mask": np.array([False, True])})
    assert info["_step"].tolist() == [False, True] and info["step"][1] == 0
    np.testing.assert_array_equal(first[0], obs[0])  # sub-env 0 keeps its last observation
    with pytest.raises(RuntimeError, match=r"sub-env\(s\) \[0\] ended"):
        venv.step(np.full((2, 2), 4))
    venv.reset(options={"reset_mask": np.array([True, False])})
    _, _, _, truncated, _ = venv.step(np.full((2, 2), 4))
    assert not truncated.any() and [env._step for env in venv.envs] == [1, 1]


def test_autoreset_mode_and_reset_mask_are_checked() -> None:
    with pytest.raises(ValueError, match=r"autoreset_mode='later'; expected one of \['NextStep', 'SameStep', "):
        _vec(2, autoreset_mode="later")
    venv = _vec(2)
    with pytest.raises(RuntimeError, match="reset every sub-env once before resetting some"):
        venv.reset(options={"reset_mask": np.array([True, False])})
    venv.reset(seed=0)
    for bad, why in [([True, False], "is list"), (np.array([1, 0]), "is ndarray int64"),
                     (np.array([True]), r"\(1,\); expected a bool numpy array of shape \(2,\)"),
                     (np.array([False, False]), "marks no sub-env")]:
        with pytest.raises(ValueError, match=why):
            venv.reset(options={"reset_mask": bad})
    with pytest.raises(ValueError, match="SB3's VecEnv resets in the same step"):
        DUSVecEnv(venv)


def test_digits_are_held_once_for_all_sub_envs() -> None:
    venv = gym.make_vec("DUS-v0", num_envs=3, vectorization_mode="vector_entry_point", n_steps=1,
                        iterations_per_step=1, device="cpu").unwrapped
    assert isinstance(venv, DUSVectorEnv)
    venv.reset(seed=0)
    assert isinstance(venv.batch, BatchedTrainingRun) and venv.batch.data.shared
    assert venv.batch.data.raw[0].shape == load_dataset("digits").modalities["pix"].shape


def test_sb3_ppo_trains_on_the_batched_vec_env() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    venv = make_sb3_vec_env("DUS-Synthetic-v0", 2, **TINY)
    assert isinstance(venv, DUSVecEnv)
    obs = venv.reset()
    assert isinstance(obs, np.ndarray) and obs.shape == (2, *venv.observation_space.shape)  # type: ignore[misc]
    _, _, dones, infos = venv.step(np.array([[4, 4], [2, 6]]))
    assert not dones.any() and infos[1]["quantities"].tolist() != infos[0]["quantities"].tolist()
    for _ in range(TINY["n_steps"] - 1):
        _, _, dones, infos = venv.step(np.array([[4, 4], [2, 6]]))
    assert dones.all() and all("terminal_observation" in i and "test" in i for i in infos)
    assert all(i["TimeLimit.truncated"] for i in infos)
    model = PPO("MlpPolicy", VecNormalize(VecMonitor(venv)), n_steps=8, batch_size=8, n_epochs=1, seed=0)
    model.learn(16)
    assert model.num_timesteps == 16


def test_families_of_different_shapes_train_one_agent_through_concat_vec_env() -> None:
    kwargs: dict[str, Any] = {"n_steps": 2, "iterations_per_step": 1, "base_batch": 8, "device": "cpu"}
    venv = make_family_vec_env("DUS-v0", ["shortcut_a", "shortcut_b"], 2, **kwargs)
    assert isinstance(venv, ConcatVecEnv) and venv.num_envs == 4
    venv.seed(3)
    obs = venv.reset()
    widths = venv.get_attr("instance")
    assert isinstance(obs, np.ndarray) and obs.shape[0] == 4 and len(widths) == 4
    assert [p.venv.batch.data.raw[1].shape[-1] for p in venv.venvs] == [32, 48]  # type: ignore[attr-defined]
    for _ in range(kwargs["n_steps"]):
        _, _, dones, infos = venv.step(np.tile([2, 6], (4, 1)))
    assert dones.all() and all("test" in i for i in infos)
    assert venv.get_attr("n_steps", [1, 2]) == [2, 2]
    with pytest.raises(ValueError, match=r"\['dataset'\] are set by family 'redundant'"):
        make_family_vec_env("DUS-v0", ["redundant"], 1, dataset="digits")


def test_auto_threads_grow_with_the_batch_up_to_the_usable_cores() -> None:
    from dus_gym.batched import RUNS_PER_THREAD, batch_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    assert batch_threads("auto", 1) == 1
    assert batch_threads("auto", RUNS_PER_THREAD - 1) == 1
    assert batch_threads("auto", 2 * RUNS_PER_THREAD) == min(2, cores)
    assert batch_threads("auto", 1000 * RUNS_PER_THREAD) == cores
    assert batch_threads(3, 1) == 3 and batch_threads(None, 64) is None
    batch = BatchedTrainingRun([make_synthetic("tiny", seed=0)] * 3, RunConfig(base_batch=8, device="cpu"), SEEDS)
    assert batch.threads == 1
