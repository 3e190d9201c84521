"""Starting a new PPO or A2C policy somewhere sensible (``agents/train.py --uniform-prior`` and
``--kickstart``): centred on uniform sampling, or cloned from a built-in policy's actions and returns."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["KICKSTART_SMOOTHING", "center_on_uniform", "kickstart"]


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

    if not isinstance(model.policy.action_space, spaces.MultiDiscrete):
        raise ValueError(
            f"--kickstart clones discrete actions (MultiDiscrete, the env's default action_type); the env has "
            f"{model.policy.action_space}"
        )
    n_env, n_steps = env.num_envs, episodes * episode_steps
    obs, actions, returns = _teacher_rollouts(env, teacher, n_steps, float(model.gamma))
    policy = model.policy
    device = policy.device
    x = torch.as_tensor(obs.reshape(n_steps * n_env, -1), dtype=torch.float32, device=device)
    a = torch.as_tensor(actions.reshape(n_steps * n_env, -1), device=device)
    y = torch.as_tensor(returns.reshape(-1), dtype=torch.float32, device=device)
    _fit(policy, x, a, y, updates, seed)
    with torch.no_grad():
        mode = policy.get_distribution(x).mode()
        _, log_prob, _ = policy.evaluate_actions(x, a)
    agreement = float((mode.reshape(a.shape) == a).all(dim=1).float().mean())
    return {"samples": int(n_steps * n_env), "agreement": agreement, "nll": float(-log_prob.mean())}


def _teacher_rollouts(env: Any, teacher: Any, n_steps: int, gamma: float) -> tuple[Any, np.ndarray, np.ndarray]:
    """``n_steps`` vector steps of ``teacher`` in ``env``: the observations it saw (normalised with
    VecNormalize's final statistics when ``env`` is one), its actions, and the discounted returns
    (Monte Carlo, of whole episodes), each ``(n_steps, n_env, ...)``."""
    from stable_baselines3.common.vec_env import VecNormalize

    normalize = env if isinstance(env, VecNormalize) else None
    n_env = env.num_envs
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
    returns = np.zeros_like(r)
    running = np.zeros(n_env)
    for t in range(n_steps - 1, -1, -1):  # Monte Carlo returns of whole episodes
        running = r[t] + gamma * running * (1.0 - np.asarray(dones[t], dtype=np.float64))
        returns[t] = running
    return obs, np.stack(actions), returns


def _fit(policy: Any, x: Any, a: Any, y: Any, updates: int, seed: int) -> None:
    """``updates`` Adam steps (learning rate 1e-3) on minibatches of 128 of ``(x, a, y)``, in passes over
    them in orders drawn from ``seed``: the cloning loss plus half the value function's squared error."""
    import torch

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
