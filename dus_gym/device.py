"""The torch device and thread count a run uses (plain helpers, no dus_gym imports)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

__all__ = ["resolve_device", "torch_threads"]


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device of a run: ``"auto"`` is CUDA when available, else the CPU.

    Raises a ValueError naming the value for a device torch does not know
    (``"nosuch"``) or one this machine lacks (``"cuda"`` without CUDA), so a
    bad setting fails where it is given, not at the first tensor moved.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device {device!r}: not a torch device ({err}); expected 'auto', 'cpu', 'cuda', 'cuda:N', ..."
        ) from None
    available: dict[str, Callable[[], bool]] = {
        "cuda": torch.cuda.is_available,
        "mps": torch.backends.mps.is_available,
    }
    if dev.type in available and not available[dev.type]():
        raise ValueError(f"device {device!r}: this machine has no {dev.type.upper()} device; use 'cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the caller's setting.

    ``None`` leaves torch's setting alone. Setting the count costs well under a
    microsecond, so a run can scope it to each call rather than change the
    process for its user.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
