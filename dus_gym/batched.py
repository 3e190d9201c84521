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

Every formula (the loss over B, ``s_t``, ``S_t``, OGM-GE's modulation,
evaluation, the report) is the single run's own function, called here over
the run axis (docs/architecture.md, "Where each formula lives"); this module
holds the iterations' control flow, and :mod:`dus_gym.stacked` the stacked
data, parameters and optimizer.

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
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from dus_gym.data import MultimodalDataset
from dus_gym.data.placement import fits_on_device
from dus_gym.methods import JointMethod, MLAMethod, OGMGEMethod, make_method
from dus_gym.methods.base import normalised_loss
from dus_gym.methods.ogm_ge import modulate_encoder_gradients, ogm_coefficients
from dus_gym.metrics import Evaluation, held_out_report, probe_accuracies, split_metrics, unpack_evaluation
from dus_gym.models import MultimodalModel, build_model
from dus_gym.models.encoders import ConvEncoder, MLPEncoder
from dus_gym.monitor import StackedMonitor, loss_and_score
from dus_gym.run import RunConfig, StepReport, TrainingRun, resolve_device, torch_threads
from dus_gym.stacked import StackedData, StackedModel, StackedOptimizer

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

    - N = 1: one stacked run costs 1.17x a single one on the digits MLPs
      (docs/batched.md, "Why the single run is not the batched run with N = 1");
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
        self.data = StackedData(ref, n, config.split_fractions, self.device)
        self.model = StackedModel(_meta_model(config, ref), n, self.device)
        self._branch = [self.model.branch(j) for j in range(m)]
        self._optimizer = StackedOptimizer(self.params, config)
        self.monitor = StackedMonitor(n, m, config.monitor, config.monitor_beta, self.device)
        self.threads: int | None = batch_threads(config.threads, n)
        self.steps = np.zeros(n, dtype=np.int64)
        self.iterations = np.zeros(n, dtype=np.int64)
        self._prev_branch_loss = np.zeros((n, m))
        for i, (data, s) in enumerate(zip(datasets, seeds)):
            self.reset_run(i, data, s)

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Every run's parameters, stacked leaves ``(N, ...)`` by name (:class:`~dus_gym.stacked.StackedModel`)."""
        return self.model.params

    @property
    def iterations_per_epoch(self) -> int:
        return max(1, -(-self.data.split_sizes["train"] // self.config.base_batch))

    def reset_run(self, i: int, dataset: MultimodalDataset, seeds: Mapping[str, int]) -> None:
        """Start run ``i`` afresh on ``dataset`` with ``seeds``; the other runs go on untouched."""
        split_seed, init_seed, sample_seed = _seeds(seeds, f"run {i}")
        self.data.reset_run(i, dataset, split_seed, sample_seed)
        model = build_model(
            self._shapes, self.num_classes, torch.Generator().manual_seed(init_seed), self.device,
            self.config.feature_dim, self.method.shared_head, self.config.encoders,
        )
        self.model.reset_run(i, model)
        self._optimizer.reset_run(i)
        self.monitor.reset_run(i)
        self.steps[i] = 0
        self.iterations[i] = 0
        self._prev_branch_loss[i] = 0.0

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
        idx = self.data.stack_padded([self.data.draw(i, int(per_run[i])) for i in range(n)], P)
        valid = torch.arange(P, device=dev)[None, :] < torch.as_tensor(per_run, device=dev)[:, None]
        present = []
        for j in range(m):
            partial = np.flatnonzero(counts[:, j] < per_run)
            mask = valid.clone() if len(partial) else valid
            for i in partial:  # the same draw as JointMethod: a random n_j of the P_i rows
                gen = self.data.generators[i]
                rows = torch.randperm(int(per_run[i]), generator=gen, device=dev)[: int(counts[i, j])]
                mask[i] = False
                mask[i, rows] = True
            present.append(mask)
        y = self.data.gather_labels(idx)
        fused: torch.Tensor | None = None
        logits = []
        for j in range(m):
            lg = self._branch[j](self.data.gather(j, idx))
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
        grads = [[p.grad for p in self.model.encoder_params(j) if p.grad is not None]
                 for j in range(self.num_modalities)]
        modulate_encoder_gradients(grads, coeff, self.method.noise, self.data.generators)

    def _mla_iteration(self, counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``mla`` as :class:`~dus_gym.methods.mla.MLAMethod` (no projection): one step per modality, in turn."""
        n, dev = self.num_runs, self.device
        total = torch.zeros(n, device=dev)
        branch_losses, scores = [], []
        for j in range(self.num_modalities):
            n_j = counts[:, j]
            P = int(n_j.max())
            idx = self.data.stack_padded([self.data.draw(i, int(n_j[i])) for i in range(n)], P)
            valid = torch.arange(P, device=dev)[None, :] < torch.as_tensor(n_j, device=dev)[:, None]
            y = self.data.gather_labels(idx)
            logits = self._branch[j](self.data.gather(j, idx))
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
        idx = self.data.splits[split]
        chunks = []
        for c in idx.split(self.config.eval_batch, dim=1):
            chunks.append(torch.stack([self._branch[j](self.data.gather(j, c)) for j in range(self.num_modalities)], 1))
        logits = torch.cat(chunks, dim=2)  # (N, M, n, C)
        y = self.data.gather_labels(idx)  # (N, n)
        if self.data.shared:
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
                torch.addcmul(self.data.shift[j][i], self.data.run_raw(j, i), self.data.scale[j][i])
                for j in range(self.num_modalities)
            ]
            labels = self.data.labels if self.data.shared else self.data.labels[i]
            splits = self.data.splits
            return probe_accuracies(
                self.model.features(i), inputs, labels, splits["train"][i], splits[split][i], self.config
            )
