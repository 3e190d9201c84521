"""Saved sampler agents: the run folder format and its loader.

A run folder (written by ``agents/train.py``) holds:

- ``config.json``: at least ``{"algo": "ppo" | "a2c", "env_id": ..., "env_kwargs": {...}}``;
- ``model.zip``: the SB3 model (``model.save``);
- ``vecnormalize.pkl`` (optional): the ``VecNormalize`` statistics.

or, written by ``agents/ppo_batched.py`` (``"algo": "ppo_batched"``), ``agent.pt``:
the state dict of an :class:`ActorCritic`; or, written by ``agents/cem_residual.py``
(``"algo": "cem_residual"``), only ``config.json``, whose ``theta`` (6 numbers) is a
:class:`~dus_gym.builtin_policies.ResidualGapPolicy`.

:func:`load_agent` gives back an object with SB3's ``predict`` that applies the
saved observation normalisation itself, so it drops in wherever a built-in
policy does.

The package ships trained agents as package data in ``dus_gym/pretrained/``
(:data:`PRETRAINED_DIR`), so they are there in any install. A *policy spec*
names a policy for every tool: a built-in one (``uniform``, ``fixed:1,2``,
``dus_h:2``, ...; :func:`dus_gym.policies.make_policy`), a run folder (a path),
or a shipped agent (``pretrained:NAME``, or just ``NAME``). :func:`load_policy`
is the one loader for all of them; :func:`agent_folder` says which run
folder, if any, a spec names.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from dus_gym.evaluation import Predictor

__all__ = [
    "ALGOS",
    "ActorCritic",
    "CONFIG_FILE",
    "TorchAgent",
    "MODEL_FILE",
    "PRETRAINED_DIR",
    "PRETRAINED_PREFIX",
    "VECNORMALIZE_FILE",
    "LoadedAgent",
    "agent_folder",
    "env_setting",
    "is_agent_folder",
    "load_agent",
    "load_policy",
    "policy_label",
    "pretrained_agents",
    "read_run_config",
    "setting_differences",
]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.zip"
VECNORMALIZE_FILE = "vecnormalize.pkl"
TORCH_AGENT_FILE = "agent.pt"
ALGOS = ("ppo", "a2c", "ppo_batched", "cem_residual")

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
"""The shipped agents, one run folder each (package data: there in a source checkout and in any install)."""
PRETRAINED_PREFIX = "pretrained:"


def pretrained_agents() -> list[str]:
    """The names of the shipped agents (the run folders in :data:`PRETRAINED_DIR`)."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def agent_folder(spec: str, check: bool = False) -> Path | None:
    """The run folder a policy spec names, or None when it names a built-in policy.

    ``pretrained:NAME`` is the shipped agent NAME; a spec with a path
    separator, or naming an existing folder, is that folder; a bare name of a
    shipped agent is that agent. Anything else is left to
    :func:`dus_gym.policies.builtin_policy`. With ``check``, a ``pretrained:NAME``
    that is not shipped raises a FileNotFoundError naming the shipped ones
    (a missing path is :func:`read_run_config`'s to report).
    """
    if spec.startswith(PRETRAINED_PREFIX):
        folder = PRETRAINED_DIR / spec.removeprefix(PRETRAINED_PREFIX)
        if check and not (folder / CONFIG_FILE).is_file():
            shipped = ", ".join(PRETRAINED_PREFIX + name for name in pretrained_agents()) or "none"
            raise FileNotFoundError(
                f"policy {spec!r}: no shipped agent {folder.name!r} in {PRETRAINED_DIR}; shipped agents: {shipped}"
            )
        return folder
    if "/" in spec or os.sep in spec or Path(spec).is_dir():
        return Path(spec)
    if spec in pretrained_agents():
        return PRETRAINED_DIR / spec
    return None


def is_agent_folder(spec: str) -> bool:
    """Whether a policy spec names a trained agent's run folder rather than a built-in policy."""
    return agent_folder(spec) is not None


def policy_label(spec: str) -> str:
    """Short name for tables and plots: a run folder's base name (with its parent's when the name is a bare
    seed number, ``runs/cem_residual/0`` -> ``cem_residual/0``), else the spec itself."""
    folder = agent_folder(spec)
    if folder is None:
        return spec
    return f"{folder.parent.name}/{folder.name}" if folder.name.isdigit() and folder.parent.name else folder.name


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder, checked for the keys every loader needs."""
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder (a folder written by agents/train.py)")
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE}; is {run_dir} a run folder written by agents/train.py?")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    missing = [k for k in ("algo", "env_id", "env_kwargs") if k not in config]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}; expected algo, env_id, env_kwargs")
    if config["algo"] not in ALGOS:
        raise ValueError(f"{path}: unknown algo {config['algo']!r}; valid: {list(ALGOS)}")
    if isinstance(config["env_kwargs"], str):  # agents/ppo_batched.py keeps its flag's JSON text
        config["env_kwargs"] = json.loads(config["env_kwargs"])
    return dict(config)


def _layer_init(layer: nn.Linear, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class ActorCritic(nn.Module):
    """Actor (one categorical per modality over ``levels`` weights) and critic, 64-64 tanh MLPs, with
    CleanRL's orthogonal initialisation: the agent of ``agents/ppo_batched.py``."""

    def __init__(self, obs_size: int, num_modalities: int, levels: int) -> None:
        super().__init__()
        self.num_modalities, self.levels = num_modalities, levels
        self.critic = nn.Sequential(
            _layer_init(nn.Linear(obs_size, 64)), nn.Tanh(), _layer_init(nn.Linear(64, 64)), nn.Tanh(),
            _layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            _layer_init(nn.Linear(obs_size, 64)), nn.Tanh(), _layer_init(nn.Linear(64, 64)), nn.Tanh(),
            _layer_init(nn.Linear(64, num_modalities * levels), std=0.01),
        )

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Action ``(B, M)`` (sampled unless given), its log-probability and entropy ``(B,)``, value ``(B,)``."""
        dist = Categorical(logits=self.actor(x).view(-1, self.num_modalities, self.levels))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), self.get_value(x)


class TorchAgent:
    """An ``agents/ppo_batched.py`` agent with SB3's ``predict``: the most probable level of each
    modality (``deterministic``), or a draw from its own generator (seeded by ``seed``)."""

    def __init__(self, net: ActorCritic, config: dict[str, Any], seed: int | None = None) -> None:
        self.net, self.config = net.eval(), config
        self.generator = torch.Generator().manual_seed(0 if seed is None else int(seed))

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        obs = np.asarray(observation, dtype=np.float32)
        with torch.inference_mode():
            x = torch.as_tensor(obs.reshape(-1, obs.shape[-1]))
            logits = self.net.actor(x).view(-1, self.net.num_modalities, self.net.levels)
            if deterministic:
                action = logits.argmax(-1)
            else:
                probs = torch.softmax(logits, -1).view(-1, self.net.levels)
                action = torch.multinomial(probs, 1, generator=self.generator).view(logits.shape[:2])
        out = action.numpy().astype(np.int64)
        return (out[0] if obs.ndim == 1 else out), state


def _load_torch_agent(run_dir: Path, config: dict[str, Any], env: gym.Env[Any, Any], spec: str) -> TorchAgent:
    path = run_dir / TORCH_AGENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {TORCH_AGENT_FILE} in run folder {run_dir}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    obs_size, outputs = int(state["critic.0.weight"].shape[1]), int(state["actor.4.weight"].shape[0])
    space, obs_space = env.action_space, env.observation_space
    nvec = getattr(space, "nvec", None)
    if nvec is None or obs_space.shape != (obs_size,) or int(np.sum(nvec)) != outputs or len(set(nvec)) != 1:
        raise ValueError(
            f"policy {spec!r}: the agent in {run_dir} maps {obs_size} observations to {outputs} action logits; "
            f"this env has {_describe(obs_space)} and {space}; play it on an env like the one it was trained on: "
            f"{config['env_id']} with env kwargs {json.dumps(config['env_kwargs'])}"
        )
    net = ActorCritic(obs_size, len(nvec), int(nvec[0]))
    net.load_state_dict(state)
    return TorchAgent(net, config)


class LoadedAgent:
    """A trained SB3 model plus its observation normalisation, with SB3's ``predict``."""

    def __init__(
        self, model: Any, obs_rms: Any | None, clip_obs: float, epsilon: float, config: dict[str, Any]
    ) -> None:
        self.model = model
        self.obs_rms = obs_rms
        self.clip_obs = clip_obs
        self.epsilon = epsilon
        self.config = config

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """Observation as the model saw it in training (VecNormalize's formula)."""
        if self.obs_rms is None:
            return obs
        z = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)
        return np.clip(z, -self.clip_obs, self.clip_obs).astype(np.float32)

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        return self.model.predict(
            self.normalize(np.asarray(observation, dtype=np.float32)), state, episode_start, deterministic
        )


def load_agent(run_dir: str | Path, device: str = "cpu") -> LoadedAgent:
    """Load the model (and normalisation statistics, if saved) of a run folder."""
    from stable_baselines3 import A2C, PPO

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no {MODEL_FILE} in run folder {run_dir}")
    algo: type[PPO] | type[A2C] = PPO if config["algo"] == "ppo" else A2C
    model = algo.load(model_path, device=device)
    obs_rms, clip_obs, epsilon = None, 10.0, 1e-8
    norm_path = run_dir / VECNORMALIZE_FILE
    if norm_path.is_file():
        # VecNormalize pickles without its venv; only the statistics are needed here.
        with norm_path.open("rb") as f:
            vec_norm = pickle.load(f)
        if getattr(vec_norm, "norm_obs", True):
            obs_rms = vec_norm.obs_rms
        clip_obs, epsilon = float(vec_norm.clip_obs), float(vec_norm.epsilon)
    return LoadedAgent(model, obs_rms, clip_obs, epsilon, config)


def _describe(space: gym.Space[Any]) -> str:
    """A space in a few words: a Box with per-component bounds prints hundreds of numbers otherwise."""
    text = str(space)
    if len(text) <= 80 or not isinstance(space, gym.spaces.Box):
        return text
    return f"Box(shape={space.shape}, dtype={space.dtype}, bounds {space.low.min():g} .. {space.high.max():g})"


def load_policy(spec: str, env: gym.Env[Any, Any], seed: int | None = None) -> Predictor:
    """The policy a spec names, ready to act in ``env``: the one loader of every tool.

    Args:
        spec: a built-in policy (``uniform``, ``random``, ``fixed:W1,W2``,
            ``dus_h[:LAM]``, ``gap[:MARGIN]``, ``oracle[:K]``), a run folder written by
            ``agents/train.py`` or ``agents/ppo_batched.py``, or a shipped agent (``pretrained:NAME`` or
            ``NAME``; :func:`pretrained_agents`).
        env: the env the policy will act in.
        seed: seed of a random built-in policy (trained agents act deterministically).

    Raises:
        ValueError: an unknown built-in policy, or an agent trained for other
            observation or action spaces than ``env``'s (the message names the
            folder, both spaces and the env the agent was trained on).
        FileNotFoundError: a run folder or shipped agent that does not exist.
    """
    folder = agent_folder(spec, check=True)
    if folder is None:
        # Imported when needed: the built-in policies import the whole env stack, which the tools that only
        # read run folders do without.
        from dus_gym.builtin_policies import builtin_policy

        return builtin_policy(spec, env, seed, [PRETRAINED_PREFIX + name for name in pretrained_agents()])
    config = read_run_config(folder)
    if config["algo"] == "ppo_batched":
        return _load_torch_agent(folder, config, env, spec)
    if config["algo"] == "cem_residual":
        from dus_gym.builtin_policies import ResidualGapPolicy

        try:
            return ResidualGapPolicy(env, config["theta"], config.get("margin", 0.15))
        except (KeyError, ValueError) as err:
            raise ValueError(f"policy {spec!r}: {folder / CONFIG_FILE}: {err}") from None
    agent = load_agent(folder)
    for name in ("observation_space", "action_space"):
        trained, here = getattr(agent.model, name), getattr(env, name)
        if trained != here:
            mine, theirs = _describe(here), _describe(trained)
            if mine == theirs:
                mine, theirs = str(here), str(trained)
            raise ValueError(
                f"policy {spec!r}: the agent in {folder} was trained for the {name} {theirs}, this env has {mine}; "
                f"play it on an env like the one it was trained on: {agent.config['env_id']} with env kwargs "
                f"{json.dumps(agent.config['env_kwargs'])}"
            )
    return agent


REWARD_AND_PLACE_KWARGS = ("device", "instances", "reward_metric", "sample_cost", "divergence_penalty")
"""Env arguments that leave an agent's observations and the effect of its actions alone."""
DATA_KWARGS = ("env_id", "dataset", "views", "dataset_kwargs", "data_seed")
"""What an agent trained across instance families (``agents/train.py --families``) met many values of."""


def env_setting(env_id: str, env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Every keyword argument ``gym.make(env_id, **env_kwargs)`` builds the env with.

    The given ones over the registered ones over the defaults of the entry
    point's signature, so that two settings compare as equal exactly when they
    build the same env (``{}`` and ``{"n_steps": <the registered value>}``).
    """
    spec = gym.spec(env_id)
    entry: Any = spec.entry_point
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
    defaults = {
        name: p.default
        for name, p in inspect.signature(entry).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **spec.kwargs, **env_kwargs}


def setting_differences(
    config: Mapping[str, Any],
    env_id: str,
    env_kwargs: Mapping[str, Any],
    ignore: tuple[str, ...] = REWARD_AND_PLACE_KWARGS,
) -> dict[str, tuple[Any, Any]]:
    """What differs between the env a run folder's agent was trained on and ``gym.make(env_id, **env_kwargs)``.

    Returns ``{name: (trained, given)}`` over the env id and every keyword
    argument (:func:`env_setting`) but those in ``ignore``: by default the
    ones that change only the reward, where the model runs, or which instances
    the agent met, none of which changes what it sees or what its actions do;
    for an agent trained across families (``config["families"]``) also the
    data (:data:`DATA_KWARGS`). Empty when the agent plays the env it was
    trained on.
    """
    if config.get("families"):  # trained across families: any data, the rest of the setting fixed
        ignore = (*ignore, *DATA_KWARGS)
    trained = {"env_id": config["env_id"], **env_setting(config["env_id"], config["env_kwargs"])}
    given = {"env_id": env_id, **env_setting(env_id, env_kwargs)}
    return {
        k: (trained.get(k), given.get(k))
        for k in dict.fromkeys([*trained, *given])
        if k not in ignore and trained.get(k) != given.get(k)
    }
