"""N training runs in lock-step as one computation (docs/batched.md).

A :class:`BatchedTrainingRun` holds N independent training runs, each what a
:class:`~dus_gym.run.TrainingRun` would be with the same seeds: its own split,
initialisation, batch order, optimizer state, monitor and, for synthetic
families, its own data. Their parameters are stacked along a leading axis
and every iteration runs one forward and one backward pass for all N
(``torch.func.vmap`` over ``functional_call`` for CNN branches; for MLP
branches one ``baddbmm`` per layer, which autograd differentiates without
the transposed-gradient copies vmap's matmuls cost):
for the small models of dus_gym a single run leaves a CPU core, let alone a
GPU, mostly idle, and only many runs at once fill it.

Each run has its own per-modality counts every iteration. Batches are padded
to the largest count with row masks, and each run's loss keeps the
normalisation of docs/method.md section 3 (sum over its drawn examples / B),
so the padding changes nothing. Batch draws come from each run's own
``torch.Generator`` in the same order as in a single run, so run i draws the
same examples as ``TrainingRun(..., sample_seed=s_i)``; results agree to
float32 rounding (stacked matmuls round differently from single ones).

Supported: methods ``joint``, ``ogm_ge`` and ``mla`` (without the head
projection), MLP and CNN encoders, SGD and Adam, data placed on the device.
:func:`make_run_batch` falls back to :class:`LoopedRuns`, a plain loop over
single runs with the same interface, for everything else (GRU and ResNet-18
encoders, MLA's projection, data served from host memory) and where
stacking is slower than the loop (CNN encoders on the CPU, a single run):
:func:`loop_reason`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from dus_gym.data import MultimodalDataset
from dus_gym.data.placement import fits_on_device, standardisation
from dus_gym.methods import JointMethod, MLAMethod, OGMGEMethod, make_method
from dus_gym.methods.base import normalised_loss
from dus_gym.methods.ogm_ge import modulate_encoder_gradients, ogm_coefficients
from dus_gym.metrics import Evaluation, held_out_report, probe_accuracies, split_metrics, unpack_evaluation
from dus_gym.models import MultimodalModel, build_model
from dus_gym.models.encoders import ConvEncoder, MLPEncoder
from dus_gym.monitor import StackedMonitor, loss_and_score
from dus_gym.run import RunConfig, StepReport, TrainingRun, resolve_device, torch_threads

__all__ = [
    "RUNS_PER_THREAD", "BatchedTrainingRun", "LoopedRuns", "RunBatch", "batch_threads", "batching_support",
    "loop_reason", "make_run_batch",
]

SEED_NAMES = ("split_seed", "init_seed", "sample_seed")


class RunBatch(Protocol):
    """N training runs stepped together: what the vector env needs of them."""

    num_runs: int

    @property
    def iterations_per_epoch(self) -> int: ...

    def step(self, counts: np.ndarray, iterations: int | None = None) -> list[StepReport]: ...

    def evaluate(self, split: str = "val") -> list[Evaluation]: ...

    def report(self, i: int, split: str = "test", probe: bool = True) -> dict[str, Any]: ...

    def reset_run(self, i: int, dataset: MultimodalDataset, seeds: Mapping[str, int]) -> None: ...


def _meta_model(config: RunConfig, dataset: MultimodalDataset) -> MultimodalModel:
    """The model ``config`` builds for ``dataset``, on the meta device (shapes only, no memory)."""
    shapes = [tuple(x.shape[1:]) for x in dataset.modalities.values()]
    shared_head = make_method(config.method, **dict(config.method_kwargs)).shared_head
    return build_model(shapes, dataset.num_classes, torch.Generator().manual_seed(0), "meta", config.feature_dim,
                       shared_head, config.encoders)


def batching_support(config: RunConfig, dataset: MultimodalDataset) -> str | None:
    """Why ``config`` on ``dataset`` cannot run as one stacked computation, or None if it can."""
    method = make_method(config.method, **dict(config.method_kwargs))
    if isinstance(method, MLAMethod) and method.projection:
        return "mla's head projection keeps per-run feature correlations (not stacked)"
    if type(method) not in (JointMethod, OGMGEMethod, MLAMethod):
        return f"method {config.method!r} has no stacked implementation"
    encoders = _meta_model(config, dataset).encoders
    slow = [type(e).__name__ for e in encoders if not isinstance(e, (MLPEncoder, ConvEncoder))]
    if slow:
        return f"encoders {slow} are not batched (vmap over GRU/ResNet-18 does not pay)"
    device = resolve_device(config.device)
    if config.data_placement == "host" or not fits_on_device(list(dataset.modalities.values()), device):
        return "the data is served from host memory"
    return None


RUNS_PER_THREAD = 8
"""``threads="auto"`` gives a batch one torch thread per this many runs (up to the usable cores)."""


def batch_threads(threads: int | str | None, num_runs: int) -> int | None:
    """The torch threads of a batch of ``num_runs`` runs for :attr:`RunConfig.threads <dus_gym.run.RunConfig.threads>`.

    ``"auto"``: one per :data:`RUNS_PER_THREAD` runs, at least one and at most
    the cores this process may use. A single tiny run gains nothing from a
    second thread, but 16 stacked runs are matrix products large enough to
    split: on 2 idle cores, N = 16 digits runs step 1.5-1.6x faster with two
    threads than with one (``python -m benchmarks.throughput --batched``).
    On a machine whose cores are busy with other work, threads beyond the
    free cores wait for each other (4-17x slower, ``--threads``): give
    ``threads=1`` there.
    """
    if threads != "auto":
        return threads  # type: ignore[return-value]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, num_runs // RUNS_PER_THREAD))


def loop_reason(config: RunConfig, dataset: MultimodalDataset, num_runs: int) -> str | None:
    """Why :func:`make_run_batch` loops over ``num_runs`` single runs instead of stacking them, or None.

    Either stacking does not apply (:func:`batching_support`) or it would be
    slower than the loop:

    - N = 1: one stacked run costs about twice a single one (vmap's overhead
      buys nothing);
    - a CNN encoder on the CPU: vmap turns each convolution of N runs into a
      grouped convolution, which costs 1.4-2.1x the N single runs' CPU time
      (one thread; N = 4-64; avdigits' two CNNs; docs/batched.md, "Speed"),
      where the digits MLPs cost 0.36-0.51x.
      On a GPU the CNNs stay stacked (not yet measured there).
    """
    if num_runs < 2:
        return "a single run"
    why = batching_support(config, dataset)
    if why is not None:
        return why
    if resolve_device(config.device).type == "cpu":
        if any(isinstance(e, ConvEncoder) for e in _meta_model(config, dataset).encoders):
            return "CNN encoders on the CPU: vmap's grouped convolutions are slower than a loop of single runs"
    return None


def make_run_batch(
    datasets: Sequence[MultimodalDataset], config: RunConfig, seeds: Sequence[Mapping[str, int]]
) -> RunBatch:
    """N runs as one stacked computation (:class:`BatchedTrainingRun`), or a loop of single runs
    (:class:`LoopedRuns`) where stacking does not apply or does not pay (:func:`loop_reason`)."""
    if datasets and loop_reason(config, datasets[0], len(datasets)) is None:
        return BatchedTrainingRun(datasets, config, seeds)
    return LoopedRuns(datasets, config, seeds)


def _seeds(seeds: Mapping[str, int], where: str) -> tuple[int, int, int]:
    missing = [k for k in SEED_NAMES if k not in seeds]
    if missing:
        raise ValueError(f"{where}: seeds {dict(seeds)} lack {missing}; expected {list(SEED_NAMES)}")
    return int(seeds["split_seed"]), int(seeds["init_seed"]), int(seeds["sample_seed"])


class LoopedRuns:
    """N single :class:`TrainingRun` objects behind the :class:`RunBatch` interface (no speed-up)."""

    def __init__(
        self, datasets: Sequence[MultimodalDataset], config: RunConfig, seeds: Sequence[Mapping[str, int]]
    ) -> None:
        if len(datasets) != len(seeds) or not seeds:
            raise ValueError(f"LoopedRuns: {len(datasets)} datasets for {len(seeds)} seed sets; expected one each")
        self.config = config
        self.runs = [TrainingRun(d, config, *_seeds(s, f"run {i}")) for i, (d, s) in enumerate(zip(datasets, seeds))]
        self.num_runs = len(self.runs)

    @property
    def iterations_per_epoch(self) -> int:
        return self.runs[0].iterations_per_epoch

    def step(self, counts: np.ndarray, iterations: int | None = None) -> list[StepReport]:
        return [run.step(c, iterations) for run, c in zip(self.runs, np.asarray(counts))]

    def evaluate(self, split: str = "val") -> list[Evaluation]:
        return [run.evaluate(split) for run in self.runs]

    def report(self, i: int, split: str = "test", probe: bool = True) -> dict[str, Any]:
        return self.runs[i].report(split, probe)

    def reset_run(self, i: int, dataset: MultimodalDataset, seeds: Mapping[str, int]) -> None:
        self.runs[i] = TrainingRun(dataset, self.config, *_seeds(seeds, f"run {i}"))


class _StackedOptimizer:
    """SGD (momentum, weight decay) or Adam on stacked parameters ``(N, ...)``, with per-run state.

    The update of every run is torch.optim's (``SGD`` with dampening 0,
    ``Adam`` with L2 weight decay), element for element; what is stacked is
    only the state, so that one run can start afresh (:meth:`reset_run`)
    while the others go on. A parameter without a gradient is skipped, as
    torch.optim skips it.
    """

    def __init__(self, params: Mapping[str, torch.Tensor], config: RunConfig) -> None:
        self.params = params
        self.kind = config.optimizer
        self.lr, self.momentum, self.weight_decay = config.lr, config.momentum, config.weight_decay
        self.betas, self.eps = (0.9, 0.999), 1e-8
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        names = [k for k, p in self.params.items() if p.grad is not None]
        if not names:
            return
        params = [self.params[k] for k in names]
        grads: list[torch.Tensor] = [p.grad for p in params if p.grad is not None]
        if self.weight_decay:  # in place: the gradients are dropped at the next zero_grad anyway
            torch._foreach_add_(grads, params, alpha=self.weight_decay)
        states = [self.state.setdefault(k, {}) for k in names]
        if self.kind == "sgd":
            if self.momentum:
                # A zero buffer (a fresh run) gives buf = g: torch's first step.
                bufs = [st.setdefault("momentum", torch.zeros_like(p)) for st, p in zip(states, params)]
                torch._foreach_mul_(bufs, self.momentum)
                torch._foreach_add_(bufs, grads)
                grads = bufs
            torch._foreach_add_(params, grads, alpha=-self.lr)
            return
        b1, b2 = self.betas
        for st, p, g in zip(states, params, grads):
            if not st:
                st.update(
                    step=torch.zeros(p.shape[0], device=p.device), exp_avg=torch.zeros_like(p),
                    exp_avg_sq=torch.zeros_like(p),
                )
            st["step"] += 1
            st["exp_avg"].lerp_(g, 1 - b1)
            st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
            step = st["step"].view((-1,) + (1,) * (p.ndim - 1))
            step_size = self.lr / (1 - b1**step)
            denom = (st["exp_avg_sq"].sqrt() / torch.sqrt(1 - b2**step)).add_(self.eps)
            p.sub_(step_size * st["exp_avg"] / denom)

    def reset_run(self, i: int) -> None:
        for state in self.state.values():
            for t in state.values():
                t[i] = 0


class BatchedTrainingRun:
    """N training runs trained in lock-step as one stacked computation (see the module docstring).

    Args:
        datasets: one dataset per run; runs given the same object share its
            data, held once on the device (each run standardises with its own
            training-split statistics).
        config: the settings all runs share (method, model, optimizer, B, device).
        seeds: per run ``{"split_seed", "init_seed", "sample_seed"}``.

    Raises:
        ValueError: datasets whose modalities, shapes, classes or split sizes
            differ (naming the run), or settings :func:`batching_support` refuses.
    """

    def __init__(
        self, datasets: Sequence[MultimodalDataset], config: RunConfig, seeds: Sequence[Mapping[str, int]]
    ) -> None:
        if len(datasets) != len(seeds) or not seeds:
            raise ValueError(
                f"BatchedTrainingRun: {len(datasets)} datasets for {len(seeds)} seed sets; expected one each, >= 1"
            )
        why = batching_support(config, datasets[0])
        if why is not None:
            raise ValueError(f"BatchedTrainingRun: {why}; use make_run_batch(), which loops over single runs")
        self.config = config
        self.method = make_method(config.method, **dict(config.method_kwargs))
        self.device = resolve_device(config.device)
        self.num_runs = n = len(seeds)
        ref = datasets[0]
        self.modality_names = ref.modality_names
        self.num_modalities = m = ref.num_modalities
        self.num_classes = ref.num_classes
        self._shapes = [tuple(x.shape[1:]) for x in ref.modalities.values()]
        self._template = build_model(
            self._shapes, self.num_classes, torch.Generator().manual_seed(0), "meta", config.feature_dim,
            self.method.shared_head, config.encoders,
        )
        # Stacked leaves (N, ...): every run's parameters, written by reset_run.
        self.params: dict[str, torch.Tensor] = {
            name: torch.zeros((n, *p.shape), device=self.device, requires_grad=True)
            for name, p in self._template.named_parameters()
        }
        self._branch = [self._branch_fn(j) for j in range(m)]
        self._optimizer = _StackedOptimizer(self.params, config)
        self.monitor = StackedMonitor(n, m, config.monitor, config.monitor_beta, self.device)
        self.threads: int | None = batch_threads(config.threads, n)
        # Data: shared (one dataset object for all runs) or stacked per run, on the device.
        self._datasets: list[MultimodalDataset] = [ref] * n
        self._shared = True
        self._raw = [x.to(self.device) for x in ref.modalities.values()]
        self._labels = ref.labels.to(self.device)
        splits = ref.splits(0, config.split_fractions)
        self._split_sizes = {s: len(splits[s]) for s in ("train", "val", "test")}
        self._splits = {
            s: torch.zeros(n, k, dtype=torch.long, device=self.device) for s, k in self._split_sizes.items()
        }
        self._stats = [self._standardisation(x, splits.train.to(self.device)) for x in self._raw]
        # Standardisation as x * scale + shift (scale = 1/std, shift = -mean/std): one fused
        # addcmul per batch instead of a broadcast subtraction and a division.
        self._scale = [torch.ones((n, *mu.shape), device=self.device) for mu, _ in self._stats]
        self._shift = [torch.zeros((n, *mu.shape), device=self.device) for mu, _ in self._stats]
        self._generators = [torch.Generator(device=self.device) for _ in range(n)]
        self.steps = np.zeros(n, dtype=np.int64)
        self.iterations = np.zeros(n, dtype=np.int64)
        self._prev_branch_loss = np.zeros((n, m))
        for i, (data, s) in enumerate(zip(datasets, seeds)):
            self.reset_run(i, data, s)

    # -- runs ------------------------------------------------------------------------

    @property
    def iterations_per_epoch(self) -> int:
        return max(1, -(-self._split_sizes["train"] // self.config.base_batch))

    def reset_run(self, i: int, dataset: MultimodalDataset, seeds: Mapping[str, int]) -> None:
        """Start run ``i`` afresh on ``dataset`` with ``seeds``; the other runs go on untouched."""
        split_seed, init_seed, sample_seed = _seeds(seeds, f"run {i}")
        self._check_compatible(i, dataset)
        with torch.no_grad():
            if dataset is not self._datasets[i] or not self._shared:
                self._place_data(i, dataset)
            splits = dataset.splits(split_seed, self.config.split_fractions).to(self.device)
            for s in self._splits:
                if len(splits[s]) != self._split_sizes[s]:
                    raise ValueError(
                        f"run {i}: its {s} split has {len(splits[s])} samples, the batch's {self._split_sizes[s]}; "
                        "runs of one batch need splits of equal sizes"
                    )
                self._splits[s][i] = splits[s]
            for j in range(self.num_modalities):
                mean, std = self._standardisation(self._run_raw(j, i), splits.train)
                self._scale[j][i], self._shift[j][i] = 1.0 / std, -mean / std
            model = build_model(
                self._shapes, self.num_classes, torch.Generator().manual_seed(init_seed), self.device,
                self.config.feature_dim, self.method.shared_head, self.config.encoders,
            )
            for name, p in model.named_parameters():
                self.params[name][i] = p
        self._optimizer.reset_run(i)
        self.monitor.reset_run(i)
        self._generators[i] = torch.Generator(device=self.device).manual_seed(sample_seed)
        self.steps[i] = 0
        self.iterations[i] = 0
        self._prev_branch_loss[i] = 0.0

    def _check_compatible(self, i: int, dataset: MultimodalDataset) -> None:
        shapes = [tuple(x.shape[1:]) for x in dataset.modalities.values()]
        if dataset.modality_names != self.modality_names or shapes != self._shapes:
            raise ValueError(
                f"run {i}: dataset with modalities {dict(zip(dataset.modality_names, shapes))}, but the batch "
                f"trains {dict(zip(self.modality_names, self._shapes))}; runs of one batch share modalities and shapes"
            )
        if dataset.num_classes != self.num_classes:
            raise ValueError(f"run {i}: {dataset.num_classes} classes, the batch's {self.num_classes}")

    def _place_data(self, i: int, dataset: MultimodalDataset) -> None:
        """Give run ``i`` its own data: the shared tensors become stacked ``(N, n, ...)`` copies first."""
        n = self.num_runs
        if self._shared:
            if dataset is self._datasets[0] and all(d is dataset for d in self._datasets):
                return
            if len(dataset) != len(self._labels):
                raise ValueError(f"run {i}: {len(dataset)} samples, the batch's {len(self._labels)}")
            self._raw = [x.unsqueeze(0).repeat(n, *([1] * x.ndim)) for x in self._raw]
            self._labels = self._labels.unsqueeze(0).repeat(n, 1)
            self._shared = False
        if len(dataset) != self._labels.shape[1]:
            raise ValueError(f"run {i}: {len(dataset)} samples, the batch's {self._labels.shape[1]}")
        for j, x in enumerate(dataset.modalities.values()):
            self._raw[j][i] = x.to(self.device)
        self._labels[i] = dataset.labels.to(self.device)
        self._datasets[i] = dataset

    @staticmethod
    def _standardisation(x: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`~dus_gym.data.placement.standardisation` of one run's data, without its leading axis."""
        mean, std = standardisation(x, train)
        return mean[0], std[0]

    def _run_raw(self, j: int, i: int) -> torch.Tensor:
        return self._raw[j] if self._shared else self._raw[j][i]

    # -- batches ---------------------------------------------------------------------

    def _gather(self, j: int, idx: torch.Tensor) -> torch.Tensor:
        """Standardised rows ``idx`` ``(N, P)`` of modality j, each run's own: ``(N, P, ...)``."""
        raw = self._raw[j]
        # index_select on flat rows: a plain row gather, cheaper than advanced indexing on the CPU.
        if self._shared:
            x = raw.index_select(0, idx.reshape(-1))
        else:
            offsets = torch.arange(self.num_runs, device=self.device)[:, None] * raw.shape[1]
            x = raw.flatten(0, 1).index_select(0, (idx + offsets).reshape(-1))
        x = x.view(*idx.shape, *x.shape[1:])
        return torch.addcmul(self._shift[j][:, None], x, self._scale[j][:, None])

    def _gather_labels(self, idx: torch.Tensor) -> torch.Tensor:
        if self._shared:
            return self._labels[idx]
        return self._labels[torch.arange(self.num_runs, device=self.device)[:, None], idx]

    def _stack_padded(self, rows: list[torch.Tensor], width: int) -> torch.Tensor:
        """Index rows of different lengths as ``(N, width)``, padded with index 0 (masked out by the caller)."""
        if all(len(r) == width for r in rows):
            return torch.stack(rows)
        out = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def _draw(self, i: int, n: int) -> torch.Tensor:
        """``n`` training indices of run i, drawn as :meth:`TrainingRun._draw` draws them."""
        train = self._splits["train"][i]
        return train[torch.randint(len(train), (n,), generator=self._generators[i], device=self.device)]

    def _branch_fn(self, j: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Branch logits of modality j for all runs: ``(N, P, ...) -> (N, P, C)``."""
        encoder, head = self._template.encoders[j], self._template.head(j)
        enc_prefix = f"encoders.{j}."
        head_prefix = f"heads.{0 if self._template.shared_head else j}."
        if isinstance(encoder, MLPEncoder):
            names = [f"{enc_prefix}net.{name}" for name, _ in encoder.net.named_children()]
            return self._stacked_mlp([*names, head_prefix[:-1]], [*encoder.net, head])

        def one(enc: dict[str, torch.Tensor], hd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(head, hd, (functional_call(encoder, enc, (x,)),))

        batched = vmap(one)

        def branch(x: torch.Tensor) -> torch.Tensor:
            enc = {k[len(enc_prefix):]: v for k, v in self.params.items() if k.startswith(enc_prefix)}
            hd = {k[len(head_prefix):]: v for k, v in self.params.items() if k.startswith(head_prefix)}
            return batched(enc, hd, x)

        return branch

    def _stacked_mlp(self, names: list[str], layers: list[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
        """Linear and ReLU layers on stacked parameters without vmap: ``(N, P, D) -> (N, P, C)``.

        Activations are kept feature-major, ``(N, features, P)``: each linear
        layer is one ``baddbmm(b, W, h)`` with ``W`` in ``nn.Linear``'s own
        ``(N, out, in)`` layout, so its weight gradient comes out contiguous.
        vmap's ``x @ W.T`` gives a transposed gradient that autograd then copies,
        and adds the bias apart. With the fused standardisation this took N = 16
        digits runs from 94.5 to 135-150 env steps/s on 2 cores
        (``python -m benchmarks.throughput --batched``, docs/batched.md).
        """
        steps: list[tuple[str, str] | None] = []
        for name, layer in zip(names, layers):
            if isinstance(layer, nn.Linear):
                steps.append((f"{name}.weight", f"{name}.bias"))
            elif isinstance(layer, nn.ReLU):
                steps.append(None)
            else:
                raise TypeError(f"_stacked_mlp: layer {name} is a {type(layer).__name__}; expected Linear or ReLU")

        def branch(x: torch.Tensor) -> torch.Tensor:
            h = x.transpose(1, 2)
            for step in steps:
                if step is None:
                    h = torch.relu(h)
                else:
                    h = torch.baddbmm(self.params[step[1]].unsqueeze(2), self.params[step[0]], h)
            return h.transpose(1, 2)

        return branch

    def _features(self, i: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
        """Run i's encoders as ``features(j, x)`` (for the linear probe)."""

        def features(j: int, x: torch.Tensor) -> torch.Tensor:
            prefix = f"encoders.{j}."
            enc = {k[len(prefix):]: v[i] for k, v in self.params.items() if k.startswith(prefix)}
            return functional_call(self._template.encoders[j], enc, (x,))

        return features

    # -- training ----------------------------------------------------------------------

    def step(self, counts: np.ndarray, iterations: int | None = None) -> list[StepReport]:
        """Train every run ``iterations`` iterations (default one epoch) with its own counts, then validate.

        Args:
            counts: int ``(N, M)``, run i's examples of modality j per iteration, each >= 1.
            iterations: iterations per run (lock-step: the same for all).

        Returns:
            One :class:`StepReport` per run, from a single device-to-host transfer.
        """
        counts = np.asarray(counts)
        n, m = self.num_runs, self.num_modalities
        if counts.shape != (n, m) or not np.issubdtype(counts.dtype, np.integer) or counts.min() < 1:
            raise ValueError(
                f"BatchedTrainingRun.step: counts {counts.tolist()}; expected integers >= 1 of shape ({n}, {m})"
            )
        iterations = self.iterations_per_epoch if iterations is None else int(iterations)
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        with torch_threads(self.threads):
            losses, branch_losses, scores = [], [], []
            for _ in range(iterations):
                loss, branch_loss, score = self._iteration(counts)
                losses.append(loss)
                branch_losses.append(branch_loss)
                scores.append(score)
            self.monitor.update_many(torch.stack(scores))
            mon = self.monitor
            val = self._evaluate_tensors("val")
            parts = (
                mon.cumulative, mon.last, mon.discrepancy, torch.stack(branch_losses).mean(dim=0),
                torch.stack(losses).mean(dim=0)[:, None], val,
            )
            flat = torch.cat([t.detach().float() for t in parts], dim=1).cpu().numpy().astype(np.float64)
        self.steps += 1
        self.iterations += iterations
        reports = []
        for i in range(n):
            row = flat[i]
            scores_i, last, discrepancy, branch_loss = (row[k * m : (k + 1) * m] for k in range(4))
            trend = branch_loss - self._prev_branch_loss[i]
            self._prev_branch_loss[i] = branch_loss
            reports.append(
                StepReport(
                    counts=counts[i].astype(np.int64), iterations=iterations, scores=scores_i, last_scores=last,
                    discrepancy=discrepancy, train_loss=float(row[4 * m]), branch_loss=branch_loss,
                    branch_loss_trend=trend, validation=self._unpack(row[4 * m + 1 :]),
                    finite=bool(np.isfinite(row).all()),
                )
            )
        return reports

    def _iteration(self, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One iteration of every run; returns ``(N,)`` loss, ``(N, M)`` branch loss and score ``s_t``."""
        if isinstance(self.method, MLAMethod):
            return self._mla_iteration(counts)
        return self._joint_iteration(counts)

    def _joint_iteration(self, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``joint`` (and ``ogm_ge``) as :class:`~dus_gym.methods.joint.JointMethod`, padded to the largest P."""
        n, m, dev = self.num_runs, self.num_modalities, self.device
        per_run = counts.max(axis=1)
        P = int(per_run.max())
        # Each run's generator is called in a single run's order: its batch, then each
        # modality present on fewer rows; across runs the order does not matter.
        idx = self._stack_padded([self._draw(i, int(per_run[i])) for i in range(n)], P)
        valid = torch.arange(P, device=dev)[None, :] < torch.as_tensor(per_run, device=dev)[:, None]
        present = []
        for j in range(m):
            partial = np.flatnonzero(counts[:, j] < per_run)
            mask = valid.clone() if len(partial) else valid
            for i in partial:  # the same draw as JointMethod: a random n_j of the P_i rows
                rows = torch.randperm(int(per_run[i]), generator=self._generators[i], device=dev)[: int(counts[i, j])]
                mask[i] = False
                mask[i, rows] = True
            present.append(mask)
        y = self._gather_labels(idx)
        fused: torch.Tensor | None = None
        logits = []
        for j in range(m):
            lg = self._branch[j](self._gather(j, idx))
            logits.append(lg)
            # where(), not a product: an absent modality adds exactly zero, as in a single run.
            contribution = torch.where(present[j][..., None], lg, 0.0)
            fused = contribution if fused is None else fused + contribution
        assert fused is not None
        loss = normalised_loss(fused, y, self.config.base_batch, valid)
        self._optimizer.zero_grad()
        loss.sum().backward()
        stats = [loss_and_score(lg, y, present[j]) for j, lg in enumerate(logits)]
        branch_loss = torch.stack([s[0] for s in stats], dim=1)
        score = torch.stack([s[1] for s in stats], dim=1)
        if isinstance(self.method, OGMGEMethod):
            self._modulate(score)
        self._optimizer.step()
        return loss.detach(), branch_loss, score

    def _modulate(self, score: torch.Tensor) -> None:
        """OGM-GE per run (:meth:`~dus_gym.methods.ogm_ge.OGMGEMethod.modulate_gradients`)."""
        assert isinstance(self.method, OGMGEMethod)
        coeff = ogm_coefficients(score, self.method.alpha)  # (N, M)
        grads = [
            [p.grad for name, p in self.params.items() if name.startswith(f"encoders.{j}.") and p.grad is not None]
            for j in range(self.num_modalities)
        ]
        modulate_encoder_gradients(grads, coeff, self.method.noise, self._generators)

    def _mla_iteration(self, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``mla`` as :class:`~dus_gym.methods.mla.MLAMethod` (no projection): one step per modality, in turn."""
        n, dev = self.num_runs, self.device
        total = torch.zeros(n, device=dev)
        branch_losses, scores = [], []
        for j in range(self.num_modalities):
            n_j = counts[:, j]
            P = int(n_j.max())
            idx = self._stack_padded([self._draw(i, int(n_j[i])) for i in range(n)], P)
            valid = torch.arange(P, device=dev)[None, :] < torch.as_tensor(n_j, device=dev)[:, None]
            y = self._gather_labels(idx)
            logits = self._branch[j](self._gather(j, idx))
            loss = normalised_loss(logits, y, self.config.base_batch, valid)
            self._optimizer.zero_grad()
            loss.sum().backward()
            self._optimizer.step()
            total = total + loss.detach()
            bl, sc = loss_and_score(logits, y, valid)
            branch_losses.append(bl)
            scores.append(sc)
        return total, torch.stack(branch_losses, dim=1), torch.stack(scores, dim=1)

    # -- evaluation --------------------------------------------------------------------

    @torch.inference_mode()
    def _evaluate_tensors(self, split: str) -> torch.Tensor:
        """Every run's metrics of a split, ``(N, 3 + 2M)``: the layout of
        :meth:`TrainingRun.evaluate_tensors`."""
        idx = self._splits[split]
        chunks = []
        for c in idx.split(self.config.eval_batch, dim=1):
            chunks.append(torch.stack([self._branch[j](self._gather(j, c)) for j in range(self.num_modalities)], 1))
        logits = torch.cat(chunks, dim=2)  # (N, M, n, C)
        y = self._gather_labels(idx)  # (N, n)
        if self._shared:
            y = y.expand(self.num_runs, -1)
        return split_metrics(logits, y, self.method.fuse, self.num_classes)

    def _unpack(self, values: np.ndarray) -> Evaluation:
        return unpack_evaluation(values, self.num_modalities)

    def evaluate(self, split: str = "val") -> list[Evaluation]:
        """Every run's metrics on ``split``, one :class:`~dus_gym.run.Evaluation` each."""
        with torch_threads(self.threads):
            values = self._evaluate_tensors(split).cpu().numpy()
        return [self._unpack(row) for row in values]

    def report(self, i: int, split: str = "test", probe: bool = True) -> dict[str, Any]:
        """Run i's held-out metrics, as :meth:`TrainingRun.report` gives them (``info["test"]``)."""
        return held_out_report(
            self.evaluate(split)[i], self.modality_names, (lambda: self._probe(i, split)) if probe else None
        )

    def _probe(self, i: int, split: str) -> list[float]:
        """Run i's linear probes (:func:`~dus_gym.metrics.probe_accuracies`) on its own standardised data."""
        with torch_threads(self.threads):
            inputs = [
                torch.addcmul(self._shift[j][i], self._run_raw(j, i), self._scale[j][i])
                for j in range(self.num_modalities)
            ]
            labels = self._labels if self._shared else self._labels[i]
            return probe_accuracies(
                self._features(i), inputs, labels, self._splits["train"][i], self._splits[split][i], self.config
            )
