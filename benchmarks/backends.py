"""Where benchmark work runs: serially, in a local process pool, or on Ray (``--backend``, ``--workers``).

Shared by ``benchmarks.compare`` (a unit is a cell or a batched group of cells)
and ``benchmarks.ceiling`` (a unit is one instance's search): :func:`map_units`
calls ``fn(unit, threads)`` for every unit and yields the results as they
finish, in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

__all__ = ["BACKENDS", "check_backend", "map_units"]

BACKENDS = ("local", "ray")

U = TypeVar("U")
R = TypeVar("R")


def check_backend(backend: str, workers: int) -> None:
    """Raise a ValueError naming the flag for an unknown backend or a worker count below 1."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: expected one of {list(BACKENDS)}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")


def _local_pool(fn: Callable[[U, int], R], units: Sequence[U], workers: int, threads: int) -> Iterator[R]:
    from concurrent.futures import FIRST_COMPLETED, wait

    from dus_gym.evaluation import episode_pool

    # Each call sets its worker's thread count; the workers end with this process.
    with episode_pool(workers) as pool:
        futures = {pool.submit(fn, unit, threads) for unit in units}
        try:
            while futures:
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _ray(fn: Callable[[U, int], R], units: Sequence[U], threads: int) -> Iterator[R]:
    try:
        import ray
    except ImportError:
        raise ImportError("--backend ray needs ray: pip install 'dus_gym[ray]'") from None
    if not ray.is_initialized():
        ray.init()  # connects to RAY_ADDRESS when set, else starts a local instance
    remote = ray.remote(num_cpus=threads)(fn)
    refs = [remote.remote(unit, threads) for unit in units]
    try:
        while refs:
            finished, refs = ray.wait(refs, num_returns=1)
            for ref in finished:
                yield ray.get(ref)
    finally:
        for ref in refs:
            ray.cancel(ref)


def map_units(
    fn: Callable[[U, int], R], units: Sequence[U], backend: str = "local", workers: int = 1, threads: int = 1
) -> Iterator[R]:
    """``fn(unit, threads)`` for every unit, on ``backend``; results as they finish, in any order.

    ``fn`` must be picklable (a module-level function, or a ``functools.partial`` of one) for the
    pool and Ray; with one local worker it runs in this process, in order.
    """
    check_backend(backend, workers)
    if backend == "ray":
        return _ray(fn, units, threads)
    if workers == 1:
        return (fn(unit, threads) for unit in units)
    return _local_pool(fn, units, workers, threads)
