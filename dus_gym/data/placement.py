"""Where a run keeps its data: cached on the device, or in host memory with
batches moved through pinned memory.

A training run reads its inputs only as ``x[idx]`` (rows by index) and
``x.shape``. Data that fits on the device is standardised once and cached
there (a plain tensor). Data that does not fit, such as a large bundle that is
memory-mapped from disk, stays where it is on the host as a
:class:`HostResident`: each batch's rows are gathered on the host, copied to
pinned memory, sent to the device asynchronously and standardised there.
"""

from __future__ import annotations

import torch

__all__ = ["PLACEMENTS", "STD_FLOOR", "HostResident", "channel_stats", "fits_on_device", "standardisation"]

PLACEMENTS = ("auto", "device", "host")
DEVICE_FRACTION = 0.4
"""``"auto"`` caches data on a CUDA device when it takes at most this share of
the free device memory: standardising makes a transient copy, and the model
and its activations need the rest."""
STD_FLOOR = 1e-6
"""standardisation divides by at least this: a constant feature becomes 0, not NaN"""


def _stat_dims(x: torch.Tensor) -> list[int]:
    """The axes a statistic runs over: all but the last (vectors, sequences) or all but axis 1 (images)."""
    return [0, 2, 3] if x.ndim == 4 else list(range(x.ndim - 1))


def standardisation(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (unbiased, at least :data:`STD_FLOOR`) of ``x[rows]``
    per feature (vectors, sequences: last axis) or per channel (images: axis 1),
    shaped ``(1, ...)`` to broadcast against ``x``; ``(x - mean) / std`` is the
    standardised data (docs/method.md section 6).

    The one formula of a run's standardisation, for data held in memory: a
    single run (:class:`~dus_gym.run.TrainingRun`) and each run of a batch
    (:class:`~dus_gym.batched.BatchedTrainingRun`) call it on their training
    rows. :func:`channel_stats` is the same statistic accumulated in chunks,
    for data too large to gather at once.
    """
    ref = x[rows]
    dims = _stat_dims(x)
    return ref.mean(dim=dims, keepdim=True), ref.std(dim=dims, keepdim=True).clamp(min=STD_FLOOR)


def fits_on_device(tensors: list[torch.Tensor], device: torch.device) -> bool:
    """Whether float32 copies of ``tensors`` fit the device's free memory (see
    :data:`DEVICE_FRACTION`). The host (CPU) always counts as fitting."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    need = sum(t.numel() * 4 for t in tensors)
    return need <= DEVICE_FRACTION * free


def channel_stats(
    x: torch.Tensor, rows: torch.Tensor, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`standardisation`'s mean and standard deviation of ``x[rows]``,
    shaped to broadcast against ``x``'s rows; float32.

    Accumulated in float64 over chunks of ``chunk`` rows, so only one chunk of
    a memory-mapped array is in memory at a time.
    """
    dims = _stat_dims(x)
    rows = rows.cpu()
    total = torch.zeros((), dtype=torch.float64)
    s1: torch.Tensor | None = None
    s2: torch.Tensor | None = None
    for part in rows.split(chunk):
        block = x[part].double()
        n_block = block.numel() / max(block.shape[1] if x.ndim == 4 else block.shape[-1], 1)
        total += n_block
        b1 = block.sum(dim=dims, keepdim=True)
        b2 = block.square().sum(dim=dims, keepdim=True)
        s1 = b1 if s1 is None else s1 + b1
        s2 = b2 if s2 is None else s2 + b2
    if s1 is None or s2 is None or total < 2:
        raise ValueError(f"channel_stats: need at least two training values per channel, got {int(total)}")
    mean = s1 / total
    var = ((s2 - total * mean.square()) / (total - 1)).clamp(min=0)
    return mean.float(), var.sqrt().float().clamp(min=STD_FLOOR)


class HostResident:
    """One modality kept in host memory, served to the device one batch at a time.

    Args:
        x: ``(N, ...)`` float32 CPU tensor (memory-mapped is fine: only the
            rows asked for are read).
        mean, std: standardisation statistics shaped to broadcast against
            rows of ``x`` (from :func:`channel_stats` on the training rows).
        device: where batches go.

    ``self[idx]`` returns ``(len(idx), ...)`` standardised rows on the device,
    like indexing a cached tensor. On CUDA the rows pass through pinned
    memory, so the copy is asynchronous.
    """

    def __init__(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> None:
        if x.device.type != "cpu":
            raise ValueError(f"HostResident: data must be on the host, got a tensor on {x.device}")
        self.data = x
        self.device = device
        self.mean = mean.to(device)
        self.std = std.to(device)
        self.pin = device.type == "cuda"

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.data.index_select(0, idx.cpu())
        if self.pin:
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        return (rows - self.mean) / self.std
