"""The run owns the step: StepReport, report(), the episode length, threads, and the env's edges."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import unwrapped

import dus_gym
from dus_gym import DUSEnv, RunConfig, TrainingRun
from dus_gym.data import make_synthetic
from dus_gym.run import resolve_device, torch_threads


def _run(tiny_dataset, **config: Any) -> TrainingRun:
    return TrainingRun(tiny_dataset, RunConfig(base_batch=8, device="cpu", **config), 0, 0, 0)


# -- the run's own step -----------------------------------------------------------------


def test_step_report_matches_the_monitor_and_a_separate_evaluation(tiny_dataset) -> None:
    run = _run(tiny_dataset)
    first = run.step([12, 4], iterations=3)
    second = run.step([4, 12], iterations=2)
    assert run.steps == 2 and run.iterations == 5
    np.testing.assert_array_equal(second.counts, [4, 12])
    assert second.iterations == 2 and second.finite
    # S_t, s_t and d_t are the monitor's, read in the same transfer.
    np.testing.assert_allclose(second.scores, run.monitor.cumulative.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(second.last_scores, run.monitor.last.numpy(), rtol=0, atol=0)
    # torch's float32 mean against numpy's: 4 ulps at 0.5 allow either summation order.
    np.testing.assert_allclose(second.discrepancy, second.scores - second.scores.mean(), atol=2.5e-7)
    # The trend is the change of the per-modality training loss since the previous step (from 0 at first).
    np.testing.assert_allclose(first.branch_loss_trend, first.branch_loss)
    np.testing.assert_allclose(second.branch_loss_trend, second.branch_loss - first.branch_loss)
    # Validation metrics equal a fresh evaluation of the same model.
    ev = run.evaluate("val")
    assert second.validation.accuracy == pytest.approx(ev.accuracy)
    assert second.validation.branch_loss == pytest.approx(ev.branch_loss)


def test_default_iterations_are_one_epoch(tiny_dataset) -> None:
    run = _run(tiny_dataset)
    assert run.step([8, 8]).iterations == run.iterations_per_epoch


def test_report_gives_test_metrics_with_probes_by_modality_name(tiny_dataset) -> None:
    run = _run(tiny_dataset)
    run.step([8, 8], iterations=5)
    rep = run.report("test")
    names = tiny_dataset.modality_names
    assert list(rep["branch_accuracy"]) == names and list(rep["probe_accuracy"]) == names
    ev = run.evaluate("test")
    assert rep["accuracy"] == ev.accuracy
    assert rep["imbalance_gap"] == pytest.approx(max(ev.branch_accuracy) - min(ev.branch_accuracy))
    assert "probe_accuracy" not in run.report("val", probe=False)


def test_plain_loop_with_dus_h_equals_the_env_with_the_same_counts(tiny_env_kwargs) -> None:
    """A Gymnasium-free loop given the env's counts runs the same training, step for step."""
    env = DUSEnv(**tiny_env_kwargs)
    env.reset(seed=3)
    inst = env.instance  # the same instance again at the reset below
    run = TrainingRun(
        env.source.load(inst["data_seed"]), env.config, inst["split_seed"], inst["init_seed"], inst["sample_seed"]
    )
    policy = dus_gym.make_policy("dus_h:2", env)
    obs = env.reset(seed=3)[0]
    for _ in range(3):
        obs, _, _, _, info = env.step(policy.predict(obs)[0])
        report = run.step(info["quantities"], tiny_env_kwargs["iterations_per_step"])
        np.testing.assert_array_equal(info["scores"], report.scores)
        np.testing.assert_array_equal(info["branch_train_loss"], report.branch_loss)
        assert info["val_accuracy"] == report.validation.accuracy
    assert info["test"] == run.report("test")


def test_a_diverged_run_refuses_to_train_on(tiny_dataset) -> None:
    run = _run(tiny_dataset, lr=1e12)
    report = run.step([8, 8], iterations=20)
    assert not report.finite
    with pytest.raises(RuntimeError, match="diverged at step 1"):
        run.step([8, 8], iterations=1)


# -- threads ------------------------------------------------------------------------------


def test_run_scopes_torch_threads_and_restores_the_callers(tiny_dataset) -> None:
    seen: list[int] = []
    torch.set_num_threads(2)
    try:
        run = _run(tiny_dataset)
        assert run.threads == 1  # "auto": the small default models train on one thread
        original = run.method.train_iteration

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(torch.get_num_threads())
            return original(*args, **kwargs)

        run.method.train_iteration = spy  # type: ignore[method-assign]
        run.step([8, 8], iterations=2)
        assert seen == [1, 1]
        assert torch.get_num_threads() == 2  # the caller's setting is back
        assert _run(tiny_dataset, threads=None).threads is None
        assert _run(tiny_dataset, threads=2).threads == 2
    finally:
        torch.set_num_threads(1)


def test_torch_threads_none_leaves_the_setting() -> None:
    before = torch.get_num_threads()
    with torch_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("threads", [0, -1, "many", 1.5])
def test_bad_thread_counts_are_refused(threads) -> None:
    with pytest.raises(ValueError, match=r"RunConfig.threads"):
        RunConfig(threads=threads)


# -- the episode length has one owner: n_steps ------------------------------------------------


@pytest.mark.parametrize("n_steps", [7, 40])
def test_gym_make_episodes_of_any_length_end_with_test_metrics(n_steps: int) -> None:
    env = gym.make(
        "DUS-Synthetic-v0", dataset="synthetic:tiny", n_steps=n_steps, iterations_per_step=1, base_batch=8,
        device="cpu",
    )
    env.reset(seed=0)
    uniform = unwrapped(env).rule.uniform_action
    for k in range(1, n_steps + 1):
        _, _, terminated, truncated, info = env.step(uniform)
        assert not terminated
        assert truncated == (k == n_steps), f"step {k} of {n_steps}"
    assert set(info["test"]) >= {"accuracy", "branch_accuracy", "probe_accuracy"}


def test_registered_ids_leave_the_length_to_the_env() -> None:
    for env_id in dus_gym.ENV_IDS:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps is None
        assert "n_steps" not in spec.kwargs  # the env's own default, dus_gym.EPISODE_STEPS
    assert DUSEnv(dataset="synthetic:tiny", device="cpu").n_steps == dus_gym.EPISODE_STEPS


def test_max_episode_steps_still_cuts_from_outside() -> None:
    env = gym.make("DUS-Synthetic-v0", dataset="synthetic:tiny", iterations_per_step=1, base_batch=8,
                   device="cpu", max_episode_steps=2)
    env.reset(seed=0)
    env.step(unwrapped(env).rule.uniform_action)
    *_, truncated, info = env.step(unwrapped(env).rule.uniform_action)
    assert truncated and "test" not in info  # a TimeLimit cut, as documented; n_steps sets the length


# -- edges ---------------------------------------------------------------------------------


def test_step_after_the_end_is_refused(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs)
    env.reset(seed=0)
    for _ in range(tiny_env_kwargs["n_steps"]):
        env.step(np.array([4, 4]))
    with pytest.raises(RuntimeError, match=r"after the episode ended \(truncated after n_steps=3 steps\).*reset"):
        env.step(np.array([4, 4]))
    env.reset(seed=0)
    env.step(np.array([4, 4]))  # a reset starts over


def test_step_after_divergence_is_refused(tiny_env_kwargs) -> None:
    env = DUSEnv(**tiny_env_kwargs, lr=1e12)
    env.reset(seed=0)
    terminated = False
    for _ in range(3):
        *_, terminated, _, info = env.step(np.array([4, 4]))
        if terminated:
            break
    assert terminated and info["diverged"]
    with pytest.raises(RuntimeError, match=r"diverged.*reset"):
        env.step(np.array([4, 4]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "digits", "views": ["pix"]}, r"views=\['pix'\].*at least two modalities"),
        ({"dataset": "digits", "views": ["pix", "pix"]}, r"\['pix'\] named more than once"),
        ({"dataset": "digits", "views": "pix"}, r"views='pix': expected a list"),
        ({"device": "nosuch"}, r"device 'nosuch': not a torch device"),
        ({"run_config": {"lr": 0.1}}, r"run_config: \['lr'\] are env arguments; pass them as DUSEnv\(lr=\.\.\.\)"),
        ({"n_steps": 0}, r"n_steps=0: expected an integer >= 1"),
    ],
)
def test_bad_settings_fail_at_make(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        gym.make("DUS-v0", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_cuda_fails_at_make() -> None:
    with pytest.raises(ValueError, match=r"device 'cuda': this machine has no CUDA device"):
        gym.make("DUS-v0", device="cuda")
    with pytest.raises(ValueError, match="no CUDA"):
        resolve_device("cuda:0")


class _EnvContext(dict):
    """What Ray RLlib hands an env class: a dict of the env config with worker attributes."""

    worker_index = 1
    vector_index = 0
    num_workers = 2


def test_env_class_takes_one_config_mapping_as_rllib_calls_it(tiny_env_kwargs) -> None:
    env = DUSEnv(_EnvContext(tiny_env_kwargs))
    assert env.n_steps == tiny_env_kwargs["n_steps"] and env.config.base_batch == 8
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    with pytest.raises(ValueError, match=r"unknown arguments \['colour'\]"):
        DUSEnv({"colour": 1})
    with pytest.raises(ValueError, match=r"got \['n_steps'\] beside it"):
        DUSEnv(tiny_env_kwargs, n_steps=5)


def test_synthetic_data_kwargs_with_a_dataset_object_are_refused() -> None:
    with pytest.raises(ValueError, match="only synthetic datasets given by name"):
        DUSEnv(make_synthetic("tiny", seed=0), dataset_kwargs={"shortcut_rho": 0.5})


def test_importing_the_run_loads_neither_the_env_nor_the_policies() -> None:
    code = (
        "import sys, dus_gym.run, dus_gym.heuristic; "
        "print(sorted(m for m in ('dus_gym.envs', 'dus_gym.policies', 'dus_gym.oracle', 'stable_baselines3') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert dus_gym.DUSEnv is DUSEnv  # loaded on first use
