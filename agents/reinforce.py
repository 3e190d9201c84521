"""REINFORCE sampler written directly against the Gymnasium API (no SB3).

    python agents/reinforce.py --env-id DUS-Synthetic-v0 --env-kwargs '{"n_steps": 15}' --episodes 100

The learner of the DUS paper (Jiang et al. 2025) is a policy-gradient
sampler; this file is that learner in one page, and the worked example of
plugging the env into your own RL code. Everything the env offers is used
through ``gym.make``, ``reset`` and ``step``:

- the policy is a small MLP giving one categorical distribution per
  modality over the discrete weight levels (``MultiDiscrete`` action);
- observations are scaled to [-1, 1] with the bounds the observation space
  declares (no running statistics needed);
- after each batch of ``--batch-episodes`` episodes, the loss is
  ``-sum_t log pi(a_t | o_t) (G_t - b_t)`` with the discounted return-to-go
  ``G_t`` and the baseline ``b_t`` = mean return-to-go at step t over the
  batch (the steps of all episodes are aligned: every episode lasts n_steps);
- training instances come from the env's ``train`` set, the final greedy
  evaluation from the disjoint ``eval`` set.

Writes ``<output-dir>/<run_name>/``: ``config.json``, ``policy.pt`` (the
state dict) and TensorBoard events (``charts/episodic_return``,
``test/accuracy``, ``dus/quantity/<m>``, ``losses/policy_loss``).

A bad flag, env id or env argument is one error line and exit status 2.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

import dus_gym  # noqa: F401  (registers the env ids)
from dus_gym.cli import json_object, parse_args, run, setting_up
from dus_gym.instances import instance_set

PROG = "agents/reinforce.py"


@dataclass
class Args:
    """Train a REINFORCE sampler on a DUS env, then evaluate it greedily on held-out instances."""

    exp_name: str = "reinforce"
    """the name of this experiment (part of the run name)"""
    env_id: str = "DUS-Synthetic-v0"
    """the registered env id"""
    env_kwargs: str = '{"n_steps": 15}'
    """JSON object of env keyword arguments"""
    instances: str = "train"
    """training instance set (train or FAMILY:train)"""
    eval_instances: str = "eval"
    """held-out instance set of the final evaluation (eval or FAMILY:eval)"""
    seed: int = 1
    """seed of the policy, the instance draws and the batch orders"""
    episodes: int = 100
    """training episodes"""
    batch_episodes: int = 4
    """episodes per policy-gradient update"""
    learning_rate: float = 3e-3
    """Adam learning rate"""
    gamma: float = 1.0
    """discount of the return-to-go (1: the return is the final minus the current validation metric)"""
    hidden: int = 64
    """width of the two hidden layers"""
    eval_episodes: int = 4
    """greedy episodes on the first held-out instances after training (0: none)"""
    output_dir: str = "runs"
    """folder under which the run folder is created"""


class Policy(nn.Module):
    """An MLP from the scaled observation to one logit vector per modality."""

    def __init__(self, obs_dim: int, nvec: list[int], hidden: int) -> None:
        super().__init__()
        self.nvec = nvec
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, sum(nvec))
        )

    def dist(self, obs: torch.Tensor) -> list[torch.distributions.Categorical]:
        logits = self.net(obs).split(self.nvec, dim=-1)
        return [torch.distributions.Categorical(logits=lg) for lg in logits]


def scale(obs: np.ndarray, space: gym.spaces.Box) -> torch.Tensor:
    """The observation mapped to [-1, 1] with the space's declared bounds."""
    low, high = space.low, space.high
    return torch.as_tensor(2.0 * (obs - low) / (high - low) - 1.0, dtype=torch.float32)


def play(
    env: gym.Env[Any, Any], policy: Policy, seed: int | None, greedy: bool, options: dict[str, Any] | None = None
) -> tuple[list[torch.Tensor], list[float], dict[str, Any]]:
    """One episode: the log-probabilities of the actions taken, the rewards, and the last info."""
    obs, info = env.reset(seed=seed, options=options)
    log_probs: list[torch.Tensor] = []
    rewards: list[float] = []
    done = False
    while not done:
        dists = policy.dist(scale(obs, env.observation_space))  # type: ignore[arg-type]
        with torch.set_grad_enabled(not greedy):
            action = torch.stack([d.probs.argmax() if greedy else d.sample() for d in dists])
            log_probs.append(torch.stack([d.log_prob(a) for d, a in zip(dists, action)]).sum())
        obs, reward, terminated, truncated, info = env.step(action.numpy())
        rewards.append(float(reward))
        done = terminated or truncated
    return log_probs, rewards, info


def returns_to_go(rewards: list[float], gamma: float) -> np.ndarray:
    """``G_t = sum_{k >= t} gamma^(k-t) r_k``."""
    out = np.zeros(len(rewards))
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def main(args: Args) -> dict[str, Any]:
    """Train, save, evaluate; return the final greedy test accuracies."""
    with setting_up():
        env_kwargs = json_object(args.env_kwargs, "--env-kwargs")
        env = gym.make(args.env_id, **env_kwargs, instances=args.instances)
        space = env.action_space
        if not isinstance(space, gym.spaces.MultiDiscrete):
            raise ValueError(f"reinforce.py needs a discrete action space (action_type='discrete'), got {space}")
        eval_set = instance_set(args.eval_instances, max(args.eval_episodes, 1))[: args.eval_episodes]
        eval_env = gym.make(args.env_id, **env_kwargs)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.output_dir) / run_name
    writer = SummaryWriter(str(run_dir))
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    )

    # Seeding: torch (the policy and its samples); the env's np_random (instances, batch orders) via reset(seed=).
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    modalities = env.unwrapped.modalities  # type: ignore[attr-defined]
    policy = Policy(int(np.prod(env.observation_space.shape or (0,))), [int(n) for n in space.nvec], args.hidden)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)

    batch: list[tuple[list[torch.Tensor], np.ndarray]] = []
    for episode in range(args.episodes):
        # Only the first reset takes the seed; later ones continue the env's own generator.
        log_probs, rewards, info = play(env, policy, args.seed if episode == 0 else None, greedy=False)
        batch.append((log_probs, returns_to_go(rewards, args.gamma)))
        writer.add_scalar("charts/episodic_return", sum(rewards), episode)
        if "test" in info:
            writer.add_scalar("test/accuracy", info["test"]["accuracy"], episode)
        for m, name in enumerate(modalities):
            writer.add_scalar(f"dus/quantity/{name}", info["quantities"][m], episode)
        if len(batch) == args.batch_episodes:
            horizon = min(len(g) for _, g in batch)
            baseline = np.mean([g[:horizon] for _, g in batch], axis=0)
            loss = torch.stack(
                [
                    -lp * float(g[t] - (baseline[t] if t < horizon else 0.0))
                    for lps, g in batch
                    for t, lp in enumerate(lps)
                ]
            ).sum() / len(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            writer.add_scalar("losses/policy_loss", loss.item(), episode)
            batch = []

    torch.save(policy.state_dict(), run_dir / "policy.pt")
    (run_dir / "config.json").write_text(json.dumps({**asdict(args), "env_kwargs": env_kwargs}, indent=2))

    accuracies = []
    for k, instance in enumerate(eval_set):
        _, _, info = play(eval_env, policy, args.seed + k, greedy=True, options={"instance": instance})
        accuracies.append(info["test"]["accuracy"] if "test" in info else float("nan"))
        writer.add_scalar("eval/test_accuracy", accuracies[-1], k)
    writer.close()
    print(f"run folder: {run_dir}; held-out greedy test accuracy: {np.round(accuracies, 3).tolist()}")
    return {"run_dir": str(run_dir), "eval_accuracy": accuracies}


if __name__ == "__main__":
    run(lambda: main(parse_args(Args, prog=PROG)), PROG)
