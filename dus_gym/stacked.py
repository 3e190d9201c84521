"""The stacked state of N training runs: their data and their parameters (docs/batched.md).

:class:`StackedData` holds every run's data, split, standardisation and
batch generator; :class:`StackedModel` every run's parameters, stacked along
a leading axis, and the branch functions over them; :class:`StackedOptimizer`
updates them with per-run state. :class:`~dus_gym.batched.BatchedTrainingRun`
composes the three and runs the iterations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call, vmap

from dus_gym.data import MultimodalDataset
from dus_gym.data.placement import standardisation
from dus_gym.models import MultimodalModel
from dus_gym.models.encoders import MLPEncoder
from dus_gym.run import RunConfig

__all__ = ["StackedData", "StackedModel", "StackedOptimizer"]


class StackedData:
    """Every run's data on the device: shared (one dataset object for all runs) or stacked per run.

    Args:
        ref: the first run's dataset (shapes, classes and split sizes of all).
        num_runs: N.
        fractions: the split fractions (:attr:`RunConfig.split_fractions`).
        device: where everything lives.

    Each run standardises its batches with its own training-split statistics
    on the fly, as ``x * scale + shift`` (``scale = 1 / std``, ``shift =
    -mean / std``: one fused ``addcmul`` per batch instead of a broadcast
    subtraction and a division).
    """

    def __init__(
        self, ref: MultimodalDataset, num_runs: int, fractions: tuple[float, float, float], device: torch.device
    ) -> None:
        n = self.num_runs = num_runs
        self.device = device
        self.fractions = fractions
        self.modality_names = ref.modality_names
        self.num_classes = ref.num_classes
        self.shapes = [tuple(x.shape[1:]) for x in ref.modalities.values()]
        self.datasets: list[MultimodalDataset] = [ref] * n
        self.shared = True
        self.raw = [x.to(device) for x in ref.modalities.values()]
        self.labels = ref.labels.to(device)
        splits = ref.splits(0, fractions)
        self.split_sizes = {s: len(splits[s]) for s in ("train", "val", "test")}
        self.splits = {s: torch.zeros(n, k, dtype=torch.long, device=device) for s, k in self.split_sizes.items()}
        stat_shapes = [standardisation(x, splits.train.to(device))[0].shape[1:] for x in self.raw]
        self.scale = [torch.ones((n, *shape), device=device) for shape in stat_shapes]
        self.shift = [torch.zeros((n, *shape), device=device) for shape in stat_shapes]
        self.generators = [torch.Generator(device=device) for _ in range(n)]

    def reset_run(self, i: int, dataset: MultimodalDataset, split_seed: int, sample_seed: int) -> None:
        """Run ``i``'s data, split, standardisation and a fresh generator seeded ``sample_seed``."""
        self.check_compatible(i, dataset)
        with torch.no_grad():
            if dataset is not self.datasets[i] or not self.shared:
                self.place(i, dataset)
            splits = dataset.splits(split_seed, self.fractions).to(self.device)
            for s in self.splits:
                if len(splits[s]) != self.split_sizes[s]:
                    raise ValueError(
                        f"run {i}: its {s} split has {len(splits[s])} samples, the batch's {self.split_sizes[s]}; "
                        "runs of one batch need splits of equal sizes"
                    )
                self.splits[s][i] = splits[s]
            for j in range(len(self.raw)):
                mean, std = standardisation(self.run_raw(j, i), splits.train)
                self.scale[j][i], self.shift[j][i] = 1.0 / std[0], -mean[0] / std[0]
        self.generators[i] = torch.Generator(device=self.device).manual_seed(sample_seed)

    def check_compatible(self, i: int, dataset: MultimodalDataset) -> None:
        shapes = [tuple(x.shape[1:]) for x in dataset.modalities.values()]
        if dataset.modality_names != self.modality_names or shapes != self.shapes:
            raise ValueError(
                f"run {i}: dataset with modalities {dict(zip(dataset.modality_names, shapes))}, but the batch "
                f"trains {dict(zip(self.modality_names, self.shapes))}; runs of one batch share modalities and shapes"
            )
        if dataset.num_classes != self.num_classes:
            raise ValueError(f"run {i}: {dataset.num_classes} classes, the batch's {self.num_classes}")

    def place(self, i: int, dataset: MultimodalDataset) -> None:
        """Give run ``i`` its own data: the shared tensors become stacked ``(N, n, ...)`` copies first."""
        n = self.num_runs
        if self.shared:
            if dataset is self.datasets[0] and all(d is dataset for d in self.datasets):
                return
            if len(dataset) != len(self.labels):
                raise ValueError(f"run {i}: {len(dataset)} samples, the batch's {len(self.labels)}")
            self.raw = [x.unsqueeze(0).repeat(n, *([1] * x.ndim)) for x in self.raw]
            self.labels = self.labels.unsqueeze(0).repeat(n, 1)
            self.shared = False
        if len(dataset) != self.labels.shape[1]:
            raise ValueError(f"run {i}: {len(dataset)} samples, the batch's {self.labels.shape[1]}")
        for j, x in enumerate(dataset.modalities.values()):
            self.raw[j][i] = x.to(self.device)
        self.labels[i] = dataset.labels.to(self.device)
        self.datasets[i] = dataset

    def run_raw(self, j: int, i: int) -> torch.Tensor:
        return self.raw[j] if self.shared else self.raw[j][i]

    def gather(self, j: int, idx: torch.Tensor) -> torch.Tensor:
        """Standardised rows ``idx`` ``(N, P)`` of modality j, each run's own: ``(N, P, ...)``."""
        raw = self.raw[j]
        # index_select on flat rows: a plain row gather, cheaper than advanced indexing on the CPU.
        if self.shared:
            x = raw.index_select(0, idx.reshape(-1))
        else:
            offsets = torch.arange(self.num_runs, device=self.device)[:, None] * raw.shape[1]
            x = raw.flatten(0, 1).index_select(0, (idx + offsets).reshape(-1))
        x = x.view(*idx.shape, *x.shape[1:])
        return torch.addcmul(self.shift[j][:, None], x, self.scale[j][:, None])

    def gather_labels(self, idx: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return self.labels[idx]
        return self.labels[torch.arange(self.num_runs, device=self.device)[:, None], idx]

    def stack_padded(self, rows: list[torch.Tensor], width: int) -> torch.Tensor:
        """Index rows of different lengths as ``(N, width)``, padded with index 0 (masked out by the caller)."""
        if all(len(r) == width for r in rows):
            return torch.stack(rows)
        out = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def draw(self, i: int, n: int) -> torch.Tensor:
        """``n`` training indices of run i, drawn as :meth:`TrainingRun._draw` draws them."""
        train = self.splits["train"][i]
        return train[torch.randint(len(train), (n,), generator=self.generators[i], device=self.device)]


class StackedModel:
    """Every run's parameters as stacked leaves ``(N, ...)`` of one model definition, and its branches.

    Args:
        template: the model, on the meta device (its structure only).
        num_runs: N.
        device: where the parameters live.
    """

    def __init__(self, template: MultimodalModel, num_runs: int, device: torch.device) -> None:
        self.template = template
        self.params: dict[str, torch.Tensor] = {
            name: torch.zeros((num_runs, *p.shape), device=device, requires_grad=True)
            for name, p in template.named_parameters()
        }

    def reset_run(self, i: int, model: MultimodalModel) -> None:
        """Run ``i`` takes ``model``'s parameters (a freshly initialised model of the same structure)."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                self.params[name][i] = p

    def encoder_params(self, j: int) -> list[torch.Tensor]:
        """The stacked parameters of encoder j, in the encoder's parameter order."""
        return [p for name, p in self.params.items() if name.startswith(f"encoders.{j}.")]

    def branch(self, j: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Branch logits of modality j for all runs: ``(N, P, ...) -> (N, P, C)``."""
        encoder, head = self.template.encoders[j], self.template.head(j)
        enc_prefix = f"encoders.{j}."
        head_prefix = f"heads.{0 if self.template.shared_head else j}."
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

    def features(self, i: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
        """Run i's encoders as ``features(j, x)`` (for the linear probe)."""

        def features(j: int, x: torch.Tensor) -> torch.Tensor:
            prefix = f"encoders.{j}."
            enc = {k[len(prefix):]: v[i] for k, v in self.params.items() if k.startswith(prefix)}
            return functional_call(self.template.encoders[j], enc, (x,))

        return features


class StackedOptimizer:
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
