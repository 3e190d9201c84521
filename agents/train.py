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
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

if __package__ in (None, ""):  # run as a file (python agents/train.py): import agents/ from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.defaults import DEFAULT_HYPERPARAMS, NUM_ENVS
from agents.kickstart import center_on_uniform, kickstart
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
from dus_gym.run import resolve_device

__all__ = ["DEFAULT_HYPERPARAMS", "Args", "center_on_uniform", "kickstart", "main", "make_env", "make_vec_env"]

PROG = "agents/train.py"


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
    num_envs: int = NUM_ENVS
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



@dataclass
class _Setup:
    """What :func:`main` resolves from the flags before it writes anything."""

    env_kwargs: dict[str, Any]
    hyperparams: dict[str, Any]
    families: list[str]
    monitor_set: list[Any]
    """the instances EvalCallback plays (without --families)"""
    init_from: Path | None
    teacher: Any = None
    """the --kickstart policy"""
    episode_steps: int = 0
    """the envs' episode length (--kickstart rolls out whole episodes)"""


def _set_up(args: Args) -> _Setup:
    """Check every flag and name, build the --kickstart policy and one env per setting (a bad env id
    or argument would otherwise be a dead worker process, not a message); raises ValueError & co."""
    if args.algo not in DEFAULT_HYPERPARAMS:  # the SB3 algorithms; the other ALGOS have their own scripts
        raise ValueError(f"--algo {args.algo!r}: expected one of {list(DEFAULT_HYPERPARAMS)} (agents/ppo_batched.py "
                         f"and agents/cem_residual.py train the others of {list(ALGOS)})")
    env_kwargs = json_object(args.env_kwargs, "--env-kwargs")
    overrides = json_object(args.hyperparams, "--hyperparams")
    if "instances" in env_kwargs:
        raise ValueError("--env-kwargs: give the instance sets with --instances and --eval-instances, not here")
    hyperparams = {**DEFAULT_HYPERPARAMS[args.algo], **overrides}
    families = _families(args, env_kwargs)
    setup = _Setup(env_kwargs, hyperparams, families, [], None)
    _check_start(args, setup)
    train_set = resolve_instances(args.instances)
    eval_spec = args.eval_instances
    n_eval_set = SET_SIZES["eval"] if ":" in eval_spec or eval_spec == "eval" else None
    if not 1 <= args.n_eval_instances <= (n_eval_set or 0) // 2:
        raise ValueError(
            f"--n-eval-instances {args.n_eval_instances}: expected 1 .. {(n_eval_set or 0) // 2} "
            f"(at most half of the {eval_spec!r} set, whose first half stays for agents/evaluate.py)"
        )
    setup.monitor_set = instance_set(eval_spec)[-args.n_eval_instances :]
    check_disjoint(train_set, setup.monitor_set)
    if args.init_from:
        setup.init_from = agent_folder(args.init_from, check=True) or Path(args.init_from)
        start_config = read_run_config(setup.init_from)
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
    return setup


def _families(args: Args, env_kwargs: dict[str, Any]) -> list[str]:
    """``--families`` (``general``: all of GENERAL_FAMILIES), checked against the other flags."""
    families = list(GENERAL_FAMILIES) if args.families == ["general"] else list(args.families)
    if families:
        for family in families:
            family_env_kwargs(family)  # an unknown family fails here
        if args.batched < 1:
            raise ValueError("--families: give --batched N (N sub-envs per family)")
        clash = sorted({"dataset", "views", "dataset_kwargs"} & set(env_kwargs))
        if clash:
            raise ValueError(f"--env-kwargs: {clash} come from each family with --families; leave them out")
    return families


def _check_start(args: Args, setup: _Setup) -> None:
    """Check how the policy starts (--uniform-prior, --init-from, --kickstart); build the --kickstart policy."""
    from dus_gym.policies import make_policy

    if not (args.uniform_prior >= 0 and np.isfinite(args.uniform_prior)):
        raise ValueError(f"--uniform-prior {args.uniform_prior}: expected a finite number >= 0")
    if args.uniform_prior and args.init_from:
        raise ValueError("--uniform-prior shapes a new policy; --init-from continues one: give one of them")
    if args.kickstart is None:
        return
    if args.init_from or args.uniform_prior:
        raise ValueError("--kickstart starts a new policy from a built-in one; leave out --init-from and "
                         "--uniform-prior")
    if args.kickstart_episodes < 1 or args.kickstart_updates < 1:
        raise ValueError(
            f"--kickstart-episodes {args.kickstart_episodes}, --kickstart-updates {args.kickstart_updates}: "
            "expected >= 1 each"
        )
    first = family_env_kwargs(setup.families[0]) if setup.families else {"instances": args.instances}
    teacher_env = gym.make(args.env_id, **setup.env_kwargs, **first)
    setup.teacher = make_policy(args.kickstart, teacher_env)  # an unknown policy fails here
    # The envs' own episode length (the rollouts are whole episodes): the env's default unless
    # env_kwargs set one, read from the env rather than assumed.
    setup.episode_steps = int(teacher_env.unwrapped.n_steps)  # type: ignore[attr-defined]
    teacher_env.close()  # the policy keeps only its action rule and observation layout


def _make_envs(args: Args, setup: _Setup) -> tuple[Any, Any]:
    """The training envs and EvalCallback's (VecNormalize'd with --normalize, the training statistics
    continued from --init-from's when it has them)."""
    from stable_baselines3.common.vec_env import VecNormalize

    env_kwargs, init_from = setup.env_kwargs, setup.init_from
    if setup.families:
        train_env, eval_env = make_family_envs(
            args.env_id, env_kwargs, setup.families, args.batched, args.n_eval_instances
        )
        train_env.seed(args.seed)
        eval_env.seed(args.seed + 10_000)
    else:
        train_env = make_vec_env(
            args.env_id, {**env_kwargs, "instances": args.instances}, args.num_envs, args.seed, args.start_method,
            args.batched,
        )
        eval_env = make_vec_env(args.env_id, {**env_kwargs, "instances": setup.monitor_set}, 1, args.seed + 10_000)
    if args.normalize:
        if init_from and (init_from / VECNORMALIZE_FILE).is_file():
            train_env = VecNormalize.load(str(init_from / VECNORMALIZE_FILE), train_env)
        else:
            gamma = setup.hyperparams.get("gamma", 0.99)
            train_env = VecNormalize(train_env, norm_obs=True, norm_reward=True, gamma=gamma)
        # EvalCallback copies the training statistics into it before each evaluation.
        eval_env = VecNormalize(eval_env, norm_obs=True, norm_reward=False, training=False)
    return train_env, eval_env


def _run_config(args: Args, setup: _Setup, run_name: str, modalities: Sequence[str]) -> dict[str, Any]:
    """``config.json`` of the run (:mod:`dus_gym.agent_io`'s format)."""
    import stable_baselines3
    import torch

    import dus_gym

    families = setup.families
    return {
        **asdict(args),
        "run_name": run_name,
        "env_kwargs": setup.env_kwargs,
        "train_instances": [f"{f}:train" for f in families] if families else args.instances,
        "eval_monitor_instances": setup.monitor_set if not families else {
            f: instance_set(f"{f}:eval")[-args.n_eval_instances :] for f in families
        },
        "families": families,
        "modalities": modalities,
        "hyperparameters": setup.hyperparams,
        "init_from": args.init_from,  # when set, the model keeps that run's hyperparameters
        "versions": {
            "dus_gym": dus_gym.__version__, "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__, "gymnasium": gym.__version__,
        },
        "command": " ".join(sys.argv),
    }


def _make_model(args: Args, setup: _Setup, train_env: Any) -> Any:
    """A new PPO or A2C model (centred on uniform with --uniform-prior), or --init-from's."""
    from stable_baselines3 import A2C, PPO

    algo_cls: Any = {"ppo": PPO, "a2c": A2C}[args.algo]
    device = resolve_device(args.device)
    if setup.init_from:
        model = algo_cls.load(setup.init_from / MODEL_FILE, env=train_env, device=device)
        model.set_random_seed(args.seed)
        return model
    # A deep copy: SB3 adds entries (A2C's optimizer class) to the policy_kwargs it is given.
    model = algo_cls(
        "MlpPolicy", train_env, seed=args.seed, device=device, verbose=args.verbose,
        **copy.deepcopy(setup.hyperparams),
    )
    if args.uniform_prior:
        center_on_uniform(model.policy, args.uniform_prior)
    return model


def _callbacks(args: Args, setup: _Setup, run_dir: Path, train_env: Any, eval_env: Any, modalities: Any) -> Any:
    """episodes.csv and the TensorBoard tags; checkpoints and EvalCallback when their frequency is > 0."""
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback

    from agents.episode_log import DUSInfoCallback

    families, init_from = setup.families, setup.init_from
    previous_csv = init_from / "episodes.csv" if init_from else None
    groups = [f for f in families for _ in range(args.batched)] if families else None
    callbacks: list[Any] = [DUSInfoCallback(modalities, run_dir / "episodes.csv", previous_csv, groups)]
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
    return CallbackList(callbacks)


def main(args: Args) -> Path:
    """Train, save the run folder, and return its path."""
    import torch
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.utils import set_random_seed

    from agents.episode_log import plot_learning_curve

    with setting_up():
        setup = _set_up(args)
        resolve_device(args.device)  # a bad --device is a usage error, before anything is written
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.output_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)

    # Seeding: the agent, the envs' instance and batch-order draws, torch and numpy of this process.
    set_random_seed(args.seed)
    # One torch thread: separate envs share the cores, and the batched env's runs scope their
    # own threads (RunConfig.threads); the agent's small networks gain nothing from more.
    torch.set_num_threads(1)
    train_env, eval_env = _make_envs(args, setup)
    modalities = train_env.get_attr("modalities")[0]
    config = _run_config(args, setup, run_name, modalities)
    (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    model = _make_model(args, setup, train_env)
    kickstart_report = None
    if args.kickstart is not None:
        kickstart_report = kickstart(
            model, train_env, setup.teacher, args.kickstart_episodes, args.kickstart_updates, args.seed,
            setup.episode_steps,
        )
        config["kickstart_report"] = kickstart_report
        print(
            f"kickstart: cloned {args.kickstart} from {kickstart_report['samples']} steps; the policy's mode "
            f"plays its action on {100 * kickstart_report['agreement']:.1f}% of them"
        )
    model.set_logger(configure(str(run_dir / "logs"), ["csv", "tensorboard"] + (["stdout"] if args.verbose else [])))
    callbacks = _callbacks(args, setup, run_dir, train_env, eval_env, modalities)
    start = time.time()
    model.learn(
        args.total_timesteps, callback=callbacks, progress_bar=args.progress_bar,
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
