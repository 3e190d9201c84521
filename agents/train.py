"""Train a sampler agent (PPO or A2C, Stable-Baselines3) on a DUS env.

    python agents/train.py --algo ppo --env-id DUS-v0 --num-envs 2 --total-timesteps 6000

One run writes one folder ``<output-dir>/<run_name>/`` (``run_name`` as in
CleanRL: ``{env_id}__{exp_name}__{seed}__{time}``) with:

- ``config.json``: every argument, the env keyword arguments, the instance
  sets, the algorithm's hyperparameters and the library versions
  (the format of :mod:`dus_gym.agent_io`);
- ``model.zip`` and ``vecnormalize.pkl`` (the observation statistics);
- ``logs/``: TensorBoard events and ``progress.csv`` (tags below);
- ``episodes.csv``: one row per training episode (return, final test metrics,
  mean quantities), the data of the learning curve;
- ``checkpoints/`` and ``eval/`` (``CheckpointCallback``, ``EvalCallback``).

TensorBoard tags: ``rollout/``, ``train/`` (SB3's own), ``dus/quantity/<m>``
(examples of modality m per iteration), ``dus/score/<m>`` (cumulative score
S_t), ``dus/val_branch_accuracy/<m>``, ``test/accuracy``, ``test/macro_f1``,
``test/loss``, ``test/branch_accuracy/<m>``, ``test/probe_accuracy/<m>``,
``test/imbalance_gap`` (the final test metrics of each finished episode),
``charts/episodic_return``, ``eval/`` (held-out instances).

Training episodes draw their instances from ``--instances`` (default the
``train`` set); ``EvalCallback`` uses the *last* ``--n-eval-instances`` of
``--eval-instances`` (a disjoint set, checked), so the first instances of that
set stay untouched for ``agents/evaluate.py``.

A bad flag, env id, env argument or ``--init-from`` folder is one error line
and exit status 2, before anything is written.
"""

from __future__ import annotations

import copy
import csv
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from dus_gym.agent_io import ALGOS, CONFIG_FILE, MODEL_FILE, VECNORMALIZE_FILE, agent_folder, read_run_config
from dus_gym.cli import json_object, parse_args, run, setting_up
from dus_gym.instances import (
    GENERAL_FAMILIES,
    SET_SIZES,
    check_disjoint,
    family_env_kwargs,
    instance_set,
    resolve_instances,
)

PROG = "agents/train.py"

# Defaults for a small budget (a few thousand env steps: a few hundred episodes of the
# registered length); agents/hyperparams/*.yml holds the same values for rl-zoo3.
DEFAULT_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": {
        "n_steps": 64, "batch_size": 64, "n_epochs": 10, "learning_rate": 5e-4, "gamma": 0.99,
        "gae_lambda": 0.95, "ent_coef": 0.01, "clip_range": 0.2, "policy_kwargs": {"net_arch": [64, 64]},
    },
    "a2c": {
        "n_steps": 16, "learning_rate": 7e-4, "gamma": 0.99, "gae_lambda": 0.95, "ent_coef": 0.01,
        "policy_kwargs": {"net_arch": [64, 64]},
    },
}


@dataclass
class Args:
    """Train a PPO or A2C sampler on a DUS env and save it as one run folder."""

    exp_name: str = "ppo"
    """the name of this experiment (part of the run name)"""
    algo: str = "ppo"
    """the algorithm: ppo or a2c"""
    env_id: str = "DUS-v0"
    """the registered env id (DUS-v0, DUS-Synthetic-v0)"""
    env_kwargs: str = "{}"
    """JSON object of env keyword arguments, e.g. '{"n_steps": 15, "reward_metric": "f1"}'"""
    instances: str = "train"
    """training instance set: train or FAMILY:train (e.g. shortcut:train), see dus_gym.instances"""
    eval_instances: str = "eval"
    """held-out instance set for EvalCallback: eval or FAMILY:eval; must be disjoint from --instances"""
    n_eval_instances: int = 8
    """EvalCallback uses the last this-many instances of the eval set (evaluate.py uses the first ones)"""
    num_envs: int = 2
    """number of parallel envs (SubprocVecEnv when > 1, one torch thread per worker)"""
    batched: int = 0
    """train on this many sub-envs whose training runs are one batched computation in this process
    (dus_gym's vector env, docs/batched.md) instead of --num-envs processes; 0: off"""
    families: list[str] = field(default_factory=list)
    """train on several instance families at once (dus_gym.instances; 'general' = all of GENERAL_FAMILIES),
    --batched sub-envs per family; each family's train set, EvalCallback on the last instances of its eval set"""
    start_method: str = "forkserver"
    """multiprocessing start method of SubprocVecEnv (forkserver and spawn are safe with CUDA)"""
    total_timesteps: int = 6000
    """total env steps (epochs of the inner training run) over all envs"""
    seed: int = 1
    """seed of the agent, the envs' instance draws and the batch orders"""
    init_from: str | None = None
    """continue training the model (and normalisation statistics) of this run folder (or pretrained:NAME, a
    shipped agent) instead of a new one"""
    normalize: bool = True
    """wrap the envs in VecNormalize (observations and rewards); its statistics are saved"""
    hyperparams: str = "{}"
    """JSON object of algorithm keyword arguments overriding the defaults (n_steps, learning_rate, ...)"""
    kickstart: str | None = None
    """before PPO/A2C, clone this built-in policy (e.g. gap, dus_h:2; dus_gym.policies): roll it out in
    the training envs for --kickstart-episodes episodes per sub-env, fit the policy to its actions and
    the value function to its returns, then train as usual (docs/agents.md)"""
    kickstart_episodes: int = 2
    """episodes per sub-env of the --kickstart policy's rollouts (they count towards timesteps_done)"""
    kickstart_updates: int = 1000
    """Adam steps (minibatches of 128 of the --kickstart rollouts) when fitting the policy to them"""
    uniform_prior: float = 0.0
    """start the policy centred on uniform sampling: level l of each modality gets the initial logit
    -C * (l - middle)**2 (discrete actions; 0: SB3's flat start). With C = 0.5 the middle level has
    probability 0.40 and levels beyond +-2 almost none, so a policy departs from uniform only where the
    reward pays for it (docs/agents.md); for continuous actions use policy_kwargs' log_std_init"""
    eval_freq: int = 1500
    """run EvalCallback every this many total env steps (0 turns it off)"""
    n_eval_episodes: int = 4
    """episodes per EvalCallback evaluation"""
    checkpoint_freq: int = 3000
    """save a checkpoint every this many total env steps (0 turns it off)"""
    output_dir: str = "runs"
    """folder under which the run folder is created"""
    run_dir: str | None = None
    """write the run to exactly this folder instead of <output-dir>/<run_name>"""
    device: str = "cpu"
    """torch device of the agent's networks (the envs choose their own with env_kwargs device)"""
    progress_bar: bool = True
    """show SB3's progress bar (needs rich and tqdm)"""
    verbose: int = 0
    """SB3 verbosity (0 quiet, 1 training tables on stdout)"""


def make_env(env_id: str, env_kwargs: dict[str, Any], torch_threads: int = 1) -> Callable[[], gym.Env[Any, Any]]:
    """A thunk building one monitored env; it runs inside the worker process."""

    def thunk() -> gym.Env[Any, Any]:
        import torch
        from stable_baselines3.common.monitor import Monitor

        import dus_gym  # noqa: F401  (registers the ids in a fresh worker)

        # Workers share the machine: one thread each keeps them from oversubscribing it.
        torch.set_num_threads(torch_threads)
        return Monitor(gym.make(env_id, **env_kwargs))

    return thunk


def make_vec_env(
    env_id: str,
    env_kwargs: dict[str, Any],
    num_envs: int,
    seed: int,
    start_method: str = "forkserver",
    batched: int = 0,
) -> Any:
    """``num_envs`` seeded copies of the env: a DummyVecEnv for one, a SubprocVecEnv for more;
    with ``batched`` > 0, that many sub-envs of the batched vector env (one process, monitored)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

    if batched < 0:
        raise ValueError(f"--batched must be >= 0 (0: off), got {batched}")
    if batched:
        from dus_gym.envs.sb3 import make_sb3_vec_env

        venv = VecMonitor(make_sb3_vec_env(env_id, batched, **env_kwargs))
        venv.seed(seed)
        return venv
    if num_envs < 1:
        raise ValueError(f"--num-envs must be >= 1, got {num_envs}")
    fns = [make_env(env_id, env_kwargs) for _ in range(num_envs)]
    vec = DummyVecEnv(fns) if num_envs == 1 else SubprocVecEnv(fns, start_method=start_method)
    vec.seed(seed)
    return vec


def make_family_envs(
    env_id: str, env_kwargs: dict[str, Any], families: Sequence[str], per_family: int, n_eval: int
) -> tuple[Any, Any]:
    """Training and monitoring envs over several families (``--families``): ``per_family`` batched
    sub-envs drawing each family's train set, and one sub-env per family cycling through the last
    ``n_eval`` instances of its eval set (the first ones stay for held-out evaluation)."""
    from stable_baselines3.common.vec_env import VecMonitor

    from dus_gym.envs.sb3 import ConcatVecEnv, make_family_vec_env, make_sb3_vec_env

    train = VecMonitor(make_family_vec_env(env_id, families, per_family, "train", **env_kwargs))
    monitors = []
    for family in families:
        kwargs = {**family_env_kwargs(family, "eval"), "instances": instance_set(f"{family}:eval")[-n_eval:]}
        monitors.append(make_sb3_vec_env(env_id, 1, **kwargs, **env_kwargs))
    return train, VecMonitor(ConcatVecEnv(monitors))


def _info_callback_class() -> type:
    from stable_baselines3.common.callbacks import BaseCallback

    class DUSInfoCallback(BaseCallback):
        """Logs the DUS ``info`` of every step under namespaced tags, and one CSV row per finished episode."""

        def __init__(
            self,
            modalities: Sequence[str],
            csv_path: Path,
            continue_from: Path | None = None,
            groups: Sequence[str] | None = None,
        ) -> None:
            super().__init__()
            self.continue_from = continue_from
            # Per-modality values are read by position: with --families the modality names differ
            # between families (a/b, pix/zer, ...); the labels are those of the first sub-env.
            self.modalities = list(modalities)
            self.groups = None if groups is None else list(groups)
            """the family of each sub-env (--families): a CSV column"""
            self.csv_path = csv_path
            self._quantities: dict[int, list[list[int]]] = {}
            self._file: Any = None
            self._writer: Any = None

        def _on_training_start(self) -> None:
            # A continued run starts its curve with the episodes of the run it continues.
            previous = self.continue_from.read_text() if self.continue_from and self.continue_from.is_file() else ""
            self._file = self.csv_path.open("w", newline="")
            self._writer = csv.writer(self._file)
            if previous:
                self._file.write(previous)
                return
            header = ["timesteps", "episode_return", "episode_length", "test_accuracy", "test_macro_f1"]
            header += [f"test_branch_accuracy_{m}" for m in self.modalities]
            header += [f"test_probe_accuracy_{m}" for m in self.modalities]
            header += [f"mean_quantity_{m}" for m in self.modalities]
            header += ["family"] if self.groups else []
            self._writer = csv.writer(self._file)
            self._writer.writerow(header)

        def _on_step(self) -> bool:
            for k, info in enumerate(self.locals["infos"]):
                q = info.get("quantities")
                if q is None:
                    continue
                self._quantities.setdefault(k, []).append(list(q))
                for m, name in enumerate(self.modalities):
                    self.logger.record_mean(f"dus/quantity/{name}", q[m])
                    if "scores" in info:
                        self.logger.record_mean(f"dus/score/{name}", info["scores"][m])
                    self.logger.record_mean(f"dus/val_branch_accuracy/{name}", info["val_branch_accuracy"][m])
                if "episode" in info:
                    self._end_episode(k, info)
            return True

        def _end_episode(self, k: int, info: dict[str, Any]) -> None:
            ep = info["episode"]
            self.logger.record_mean("charts/episodic_return", ep["r"])
            self.logger.record_mean("charts/episodic_length", ep["l"])
            quantities = np.asarray(self._quantities.pop(k, []), dtype=np.float64)
            test = info.get("test")
            row: list[Any] = [self.num_timesteps, ep["r"], ep["l"]]
            if test is None:  # diverged: no test metrics
                row += [""] * (2 + 2 * len(self.modalities))
            else:
                for key in ("accuracy", "macro_f1", "loss", "imbalance_gap"):
                    self.logger.record_mean(f"test/{key}", test[key])
                branch, probe = list(test["branch_accuracy"].values()), list(test["probe_accuracy"].values())
                for m, name in enumerate(self.modalities):
                    self.logger.record_mean(f"test/branch_accuracy/{name}", branch[m])
                    self.logger.record_mean(f"test/probe_accuracy/{name}", probe[m])
                row += [test["accuracy"], test["macro_f1"], *branch, *probe]
            row += list(quantities.mean(axis=0)) if len(quantities) else [""] * len(self.modalities)
            row += [self.groups[k]] if self.groups else []
            self._writer.writerow(row)
            self._file.flush()

        def _on_training_end(self) -> None:
            if self._file is not None:
                self._file.close()

    return DUSInfoCallback


def plot_learning_curve(run_dir: str | Path, window: int = 20) -> Path:
    """Draw ``learning_curve.png`` from ``episodes.csv`` (and ``eval/evaluations.npz`` when there).

    Left: episode return (dots) and its running mean over ``window`` episodes,
    with the held-out EvalCallback means. Right: the running mean of the final
    test accuracy of the training episodes, and of the share of examples given
    to each modality.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    with (run_dir / "episodes.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["test_accuracy"] != ""]
    if not rows:
        raise ValueError(f"{run_dir / 'episodes.csv'}: no finished episode to plot")
    steps = np.array([float(r["timesteps"]) for r in rows])

    def smooth(values: np.ndarray) -> np.ndarray:
        w = min(window, len(values))
        return np.convolve(values, np.ones(w) / w, mode="valid")

    ret = np.array([float(r["episode_return"]) for r in rows])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(steps, ret, ".", alpha=0.25, label="episode return")
    left.plot(steps[len(steps) - len(smooth(ret)) :], smooth(ret), label=f"running mean ({window} episodes)")
    evals = run_dir / "eval" / "evaluations.npz"
    if evals.is_file():
        data = np.load(evals)
        left.errorbar(data["timesteps"], data["results"].mean(axis=1), yerr=data["results"].std(axis=1), fmt="o-",
                      label="held-out (EvalCallback)")
    left.set_xlabel("timesteps")
    left.set_ylabel("return = val. accuracy gain")
    left.legend(fontsize=7)
    acc = np.array([float(r["test_accuracy"]) for r in rows])
    right.plot(steps[len(steps) - len(smooth(acc)) :], smooth(acc), label="test accuracy (fused)")
    quantity_cols = [k for k in rows[0] if k.startswith("mean_quantity_")]
    q = np.array([[float(r[k]) for k in quantity_cols] for r in rows])
    for j, k in enumerate(quantity_cols):
        share = q[:, j] / q.sum(axis=1)
        right.plot(steps[len(steps) - len(smooth(share)) :], smooth(share), "--",
                   label=f"share of examples: {k.removeprefix('mean_quantity_')}")
    right.set_xlabel("timesteps")
    right.set_ylim(0, 1)
    right.legend(fontsize=7)
    fig.suptitle(run_dir.name, fontsize=9)
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def center_on_uniform(policy: Any, strength: float) -> None:
    """Bias a new policy's action logits towards the middle (uniform) level of each modality.

    SB3 initialises ``action_net`` with orthogonal weights of gain 0.01, so the initial logits are
    almost exactly its bias: setting the bias of level ``l`` to ``-strength * (l - (L - 1) / 2) ** 2``
    makes the start a discretised Gaussian around uniform (per modality, ``L`` levels) whose mode,
    what ``deterministic=True`` plays, is uniform until training moves it.

    Args:
        policy: an SB3 ``ActorCriticPolicy`` on a ``MultiDiscrete`` action space.
        strength: ``C >= 0``; 0 leaves the policy as it is.
    """
    import torch
    from gymnasium import spaces

    if not (strength >= 0 and np.isfinite(strength)):
        raise ValueError(f"uniform prior strength {strength!r}: expected a finite number >= 0")
    space = policy.action_space
    if not isinstance(space, spaces.MultiDiscrete):
        raise ValueError(
            f"--uniform-prior needs discrete actions (MultiDiscrete), the env has {space}; for continuous "
            "actions the mean already starts at uniform: narrow it with --hyperparams "
            "'{\"policy_kwargs\": {\"log_std_init\": -1}}'"
        )
    bias = [-strength * (np.arange(n) - (n - 1) / 2) ** 2 for n in space.nvec]
    with torch.no_grad():
        policy.action_net.bias.copy_(torch.as_tensor(np.concatenate(bias), dtype=policy.action_net.bias.dtype))


KICKSTART_SMOOTHING = 0.1
"""Label smoothing of the cloned actions: a cloned policy keeps some probability on every level, so
that the RL updates after it can still move it (a one-hot fit leaves PPO's ratios no gradient)."""


def _clone_loss(policy: Any, obs: Any, actions: Any) -> Any:
    """Cross-entropy of the policy's per-modality categoricals against the teacher's levels, smoothed
    by :data:`KICKSTART_SMOOTHING` towards all levels, summed over modalities, mean over the samples."""
    loss: Any = 0.0
    for k, categorical in enumerate(policy.get_distribution(obs).distribution):  # one per modality
        log_p = categorical.logits  # normalised: log-probabilities
        nll = -log_p.gather(1, actions[:, k : k + 1].long()).squeeze(1)
        loss = loss + (1 - KICKSTART_SMOOTHING) * nll + KICKSTART_SMOOTHING * -log_p.mean(dim=1)
    return loss.mean()


def kickstart(
    model: Any, env: Any, teacher: Any, episodes: int, updates: int, seed: int, episode_steps: int
) -> dict[str, Any]:
    """Fit a new model's policy to a built-in policy's actions (smoothed cross-entropy,
    :func:`_clone_loss`), and its value function to that policy's returns, on rollouts of the policy
    in the training envs (behaviour cloning before RL; the value fit keeps the first PPO updates from
    being driven by an untrained critic).

    Args:
        model: a new SB3 PPO or A2C model on ``env``, with discrete (``MultiDiscrete``) actions.
        env: its training ``VecEnv``, VecNormalize'd or not; VecNormalize's statistics take in the
            rollouts, and the samples are normalised with the final statistics.
        teacher: a built-in policy (:func:`dus_gym.policies.make_policy`) reading raw observations.
        episodes: whole episodes per sub-env (``episodes * episode_steps`` vector steps).
        updates: Adam steps (learning rate 1e-3) on minibatches of 128 samples, in passes over them.
        seed: seed of the minibatch order.
        episode_steps: the envs' episode length (every sub-env's episodes end together).

    Returns:
        ``{"samples": env steps, "agreement": fraction in [0, 1] of samples where the policy's mode
        is the teacher's action, "nll": final mean negative log-likelihood per sample}``.
    """
    import torch
    from gymnasium import spaces
    from stable_baselines3.common.vec_env import VecNormalize

    if not isinstance(model.policy.action_space, spaces.MultiDiscrete):
        raise ValueError(
            f"--kickstart clones discrete actions (MultiDiscrete, the env's default action_type); the env has "
            f"{model.policy.action_space}"
        )
    normalize = env if isinstance(env, VecNormalize) else None
    n_env, n_steps = env.num_envs, episodes * episode_steps
    obs_raw, actions, rewards, dones = [], [], [], []
    current = env.reset()
    for _ in range(n_steps):
        raw = normalize.get_original_obs() if normalize else current
        action, _ = teacher.predict(raw, deterministic=True)
        current, reward, done, _ = env.step(action)
        obs_raw.append(np.array(raw))
        actions.append(np.asarray(action))
        rewards.append(np.array(normalize.get_original_reward() if normalize else reward))
        dones.append(done)
    obs: Any = np.stack(obs_raw)  # (T, n_env, obs_dim)
    if normalize:
        obs = normalize.normalize_obs(obs)
    r = np.stack(rewards).astype(np.float64)
    if normalize:
        r = normalize.normalize_reward(r)
    gamma = float(model.gamma)
    returns = np.zeros_like(r)
    running = np.zeros(n_env)
    for t in range(n_steps - 1, -1, -1):  # Monte Carlo returns of whole episodes
        running = r[t] + gamma * running * (1.0 - np.asarray(dones[t], dtype=np.float64))
        returns[t] = running
    policy = model.policy
    device = policy.device
    x = torch.as_tensor(obs.reshape(n_steps * n_env, -1), dtype=torch.float32, device=device)
    a = torch.as_tensor(np.stack(actions).reshape(n_steps * n_env, -1), device=device)
    y = torch.as_tensor(returns.reshape(-1), dtype=torch.float32, device=device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    policy.set_training_mode(True)
    batches: list[torch.Tensor] = []
    for _ in range(updates):
        if not batches:  # a new pass over the samples in a new order
            batches = list(torch.randperm(len(x), generator=generator).split(128))
        idx = batches.pop()
        loss = _clone_loss(policy, x[idx], a[idx]) + 0.5 * torch.nn.functional.mse_loss(
            policy.predict_values(x[idx]).flatten(), y[idx]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.set_training_mode(False)
    with torch.no_grad():
        mode = policy.get_distribution(x).mode()
        _, log_prob, _ = policy.evaluate_actions(x, a)
    agreement = float((mode.reshape(a.shape) == a).all(dim=1).float().mean())
    return {"samples": int(n_steps * n_env), "agreement": agreement, "nll": float(-log_prob.mean())}


def main(args: Args) -> Path:
    """Train, save the run folder, and return its path."""
    import stable_baselines3
    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import VecNormalize

    import dus_gym
    from dus_gym.policies import make_policy

    with setting_up():
        if args.algo not in ALGOS:
            raise ValueError(f"--algo {args.algo!r}: expected one of {list(ALGOS)}")
        env_kwargs = json_object(args.env_kwargs, "--env-kwargs")
        overrides = json_object(args.hyperparams, "--hyperparams")
        if "instances" in env_kwargs:
            raise ValueError("--env-kwargs: give the instance sets with --instances and --eval-instances, not here")
        hyperparams = {**DEFAULT_HYPERPARAMS[args.algo], **overrides}

        families = list(GENERAL_FAMILIES) if args.families == ["general"] else list(args.families)
        if families:
            for family in families:
                family_env_kwargs(family)  # an unknown family fails here
            if args.batched < 1:
                raise ValueError("--families: give --batched N (N sub-envs per family)")
            clash = sorted({"dataset", "views", "dataset_kwargs"} & set(env_kwargs))
            if clash:
                raise ValueError(f"--env-kwargs: {clash} come from each family with --families; leave them out")
        if not (args.uniform_prior >= 0 and np.isfinite(args.uniform_prior)):
            raise ValueError(f"--uniform-prior {args.uniform_prior}: expected a finite number >= 0")
        if args.uniform_prior and args.init_from:
            raise ValueError("--uniform-prior shapes a new policy; --init-from continues one: give one of them")
        if args.kickstart is not None:
            if args.init_from or args.uniform_prior:
                raise ValueError("--kickstart starts a new policy from a built-in one; leave out --init-from and "
                                 "--uniform-prior")
            if args.kickstart_episodes < 1 or args.kickstart_updates < 1:
                raise ValueError(
                    f"--kickstart-episodes {args.kickstart_episodes}, --kickstart-updates {args.kickstart_updates}: "
                    "expected >= 1 each"
                )
            first = family_env_kwargs(families[0]) if families else {"instances": args.instances}
            teacher_env = gym.make(args.env_id, **env_kwargs, **first)
            teacher = make_policy(args.kickstart, teacher_env)  # an unknown policy fails here
            # The envs' own episode length (the rollouts are whole episodes): the env's default unless
            # env_kwargs set one, read from the env rather than assumed.
            episode_steps = int(teacher_env.unwrapped.n_steps)  # type: ignore[attr-defined]
            teacher_env.close()  # the policy keeps only its action rule and observation layout
        train_set = resolve_instances(args.instances)
        eval_spec = args.eval_instances
        n_eval_set = SET_SIZES["eval"] if ":" in eval_spec or eval_spec == "eval" else None
        if not 1 <= args.n_eval_instances <= (n_eval_set or 0) // 2:
            raise ValueError(
                f"--n-eval-instances {args.n_eval_instances}: expected 1 .. {(n_eval_set or 0) // 2} "
                f"(at most half of the {eval_spec!r} set, whose first half stays for agents/evaluate.py)"
            )
        monitor_set = instance_set(eval_spec)[-args.n_eval_instances :]
        check_disjoint(train_set, monitor_set)
        init_from = None
        if args.init_from:
            init_from = agent_folder(args.init_from, check=True) or Path(args.init_from)
            start_config = read_run_config(init_from)
            if start_config["algo"] != args.algo:
                raise ValueError(
                    f"--init-from {args.init_from}: its algo is {start_config['algo']!r}, not --algo {args.algo!r}"
                )
        # The envs are built in worker processes, where a bad env id or argument is a dead worker, not a
        # message: build one here first (cheap: the data and the model come at its first reset).
        for family in families:
            gym.make(args.env_id, **env_kwargs, **family_env_kwargs(family)).close()
        if not families:
            gym.make(args.env_id, **env_kwargs, instances=args.instances).close()

    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.output_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)

    # Seeding: the agent, the envs' instance and batch-order draws, torch and numpy of this process.
    set_random_seed(args.seed)
    # One torch thread: separate envs share the cores, and the batched env's runs scope their
    # own threads (RunConfig.threads); the agent's small networks gain nothing from more.
    torch.set_num_threads(1)

    if families:
        train_env, eval_env = make_family_envs(args.env_id, env_kwargs, families, args.batched, args.n_eval_instances)
        train_env.seed(args.seed)
        eval_env.seed(args.seed + 10_000)
    else:
        train_env = make_vec_env(
            args.env_id, {**env_kwargs, "instances": args.instances}, args.num_envs, args.seed, args.start_method,
            args.batched,
        )
        eval_env = make_vec_env(args.env_id, {**env_kwargs, "instances": monitor_set}, 1, args.seed + 10_000)
    if args.normalize:
        if init_from and (init_from / VECNORMALIZE_FILE).is_file():
            train_env = VecNormalize.load(str(init_from / VECNORMALIZE_FILE), train_env)
        else:
            train_env = VecNormalize(train_env, norm_obs=True, norm_reward=True, gamma=hyperparams.get("gamma", 0.99))
        # EvalCallback copies the training statistics into it before each evaluation.
        eval_env = VecNormalize(eval_env, norm_obs=True, norm_reward=False, training=False)
    modalities = train_env.get_attr("modalities")[0]

    config = {
        **asdict(args),
        "run_name": run_name,
        "env_kwargs": env_kwargs,
        "train_instances": [f"{f}:train" for f in families] if families else args.instances,
        "eval_monitor_instances": monitor_set if not families else {
            f: instance_set(f"{f}:eval")[-args.n_eval_instances :] for f in families
        },
        "families": families,
        "modalities": modalities,
        "hyperparameters": hyperparams,
        "init_from": args.init_from,  # when set, the model keeps that run's hyperparameters
        "versions": {
            "dus_gym": dus_gym.__version__, "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__, "gymnasium": gym.__version__,
        },
        "command": " ".join(sys.argv),
    }
    (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    algo_cls: Any = {"ppo": PPO, "a2c": A2C}[args.algo]
    # A deep copy: SB3 adds entries (A2C's optimizer class) to the policy_kwargs it is given.
    if init_from:
        model = algo_cls.load(init_from / MODEL_FILE, env=train_env, device=args.device)
        model.set_random_seed(args.seed)
    else:
        model = algo_cls(
            "MlpPolicy", train_env, seed=args.seed, device=args.device, verbose=args.verbose,
            **copy.deepcopy(hyperparams),
        )
        if args.uniform_prior:
            center_on_uniform(model.policy, args.uniform_prior)
    kickstart_report = None
    if args.kickstart is not None:
        kickstart_report = kickstart(
            model, train_env, teacher, args.kickstart_episodes, args.kickstart_updates, args.seed, episode_steps,
        )
        config["kickstart_report"] = kickstart_report
        print(
            f"kickstart: cloned {args.kickstart} from {kickstart_report['samples']} steps; the policy's mode "
            f"plays its action on {100 * kickstart_report['agreement']:.1f}% of them"
        )
    model.set_logger(configure(str(run_dir / "logs"), ["csv", "tensorboard"] + (["stdout"] if args.verbose else [])))

    previous_csv = init_from / "episodes.csv" if init_from else None
    groups = [f for f in families for _ in range(args.batched)] if families else None
    callbacks: list[Any] = [_info_callback_class()(modalities, run_dir / "episodes.csv", previous_csv, groups)]
    per_env = train_env.num_envs  # callbacks count vector steps of all the sub-envs at once
    if args.checkpoint_freq > 0:
        callbacks.append(
            CheckpointCallback(
                max(args.checkpoint_freq // per_env, 1), str(run_dir / "checkpoints"), name_prefix=args.algo,
                save_vecnormalize=args.normalize,
            )
        )
    if args.eval_freq > 0:
        callbacks.append(
            EvalCallback(
                eval_env, n_eval_episodes=args.n_eval_episodes, eval_freq=max(args.eval_freq // per_env, 1),
                log_path=str(run_dir / "eval"), best_model_save_path=None, deterministic=True,
            )
        )
    start = time.time()
    model.learn(
        args.total_timesteps, callback=CallbackList(callbacks), progress_bar=args.progress_bar,
        reset_num_timesteps=not args.init_from,
    )
    model.save(run_dir / MODEL_FILE)
    if args.normalize:
        train_env.save(str(run_dir / VECNORMALIZE_FILE))
    config["train_seconds"] = round(time.time() - start, 1)
    config["timesteps_done"] = int(model.num_timesteps) + (kickstart_report["samples"] if kickstart_report else 0)
    (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    train_env.close()
    eval_env.close()
    plot_learning_curve(run_dir)
    print(f"run folder: {run_dir} ({config['train_seconds']} s)")
    return run_dir


if __name__ == "__main__":
    run(lambda: main(parse_args(Args, prog=PROG)), PROG)
