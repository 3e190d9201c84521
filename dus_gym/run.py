"""The training run, usable without Gymnasium: data, model, method, optimizer, monitor.

A :class:`TrainingRun` trains a multimodal model from scratch, some iterations
at a time, with per-modality sample quantities chosen by the caller, and
reports what happened. It is the whole of the work behind the env: the env
only turns actions into counts and :class:`StepReport` into observations.

Use it directly to plug DUS into a plain training loop::

    from dus_gym import RunConfig, TrainingRun, dus_h_quantities, load_dataset

    run = TrainingRun(load_dataset("digits"), RunConfig(), split_seed=0, init_seed=0, sample_seed=0)
    counts = [run.config.base_batch] * run.num_modalities
    for epoch in range(30):
        report = run.step(counts)            # one epoch with these counts, then a validation pass
        counts = dus_h_quantities(report.scores, run.config.base_batch)
    print(run.report("test"))                # test metrics with a linear probe per modality
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

import numpy as np
import torch

from dus_gym.data import MultimodalDataset
from dus_gym.data.placement import PLACEMENTS, HostResident, channel_stats, fits_on_device, standardisation
from dus_gym.device import resolve_device, torch_threads
from dus_gym.methods import IterationResult, TrainContext, make_method
from dus_gym.methods.base import stacked_branch_stats
from dus_gym.metrics import (
    Evaluation,
    held_out_report,
    macro_f1,
    probe_accuracies,
    split_metrics,
    unpack_evaluation,
)
from dus_gym.models import build_model
from dus_gym.models.encoders import ResNet18Encoder
from dus_gym.monitor import DiscrepancyMonitor

__all__ = [
    "Evaluation",
    "RunConfig",
    "EPISODE_STEPS",
    "StepReport",
    "TrainStats",
    "TrainingRun",
    "macro_f1",
    "probe_accuracies",
    "resolve_device",
    "torch_threads",
]

OPTIMIZERS = ("sgd", "adam")
EPISODE_STEPS = 30
"""Epochs of a run by default: the env's ``n_steps`` (one step, one epoch), the only
place the default episode length is written."""
_STATS_CHUNK = 64
_VAL_ROWS_BYTES = 64 * 2**20
"""at most this many bytes of validation rows are kept gathered (:meth:`TrainingRun.evaluate_tensors`)"""
_F = TypeVar("_F", bound=Callable[..., Any])


def _scoped_threads(method: _F) -> _F:
    """Run a :class:`TrainingRun` method under the run's thread count (:attr:`TrainingRun.threads`)."""

    @functools.wraps(method)
    def wrapper(self: TrainingRun, *args: Any, **kwargs: Any) -> Any:
        with torch_threads(self.threads):
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


@dataclass(frozen=True)
class RunConfig:
    """Settings of a training run (everything but the data and the seeds)."""

    method: str = "joint"
    """``"joint"``, ``"mla"`` or ``"ogm_ge"`` (docs/method.md section 5)"""
    method_kwargs: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()
    """options of the method, e.g. ``{"alpha": 0.3}`` for ogm_ge or
    ``{"projection": True}`` for mla; a mapping is accepted and stored as
    sorted ``(name, value)`` pairs, which keeps the config hashable"""
    base_batch: int = 64
    """B: examples per modality per iteration under uniform sampling"""
    optimizer: str = "sgd"
    """``"sgd"`` (with momentum) or ``"adam"``"""
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    feature_dim: int = 64
    """width of each encoder's output"""
    encoders: tuple[str, ...] | None = None
    """per-modality encoder kind; default picks by the sample shape"""
    monitor: str = "mean"
    """``"mean"`` (running mean, the paper's) or ``"ema"``"""
    monitor_beta: float = 0.9
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    """train / val / test fractions, for data without a fixed split"""
    eval_batch: int = 4096
    """examples per forward pass in evaluation"""
    probe_steps: int = 100
    """L-BFGS iterations of the linear probe"""
    device: str = "auto"
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ..."""
    threads: int | str | None = "auto"
    """torch intra-op threads while the run trains and evaluates (the caller's
    setting is restored after each call): ``"auto"`` is 1 for the small
    models dus_gym builds by default (more threads only add synchronisation to
    their tiny matrix products; ``benchmarks/throughput.py --threads``
    measures it) and torch's own setting for a model with a ``resnet18``
    encoder; a batch of N stacked runs (:mod:`dus_gym.batched`) takes one
    thread per 8 runs, up to the usable cores; an int fixes it; ``None``
    always leaves torch's setting"""
    data_placement: str = "auto"
    """``"device"``: standardise the data once and cache it on the device;
    ``"host"``: keep it in host memory (memory-mapped bundles stay on disk) and
    move each batch through pinned memory; ``"auto"``: the device when the
    data fits there (always on the CPU), else the host"""

    def __post_init__(self) -> None:
        # A mapping, or pairs as lists after a JSON round trip of to_dict(): one canonical form.
        try:
            pairs = tuple(sorted(dict(self.method_kwargs).items()))
        except (TypeError, ValueError):
            raise ValueError(
                f"RunConfig.method_kwargs: expected a mapping of option names to values, got {self.method_kwargs!r}"
            ) from None
        object.__setattr__(self, "method_kwargs", pairs)
        if not (self.threads in (None, "auto") or (isinstance(self.threads, int) and self.threads >= 1)):
            raise ValueError(f"RunConfig.threads: {self.threads!r}; expected 'auto', None or an integer >= 1")
        if self.base_batch < 1:
            raise ValueError(f"RunConfig.base_batch: {self.base_batch!r}; expected an integer >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainStats:
    """Means over the iterations of one :meth:`TrainingRun.train` call (device tensors).

    ``loss``: 0-d training loss; ``branch_loss``: ``(M,)`` per-modality
    cross-entropy; ``finite``: 0-d bool, False if any loss was NaN or inf.
    """

    loss: torch.Tensor
    branch_loss: torch.Tensor
    finite: torch.Tensor


@dataclass
class StepReport:
    """What one :meth:`TrainingRun.step` did, as host values (one device-to-host transfer).

    Attributes (M modalities, in the dataset's order):
        counts: ``(M,)`` int64, examples of each modality per iteration.
        iterations: iterations trained in this step.
        scores: ``(M,)`` cumulative scores ``S_t`` in [0, 1] after the step.
        last_scores: ``(M,)`` the last iteration's ``s_t`` in [0, 1].
        discrepancy: ``(M,)`` ``d_t = S_t - mean_k S_t(k)`` in [-1, 1].
        train_loss: the optimised loss, mean over the step's iterations (nats).
        branch_loss: ``(M,)`` each modality's own cross-entropy on its examples,
            mean over the step's iterations (nats).
        branch_loss_trend: ``(M,)`` change of ``branch_loss`` since the
            previous step (the first step: since 0).
        validation: the validation split's metrics after the step.
        finite: False when any loss or validation value is NaN or infinite
            (the run diverged; further training is meaningless).
    """

    counts: np.ndarray
    iterations: int
    scores: np.ndarray
    last_scores: np.ndarray
    discrepancy: np.ndarray
    train_loss: float
    branch_loss: np.ndarray
    branch_loss_trend: np.ndarray
    validation: Evaluation
    finite: bool


class TrainingRun:
    """One multimodal training run from scratch.

    Args:
        dataset: the data; its tensors are standardised with training-split
            statistics and moved to the device once.
        config: run settings.
        split_seed: seed of the stratified split (ignored by data with a fixed split).
        init_seed: seed of the model's initial parameters.
        sample_seed: seed of the batch draws (and any other training randomness).

    Same seeds on the CPU give the same run, bit for bit.
    """

    def __init__(
        self,
        dataset: MultimodalDataset,
        config: RunConfig = RunConfig(),
        split_seed: int = 0,
        init_seed: int = 0,
        sample_seed: int = 0,
    ) -> None:
        if config.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {config.optimizer!r}; valid optimizers: {list(OPTIMIZERS)}")
        if dataset.num_modalities < 2:
            raise ValueError(
                f"TrainingRun: dataset with modalities {dataset.modality_names}; multimodal training needs at least 2"
            )
        self.dataset = dataset
        self.config = config
        self.method = make_method(config.method, **dict(config.method_kwargs))
        self.device = resolve_device(config.device)
        self.splits = dataset.splits(split_seed, config.split_fractions).to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.inputs = self._place(list(dataset.modalities.values()), config.data_placement)
        self.model = build_model(
            [tuple(x.shape[1:]) for x in self.inputs],
            dataset.num_classes,
            torch.Generator().manual_seed(init_seed),
            self.device,
            config.feature_dim,
            self.method.shared_head,
            config.encoders,
        )
        params = self.model.parameters()
        self.optimizer: torch.optim.Optimizer
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
            )
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(sample_seed)
        self.monitor = DiscrepancyMonitor(len(self.inputs), config.monitor, config.monitor_beta, self.device)
        self.iterations = 0
        self.steps = 0
        self.examples_seen = np.zeros(len(self.inputs), dtype=np.int64)
        self._prev_branch_loss = np.zeros(len(self.inputs))
        self._finite = True
        self.threads: int | None = self._resolve_threads(config.threads)
        """torch threads of this run's calls (None: torch's own setting); see :attr:`RunConfig.threads`"""
        self._ctx = TrainContext(
            self.model, self.optimizer, self.inputs, self.labels, self._draw, self.generator, config.base_batch
        )

    def _resolve_threads(self, threads: int | str | None) -> int | None:
        if threads != "auto":
            return cast("int | None", threads)
        big = any(isinstance(enc, ResNet18Encoder) for enc in self.model.encoders)
        return None if big else 1

    def __getstate__(self) -> dict[str, Any]:
        # torch.Generator does not pickle: keep its device and state instead.
        state = self.__dict__.copy()
        state.pop("_ctx")
        state["generator"] = (str(self.generator.device), self.generator.get_state())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        device, gen_state = state["generator"]
        state["generator"] = torch.Generator(device=device)
        state["generator"].set_state(gen_state)
        self.__dict__.update(state)
        self._ctx = TrainContext(
            self.model, self.optimizer, self.inputs, self.labels, self._draw, self.generator, self.config.base_batch
        )

    def get_state(self) -> dict[str, Any]:
        """A snapshot of everything that changes as the run trains (copies, on the device).

        Model parameters, optimizer state (momentum, Adam moments), the
        monitor, the method's own state (e.g. MLA's feature correlations),
        the generator's state and the counters. :meth:`set_state` on this run
        restores it, after which training continues exactly as it did from
        here: bit for bit on the CPU. The data and splits are not copied: a
        snapshot only fits a run built on the same data and seeds.
        """
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            # state_dict() returns the live momentum buffers, which step() updates in place.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "monitor": self.monitor.state_dict(),
            "method": copy.deepcopy(self.method),
            "generator": self.generator.get_state(),
            "iterations": self.iterations,
            "steps": self.steps,
            "examples_seen": self.examples_seen.copy(),
            "prev_branch_loss": self._prev_branch_loss.copy(),
            "finite": self._finite,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot of :meth:`get_state`; the snapshot stays reusable."""
        keys = {"model", "optimizer", "monitor", "method", "generator", "iterations", "steps", "examples_seen"}
        missing = (keys | {"prev_branch_loss"}) - set(state)
        if missing:
            raise ValueError(f"TrainingRun.set_state: snapshot lacks {sorted(missing)}; expected a get_state() result")
        self.model.load_state_dict(state["model"])
        # load_state_dict may keep the given tensors: copy, so later steps leave the snapshot intact.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.monitor.load_state_dict(state["monitor"])
        self.method = copy.deepcopy(state["method"])
        self.generator.set_state(state["generator"])
        self.iterations = int(state["iterations"])
        self.steps = int(state["steps"])
        self.examples_seen = np.array(state["examples_seen"], dtype=np.int64)
        self._prev_branch_loss = np.array(state["prev_branch_loss"], dtype=np.float64)
        self._finite = bool(state.get("finite", True))

    def _place(self, data: list[torch.Tensor], placement: str) -> list[torch.Tensor]:
        """Standardised inputs: cached on the device, or served from the host
        (:mod:`dus_gym.data.placement`); both answer ``x[idx]`` with device rows."""
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown data_placement {placement!r}; valid: {list(PLACEMENTS)}")
        if placement == "device" or (placement == "auto" and fits_on_device(data, self.device)):
            self.data_placement = "device"
            inputs = []
            for x in data:
                x = x.to(self.device)
                mean, std = standardisation(x, self.splits.train)
                inputs.append((x - mean) / std)
            return inputs
        self.data_placement = "host"
        train = self.splits.train
        # HostResident answers x[idx] and x.shape, all that methods and evaluation use.
        return cast(list[torch.Tensor], [HostResident(x, *channel_stats(x, train), self.device) for x in data])

    @property
    def num_modalities(self) -> int:
        return len(self.inputs)

    @property
    def iterations_per_epoch(self) -> int:
        """Iterations that show ``M * B``-sized budgets one training split's worth of pairs."""
        return max(1, -(-len(self.splits.train) // self.config.base_batch))

    def _draw(self, n: int) -> torch.Tensor:
        """``n`` training-set indices drawn uniformly with replacement, on the device."""
        train = self.splits.train
        return train[torch.randint(len(train), (n,), generator=self.generator, device=self.device)]

    @_scoped_threads
    def train(self, counts: Sequence[int] | np.ndarray, iterations: int) -> TrainStats:
        """Train ``iterations`` iterations with ``counts[j]`` examples of modality j each.

        The monitor receives every iteration's scores (in one batched update
        at the end, which equals updating it iteration by iteration). Returns
        device tensors, so the caller decides when to synchronise.
        """
        counts = [int(c) for c in counts]
        if len(counts) != self.num_modalities or min(counts) < 1:
            raise ValueError(f"counts must be {self.num_modalities} integers >= 1, got {counts}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.model.train()
        # Per-iteration results are reduced in batched passes of up to
        # _STATS_CHUNK iterations (bounded memory for the kept logits): on small
        # models, every extra tensor op per iteration costs a few percent.
        losses, branch_losses, scores = [], [], []
        pending: list[IterationResult] = []
        for i in range(iterations):
            pending.append(self.method.train_iteration(self._ctx, counts))
            if len(pending) == _STATS_CHUNK or i == iterations - 1:
                chunk_loss, chunk_score = stacked_branch_stats([r.batches for r in pending])
                losses += [r.loss for r in pending]
                branch_losses.append(chunk_loss)
                scores.append(chunk_score)
                pending = []
        self.monitor.update_many(torch.cat(scores))
        self.iterations += iterations
        self.examples_seen += np.asarray(counts, dtype=np.int64) * iterations
        loss = torch.stack(losses).mean()
        branch = torch.cat(branch_losses).mean(dim=0)
        finite = torch.isfinite(loss) & torch.isfinite(branch).all()
        return TrainStats(loss, branch, finite)

    @torch.inference_mode()
    def branch_logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Branch logits ``(M, len(idx), C)`` of the given samples, in large batches."""
        self.model.eval()
        out = []
        for chunk in idx.split(self.config.eval_batch):
            out.append(torch.stack([self.model.branch_logits(j, x[chunk]) for j, x in enumerate(self.inputs)]))
        return torch.cat(out, dim=1)

    @_scoped_threads
    @torch.inference_mode()
    def evaluate_tensors(self, split: str = "val") -> torch.Tensor:
        """Metrics of a split as one device tensor ``(3 + 2M,)``: fused accuracy,
        macro-F1, loss, then each branch's accuracy, then each branch's loss.
        Use :meth:`evaluate` for a readable result."""
        idx = self.splits[split]
        cached: Any = getattr(self, "_val_rows", None) if split == "val" else False
        if cached is None:
            # The validation pass of every step: its rows gathered once (the same values
            # branch_logits(idx) gathers each time), when they are one chunk and few bytes.
            cached = False
            small = self.data_placement == "device" and len(idx) <= self.config.eval_batch
            if small and len(idx) * sum(x[0].nbytes for x in self.inputs) <= _VAL_ROWS_BYTES:
                with torch.inference_mode(False):  # ordinary tensors: the run stays picklable and copyable
                    cached = ([x[idx] for x in self.inputs], self.labels[idx])
            self._val_rows = cached
        if cached:
            rows, y = cached
            self.model.eval()
            logits = torch.stack([self.model.branch_logits(j, x) for j, x in enumerate(rows)])
        else:
            y = self.labels[idx]
            logits = self.branch_logits(idx)
        return split_metrics(logits[None], y[None], self.method.fuse, self.dataset.num_classes)[0]

    def evaluate(self, split: str = "val") -> Evaluation:
        """Fused and per-modality metrics on ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        return self.unpack_evaluation(self.evaluate_tensors(split).cpu().numpy())

    def unpack_evaluation(self, values: np.ndarray) -> Evaluation:
        """:meth:`evaluate_tensors`'s values as an :class:`Evaluation`."""
        return unpack_evaluation(values, self.num_modalities)

    @_scoped_threads
    def probe(self, split: str = "test") -> list[float]:
        """Linear-probe accuracy of each modality's frozen encoder (docs/method.md section 8).

        A multinomial logistic regression (L2 1e-3, full-batch L-BFGS) is fit
        on the standardised encoder features of the training split and scored
        on ``split``. It measures what the encoder learned, independently of
        how the fused head reads it out.
        """
        self.model.eval()
        return probe_accuracies(
            self.model.features, self.inputs, self.labels, self.splits.train, self.splits[split], self.config
        )

    @_scoped_threads
    def step(self, counts: Sequence[int] | np.ndarray, iterations: int | None = None) -> StepReport:
        """Train ``iterations`` iterations (default one epoch, :attr:`iterations_per_epoch`)
        with ``counts[j]`` examples of modality j each, then evaluate on the
        validation split.

        Everything the caller needs comes back in one :class:`StepReport`,
        read from the device in a single transfer. A run whose losses stopped
        being finite reports ``finite=False``; stepping it further raises.
        """
        if self.steps and not self._finite:
            raise RuntimeError(
                f"TrainingRun.step: the run diverged at step {self.steps} (non-finite loss); start a new run"
            )
        iterations = self.iterations_per_epoch if iterations is None else int(iterations)
        stats = self.train(counts, iterations)
        mon = self.monitor
        parts = (mon.cumulative, mon.last, mon.discrepancy, stats.branch_loss, stats.loss, self.evaluate_tensors("val"))
        flat = torch.cat([t.detach().float().reshape(-1) for t in parts]).cpu().numpy().astype(np.float64)
        m = self.num_modalities
        scores, last, discrepancy, branch_loss = (flat[k * m : (k + 1) * m] for k in range(4))
        trend = branch_loss - self._prev_branch_loss
        self._prev_branch_loss = branch_loss
        self.steps += 1
        # One isfinite over everything: the losses, the scores and the validation metrics.
        self._finite = bool(np.isfinite(flat).all())
        return StepReport(
            counts=np.asarray(counts, dtype=np.int64).copy(),
            iterations=iterations,
            scores=scores,
            last_scores=last,
            discrepancy=discrepancy,
            train_loss=float(flat[4 * m]),
            branch_loss=branch_loss,
            branch_loss_trend=trend,
            validation=self.unpack_evaluation(flat[4 * m + 1 :]),
            finite=self._finite,
        )

    def report(self, split: str = "test", probe: bool = True) -> dict[str, Any]:
        """Held-out metrics of the current model, JSON-ready (what ``info["test"]`` holds).

        Keys: ``accuracy``, ``macro_f1`` (in [0, 1]), ``loss`` (nats), per
        modality (by name) ``branch_accuracy`` and, with ``probe``,
        ``probe_accuracy`` (:meth:`probe`), and ``imbalance_gap``: the best
        minus the worst branch accuracy.
        """
        return held_out_report(
            self.evaluate(split), self.dataset.modality_names, (lambda: self.probe(split)) if probe else None
        )
