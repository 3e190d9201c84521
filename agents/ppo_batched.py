"""PPO over the batched vector env, in one file, top to bottom (CleanRL's ``ppo.py`` layout).

    python agents/ppo_batched.py --env-id DUS-Synthetic-v0 --num-envs 16 --total-timesteps 12000

What it shows: the env as any Gymnasium 1.x loop drives it. N training runs
are one batched computation (``gym.make_vec(..., vectorization_mode=
"vector_entry_point")``), with Gymnasium's own vector wrappers on top
(``RecordEpisodeStatistics``; ``NormalizeObservation`` and ``NormalizeReward``
with ``--normalize-obs`` and ``--normalize-reward``) and Gymnasium's default
autoreset, ``NEXT_STEP``:

- the step that ends an episode returns its last observation (so a truncated
  episode bootstraps from ``V(last observation)``, and a terminated one, a
  diverged run, from nothing);
- the next step of that sub-env is its reset: the action is ignored, the
  reward is 0, and that transition belongs to no episode. It is masked out of
  the advantages and the loss, and not counted as an env step.

Beside SB3's PPO at equal env steps on the shortcut family (docs/agents.md):
all four seeds learn what SB3's do, to 1-2 points of its test accuracy.

The policy gives one categorical distribution per modality over the
discrete weight levels (``MultiDiscrete``). Everything else is CleanRL's PPO:
GAE, clipped surrogate and value losses, entropy bonus, per-minibatch
advantage normalisation, orthogonal initialisation.

Writes ``<output-dir>/<run_name>/``: ``config.json``, ``agent.pt`` (state
dict), ``episodes.csv`` (one row per finished episode, the columns of
``agents/train.py``'s: ``timesteps``, ``episode_return``, ``episode_length``,
``test_accuracy``, ``mean_quantity_<m>``, appended and flushed row by row)
and TensorBoard events (``charts/episodic_return``, ``charts/test_accuracy``,
``dus/quantity/<m>``: examples of modality m per iteration, mean over the
rollout; ``losses/*``, ``charts/SPS``).

A bad flag, env id or env argument is one error line and exit status 2.
"""

from __future__ import annotations

import csv
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
from dus_gym.agent_io import ActorCritic as Agent
from dus_gym.cli import json_object, parse_args, run, setting_up
from dus_gym.run import resolve_device

PROG = "agents/ppo_batched.py"


@dataclass
class Args:
    """Train a PPO sampler on N batched runs of a DUS env (CleanRL-style, Gymnasium 1.x conventions)."""

    exp_name: str = "ppo_batched"
    """the name of this experiment (part of the run name)"""
    env_id: str = "DUS-Synthetic-v0"
    """the registered env id"""
    env_kwargs: str = '{"n_steps": 15}'
    """JSON object of env keyword arguments"""
    instances: str = "shortcut:train"
    """training instance set (train or FAMILY:train)"""
    seed: int = 1
    """seed of the envs, the agent's initialisation and its action sampling"""
    total_timesteps: int = 12000
    """env steps to train for (transitions of episodes; NEXT_STEP's reset steps are not counted)"""
    num_envs: int = 16
    """training runs in the batched vector env"""
    num_steps: int = 16
    """steps per sub-env per rollout (a rollout is num_envs * num_steps transitions)"""
    learning_rate: float = 5e-4
    """Adam's learning rate"""
    anneal_lr: bool = False
    """anneal the learning rate linearly to 0"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 0.95
    """GAE's lambda"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 10
    """epochs over each rollout"""
    clip_coef: float = 0.2
    """surrogate clipping"""
    ent_coef: float = 0.01
    """entropy coefficient"""
    vf_coef: float = 0.5
    """value-loss coefficient"""
    clip_vloss: bool = True
    """clip the value loss as the surrogate (CleanRL's default; SB3's PPO does not)"""
    max_grad_norm: float = 0.5
    """gradient clipping"""
    normalize_obs: bool = False
    """Gymnasium's NormalizeObservation on the vector env (off: the observation is bounded, 0-10; with it one
    seed of four learnt the wrong way, docs/agents.md)"""
    normalize_reward: bool = False
    """Gymnasium's NormalizeReward on the vector env (off: the rewards are accuracy gains, already of order 0.01-0.1)"""
    output_dir: str = "runs"
    """where the run folder goes"""
    device: str = "cpu"
    """torch device of the agent (the env's runs pick theirs: env_kwargs' device)"""


def gae(
    rewards: torch.Tensor, values: torch.Tensor, next_value: torch.Tensor, terminations: torch.Tensor,
    dones: torch.Tensor, gamma: float, gae_lambda: float,
) -> torch.Tensor:
    """Generalised advantage estimates ``(T, N)`` of a NEXT_STEP rollout.

    ``values[t + 1]`` (``next_value`` after the last step) is V of the observation after step t: for an
    episode that ended at t, its last observation, so a truncated episode bootstraps from it and a
    terminated one (``terminations``) from nothing. The recursion stops at every episode end (``dones``),
    so the reset transition after it, masked out of the loss, adds nothing to the episode's advantages.
    """
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        following = next_value if t == len(rewards) - 1 else values[t + 1]
        delta = rewards[t] + gamma * following * (1.0 - terminations[t]) - values[t]
        last = delta + gamma * gae_lambda * (1.0 - dones[t]) * last
        advantages[t] = last
    return advantages


@dataclass
class _Rollout:
    """One rollout's tensors, ``(T, N, ...)``: observations, actions, their log-probabilities, rewards,
    values, terminations, episode ends, and ``valid`` (0 for NEXT_STEP's reset steps)."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    rewards: torch.Tensor
    values: torch.Tensor
    terminations: torch.Tensor
    dones: torch.Tensor
    valid: torch.Tensor


@dataclass
class _Progress:
    """What carries over from one rollout to the next."""

    next_obs: torch.Tensor
    autoreset: np.ndarray
    """NEXT_STEP: these sub-envs' next step is a reset"""
    quantity_sum: np.ndarray
    """per sub-env, over its episode so far"""
    global_step: int = 0


def _make_envs(args: Args, env_kwargs: dict[str, Any]) -> tuple[gym.vector.VectorEnv, list[str]]:
    """The batched vector env with Gymnasium's wrappers on top, and its modalities."""
    envs: gym.vector.VectorEnv = gym.make_vec(
        args.env_id, num_envs=args.num_envs, vectorization_mode="vector_entry_point",
        instances=args.instances, **env_kwargs,
    )
    modalities = list(envs.unwrapped.modalities)  # type: ignore[attr-defined]
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # raw returns, before the normalisers
    if args.normalize_obs:
        envs = gym.wrappers.vector.NormalizeObservation(envs)
    if args.normalize_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
    return envs, modalities


def _collect(
    args: Args, envs: gym.vector.VectorEnv, agent: Agent, buf: _Rollout, state: _Progress, device: torch.device,
    log_episode: Any,
) -> np.ndarray:
    """Fill ``buf`` with ``num_steps`` steps of every sub-env; ``log_episode(i, info)`` for each episode
    that ends. Returns the quantities of the transitions that trained ``(transitions, M)``."""
    rollout_quantities = []
    for step in range(args.num_steps):
        buf.obs[step] = state.next_obs
        buf.valid[step] = torch.as_tensor(~state.autoreset, dtype=torch.float32, device=device)
        state.global_step += int((~state.autoreset).sum())
        with torch.no_grad():
            action, logprob, _, value = agent.get_action_and_value(state.next_obs)
        buf.actions[step], buf.logprobs[step], buf.values[step] = action, logprob, value
        next_obs_np, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
        buf.rewards[step] = torch.as_tensor(reward, dtype=torch.float32, device=device)
        buf.terminations[step] = torch.as_tensor(terminated, dtype=torch.float32, device=device)
        done = np.logical_or(terminated, truncated)
        buf.dones[step] = torch.as_tensor(done, dtype=torch.float32, device=device)
        state.next_obs = torch.as_tensor(next_obs_np, dtype=torch.float32, device=device)

        stepped = ~state.autoreset  # these sub-envs trained with the action; the others were reset
        state.quantity_sum[stepped] += info["quantities"][stepped]
        rollout_quantities.append(info["quantities"][stepped])
        for i in np.flatnonzero(info.get("_episode", np.zeros(args.num_envs, dtype=bool))):
            log_episode(i, info)
            state.quantity_sum[i] = 0.0
        state.autoreset = done
    return np.concatenate(rollout_quantities)


def _update(
    args: Args, agent: Agent, optimizer: torch.optim.Optimizer, buf: _Rollout, next_obs: torch.Tensor,
    device: torch.device,
) -> dict[str, float]:
    """GAE, then ``update_epochs`` epochs of clipped PPO over the rollout's valid transitions in
    minibatches; returns the last minibatch's losses and the epochs' clip fraction and explained variance."""
    with torch.no_grad():
        advantages = gae(buf.rewards, buf.values, agent.get_value(next_obs), buf.terminations, buf.dones,
                         args.gamma, args.gae_lambda)
        returns = advantages + buf.values
    m = buf.actions.shape[-1]
    keep = buf.valid.reshape(-1).bool()  # the transitions of episodes; not the reset steps
    b_obs = buf.obs.reshape(-1, *buf.obs.shape[2:])[keep]
    b_actions, b_logprobs = buf.actions.reshape(-1, m)[keep], buf.logprobs.reshape(-1)[keep]
    b_advantages, b_returns = advantages.reshape(-1)[keep], returns.reshape(-1)[keep]
    b_values = buf.values.reshape(-1)[keep]
    size = len(b_obs)
    minibatch = max(1, size // args.num_minibatches)
    clipfracs = []
    for _ in range(args.update_epochs):
        order = torch.randperm(size, device=device)
        for lo in range(0, size, minibatch):
            mb = order[lo : lo + minibatch]
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions[mb])
            logratio = newlogprob - b_logprobs[mb]
            ratio = logratio.exp()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - logratio).mean()
                clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())
            mb_adv = b_advantages[mb]
            if len(mb) > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            clipped = ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)
            pg_loss = torch.max(-mb_adv * ratio, -mb_adv * clipped).mean()
            v_loss = 0.5 * (newvalue - b_returns[mb]) ** 2
            if args.clip_vloss:
                v_clipped = b_values[mb] + (newvalue - b_values[mb]).clamp(-args.clip_coef, args.clip_coef)
                v_loss = torch.max(v_loss, 0.5 * (v_clipped - b_returns[mb]) ** 2)
            v_loss = v_loss.mean()
            entropy_loss = entropy.mean()
            loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
    y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
    var_y = np.var(y_true)
    return {
        "value_loss": v_loss.item(), "policy_loss": pg_loss.item(), "entropy": entropy_loss.item(),
        "approx_kl": approx_kl.item(), "clipfrac": float(np.mean(clipfracs)),
        "explained_variance": np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y,
    }


def main(args: Args) -> Path:
    with setting_up():
        env_kwargs = json_object(args.env_kwargs, "--env-kwargs")
        if args.num_envs < 1 or args.num_steps < 1 or args.total_timesteps < 1:
            raise ValueError("--num-envs, --num-steps and --total-timesteps must be >= 1")
        batch_size = args.num_envs * args.num_steps
        if batch_size % args.num_minibatches:
            raise ValueError(
                f"--num-minibatches {args.num_minibatches} must divide num_envs * num_steps = {batch_size}"
            )
        device = resolve_device(args.device)
        envs, modalities = _make_envs(args, env_kwargs)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.output_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    # "algo" makes the folder a run folder every tool loads (dus_gym.agent_io.load_policy).
    (run_dir / "config.json").write_text(json.dumps({"algo": "ppo_batched", **asdict(args)}, indent=1) + "\n")
    writer = SummaryWriter(str(run_dir))
    table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    # A script may seed torch's global generator (library code never does): the agent's init and sampling.
    torch.manual_seed(args.seed)
    action_space = envs.single_action_space
    assert isinstance(action_space, gym.spaces.MultiDiscrete), "a discrete action_type is expected"
    obs_shape = envs.single_observation_space.shape
    assert obs_shape is not None
    agent = Agent(int(np.prod(obs_shape)), len(modalities), int(action_space.nvec[0])).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    n, m, T = args.num_envs, len(modalities), args.num_steps
    buf = _Rollout(
        torch.zeros((T, n, *obs_shape), device=device), torch.zeros((T, n, m), dtype=torch.long, device=device),
        *(torch.zeros((T, n), device=device) for _ in range(6)),
    )
    columns = ["timesteps", "episode_return", "episode_length", "test_accuracy"]
    columns += [f"mean_quantity_{name}" for name in modalities]
    episodes_file = (run_dir / "episodes.csv").open("w", newline="")
    episodes_csv = csv.writer(episodes_file)
    episodes_csv.writerow(columns)

    start = time.time()
    next_obs_np, _ = envs.reset(seed=args.seed)
    state = _Progress(torch.as_tensor(next_obs_np, dtype=torch.float32, device=device), np.zeros(n, dtype=bool),
                      np.zeros((n, m)))

    def log_episode(i: int, info: dict[str, Any]) -> None:
        ret, length = float(info["episode"]["r"][i]), int(info["episode"]["l"][i])
        test = float(info["test"]["accuracy"][i]) if info.get("_test", np.zeros(n, bool))[i] else float("nan")
        episodes_csv.writerow([state.global_step, ret, length, test, *(state.quantity_sum[i] / length).tolist()])
        episodes_file.flush()
        writer.add_scalar("charts/episodic_return", ret, state.global_step)
        writer.add_scalar("charts/test_accuracy", test, state.global_step)

    iteration = 0
    while state.global_step < args.total_timesteps:
        iteration += 1
        if args.anneal_lr:
            fraction = max(0.0, 1.0 - state.global_step / args.total_timesteps)
            optimizer.param_groups[0]["lr"] = args.learning_rate * fraction
        counts = _collect(args, envs, agent, buf, state, device, log_episode)  # (transitions, M)
        losses = _update(args, agent, optimizer, buf, state.next_obs, device)
        global_step = state.global_step
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        for key in ("value_loss", "policy_loss", "entropy", "approx_kl", "clipfrac", "explained_variance"):
            writer.add_scalar(f"losses/{key}", losses[key], global_step)
        for j, name in enumerate(modalities):
            writer.add_scalar(f"dus/quantity/{name}", float(counts[:, j].mean()), global_step)
        sps = int(global_step / (time.time() - start))
        writer.add_scalar("charts/SPS", sps, global_step)
        print(f"iteration {iteration}: {global_step} env steps, {sps} steps/s", flush=True)

    torch.save(agent.state_dict(), run_dir / "agent.pt")
    episodes_file.close()
    envs.close()
    writer.close()
    print(f"wrote {run_dir}")
    return run_dir


if __name__ == "__main__":
    run(lambda: main(parse_args(Args, prog=PROG)), PROG)
