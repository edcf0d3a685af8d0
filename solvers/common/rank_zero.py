"""Run a step on rank 0 of a communicator and share its outcome with every rank.

The commands that do their bookkeeping on rank 0 while the other ranks wait (evaluate-surrogate,
refine-surrogate) use :func:`on_rank_zero`; an :class:`~solvers.errors.InputError` raised on
rank 0 is raised on every rank, so that all of them exit with the same message and status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from solvers.errors import InputError


def idle_barrier(comm: Any, poll_seconds: float = 0.01) -> None:
    """Barrier in which the waiting ranks sleep instead of spinning (so that they take no CPU
    time from rank 0's work, e.g. its timings)."""
    pending = comm.Ibarrier()
    while not pending.Test():
        time.sleep(poll_seconds)


def on_rank_zero[T](comm: Any, fn: Callable[[], T], idle: bool = False) -> T:
    """``fn()`` on rank 0 of ``comm``, its result broadcast to every rank.

    Parameters
    ----------
    comm : mpi4py communicator
    fn : callable
        The step (called on rank 0 only).
    idle : bool
        The other ranks sleep in :func:`idle_barrier` meanwhile and get None (the result is not
        broadcast).

    Raises
    ------
    InputError
        On every rank, when ``fn`` raised it on rank 0.
    """
    result: T | None = None
    error: Exception | None = None
    if comm.rank == 0:
        try:
            result = fn()
        except InputError as exc:
            error = exc
    if idle:
        idle_barrier(comm)
        error = comm.bcast(error)
    else:
        result, error = comm.bcast((result, error))
    if error is not None:
        raise error
    return cast(T, result)              # None on the ranks > 0 with ``idle``
