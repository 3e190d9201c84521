"""The cumulative modality discrepancy (docs/method.md section 2).

At iteration t, modality j scores ``s_t(j)``: the mean probability its own
unimodal logits give to the true class over its ``n_j`` examples. The
cumulative score is the running mean

    S_1(j) = s_1(j),   S_t(j) = ((t - 1) / t) * S_{t-1}(j) + (1 / t) * s_t(j)

(or, as an option, an exponential moving average ``S_t = beta * S_{t-1} +
(1 - beta) * s_t``), and the discrepancy is the distance from the mean over
modalities, ``d_t(j) = S_t(j) - mean_k S_t(k)``; negative means modality j lags.

Everything stays a tensor on the model's device, so updating the monitor
every iteration costs no host-device synchronisation.
"""

from __future__ import annotations

import torch

__all__ = [
    "MONITOR_MODES", "DiscrepancyMonitor", "StackedMonitor", "cumulative_scores", "discrepancy", "loss_and_score",
    "true_class_score",
]

MONITOR_MODES = ("mean", "ema")


def loss_and_score(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A branch's mean cross-entropy and its score ``s_t = mean_i softmax(logits_i)[y_i]``.

    The one implementation of ``s_t`` (docs/method.md section 2): both come
    from one log-softmax, so the training loop gets the per-modality loss of
    the observation for free.

    Args:
        logits: shape ``(..., n, C)``, any leading batch shape (e.g. K
            iterations of one modality); detached here.
        labels: int64, shape ``(..., n)``.
        mask: optional bool ``(..., n)``: the means run over the rows where it
            is True (a batch padded to a common size, as in
            :mod:`dus_gym.batched`); each row of the leading shape needs one.

    Returns:
        ``(loss, score)``, each of the leading shape ``(...)``: the loss in
        nats (>= 0), the score in [0, 1].
    """
    log_py = torch.log_softmax(logits.detach(), dim=-1).gather(-1, labels[..., None]).squeeze(-1)
    nll, p_true = -log_py, log_py.exp()
    count: int | torch.Tensor = log_py.shape[-1]
    if mask is not None:
        count = mask.sum(dim=-1)
        # where(), not a product: a padded row's logits may be anything, NaN included.
        nll, p_true = torch.where(mask, nll, 0.0), torch.where(mask, p_true, 0.0)
    # sum / count is bit for bit the mean (a single run's n rows), so one form serves both.
    return nll.sum(dim=-1) / count, p_true.sum(dim=-1) / count


def true_class_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``s_t`` alone: :func:`loss_and_score`'s score, a 0-d tensor in [0, 1] for ``(n, C)`` logits."""
    return loss_and_score(logits, labels)[1]


def _check_options(mode: str, beta: float) -> None:
    if mode not in MONITOR_MODES:
        raise ValueError(f"unknown monitor mode {mode!r}; valid modes: {list(MONITOR_MODES)}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"monitor beta must lie in [0, 1), got {beta}")


def cumulative_scores(
    cumulative: torch.Tensor, t: torch.Tensor | int, scores: torch.Tensor, mode: str, beta: float
) -> torch.Tensor:
    """``S`` after K more iterations' scores, per run: the one implementation of the recursion.

    Args:
        cumulative: ``(N, M)`` the runs' ``S_t`` (anything where ``t == 0``).
        t: ``(N, 1)`` float, the iterations each run has seen (0: a fresh
            run), or one int for all N (a single run: N = 1).
        scores: ``(K, N, M)``, K >= 1 iterations' ``s`` of every run, in [0, 1].
        mode: ``"mean"`` or ``"ema"``; beta: the EMA's decay in [0, 1).

    Returns:
        ``(N, M)``, ``S_{t+K}`` by the closed forms of the recursions: running
        mean ``S_{t+K} = (t S_t + sum_k s_k) / (t + K)``; EMA
        ``S_{t+K} = beta^K S_t + (1 - beta) sum_k beta^(K-k) s_k`` (k = 1..K).
        A fresh run starts from its first score (``S_1 = s_1``) in both modes.
        Equal to K single updates up to float32 rounding.
    """
    k = scores.shape[0]
    powers = beta ** torch.arange(k - 1, -1, -1, dtype=scores.dtype, device=scores.device)

    def started() -> torch.Tensor:  # S_1 = s_1, then the other K - 1 scores
        first, rest = scores[0], scores[1:]
        if mode == "mean":
            return (first + rest.sum(dim=0)) / k
        return beta ** (k - 1) * first + (1.0 - beta) * torch.einsum("k,knm->nm", powers[1:], rest)

    def going() -> torch.Tensor:
        if mode == "mean":
            return (cumulative * t + scores.sum(dim=0)) / (t + k)
        return beta**k * cumulative + (1.0 - beta) * torch.einsum("k,knm->nm", powers, scores)

    if isinstance(t, int):  # one t for all runs: only the branch that applies (a single run, every step)
        return started() if t == 0 else going()
    return torch.where(t == 0, started(), going())


def discrepancy(cumulative: torch.Tensor) -> torch.Tensor:
    """``d_t = S_t - mean_k S_t(k)`` of ``(..., M)`` cumulative scores, over the last axis."""
    return cumulative - cumulative.mean(dim=-1, keepdim=True)


class DiscrepancyMonitor:
    """Running per-modality scores ``s_t``, ``S_t`` and discrepancies ``d_t``.

    Args:
        num_modalities: M >= 2.
        mode: ``"mean"`` (the paper's running mean, default) or ``"ema"``.
        beta: EMA decay in [0, 1), used only with ``mode="ema"``.
        device: where the state tensors live.

    Before the first update, ``t == 0`` and all scores are zero.
    """

    def __init__(
        self, num_modalities: int, mode: str = "mean", beta: float = 0.9, device: torch.device | str = "cpu"
    ) -> None:
        _check_options(mode, beta)
        self.mode = mode
        self.beta = beta
        self.t = 0
        self.last = torch.zeros(num_modalities, device=device)
        self.cumulative = torch.zeros(num_modalities, device=device)

    def update(self, scores: torch.Tensor) -> None:
        """Add one iteration's scores ``s_t``, shape ``(M,)``, values in [0, 1]."""
        self.update_many(scores[None])

    def update_many(self, scores: torch.Tensor) -> None:
        """Add K iterations' scores at once, shape ``(K, M)``: :func:`cumulative_scores` for one run."""
        scores = scores.detach().to(self.cumulative.dtype)
        k = scores.shape[0]
        if k == 0:
            return
        self.cumulative = cumulative_scores(self.cumulative[None], self.t, scores[:, None], self.mode, self.beta)[0]
        self.last = scores[-1]
        self.t += k

    @property
    def discrepancy(self) -> torch.Tensor:
        """``d_t = S_t - mean_k S_t(k)``, shape ``(M,)``, values in [-1, 1]; sums to 0."""
        return discrepancy(self.cumulative)

    def state_dict(self) -> dict[str, object]:
        return {"t": self.t, "last": self.last.clone(), "cumulative": self.cumulative.clone()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.t = int(state["t"])  # type: ignore[call-overload]
        self.last = state["last"].clone().to(self.last.device)  # type: ignore[attr-defined]
        self.cumulative = state["cumulative"].clone().to(self.cumulative.device)  # type: ignore[attr-defined]


class StackedMonitor:
    """:class:`DiscrepancyMonitor` for N runs at once: ``(N, M)`` scores, each run with its own t."""

    def __init__(self, num_runs: int, num_modalities: int, mode: str, beta: float, device: torch.device) -> None:
        _check_options(mode, beta)
        self.mode, self.beta = mode, beta
        self.t = torch.zeros(num_runs, 1, device=device)
        self.last = torch.zeros(num_runs, num_modalities, device=device)
        self.cumulative = torch.zeros(num_runs, num_modalities, device=device)

    def update_many(self, scores: torch.Tensor) -> None:
        """K iterations' scores ``(K, N, M)`` of every run (:func:`cumulative_scores`)."""
        self.cumulative = cumulative_scores(self.cumulative, self.t, scores.detach(), self.mode, self.beta)
        self.last = scores[-1].detach()
        self.t = self.t + scores.shape[0]

    @property
    def discrepancy(self) -> torch.Tensor:
        """``d_t`` per run, ``(N, M)``."""
        return discrepancy(self.cumulative)

    def reset_run(self, i: int) -> None:
        """Run i starts afresh (t = 0); the others keep their state."""
        self.t[i] = 0
        self.last[i] = 0
        self.cumulative[i] = 0
