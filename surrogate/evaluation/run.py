"""The MPI run of an evaluation: plan on rank 0, fresh solves on every rank, report on rank 0.

The fresh solves run through the ``generate-dataset`` engine (:func:`datasets.generate.generate`:
MPI, dynamic balancing, atomic checkpoints, resume) into ``REPORT_DIR/fresh.h5``. With ``--data``
an existing dataset is evaluated instead. Only world rank 0 loads the surrogate and writes the
report; the other ranks sleep meanwhile. mpi4py and datasets are imported inside
:func:`evaluate`.
"""

from __future__ import annotations

from typing import Any

from solvers.common.rank_zero import on_rank_zero
from surrogate.evaluation.plan import plan
from surrogate.evaluation.report import write_report
from surrogate.evaluation.request import EvaluationRequest, Plan


def evaluate(request: EvaluationRequest, comm: Any = None) -> dict | None:
    """Plan, solve the fresh samples (collective) and write the report (rank 0).

    Parameters
    ----------
    request : EvaluationRequest
    comm : mpi4py.MPI.Comm, optional
        The ranks taking part (default ``MPI.COMM_WORLD``).

    Returns
    -------
    dict or None
        The report (the contents of ``report.json``) on rank 0 of ``comm``, None elsewhere.

    Raises
    ------
    surrogate.errors.EvaluationError, surrogate.errors.UsageError, datasets.ConfigError,
    datasets.ConfigMismatchError, datasets.DatasetFileError
        User errors (all :class:`~solvers.errors.InputError`), raised on every rank alike.
    """
    from solvers.common.mpi_network import init_mpi

    MPI = init_mpi()  # loopback defaults for single-node runs, then MPI
    world = comm if comm is not None else MPI.COMM_WORLD
    decided = on_rank_zero(world, lambda: plan(request))
    if decided.solve and not decided.complete:   # a complete fresh.h5 is not written again
        _solve_fresh(request, decided, world)
    report = on_rank_zero(world, lambda: write_report(request, decided), idle=True)
    return report if world.rank == 0 else None


def _solve_fresh(request: EvaluationRequest, decided: Plan, world: Any) -> None:
    """The fresh solves into ``decided.fresh_path`` (collective; resumes an interrupted run)."""
    from datasets.generate import GenerationOptions, generate

    generate(GenerationOptions(
        problem=decided.spec or decided.problem, out=decided.fresh_path, samples=request.samples,
        seed=int(request.seed or 0), settings=decided.settings or {},
        ranks_per_sample=request.ranks_per_sample,
        checkpoint_interval=request.checkpoint_interval, progress=request.progress),
        comm=world)
