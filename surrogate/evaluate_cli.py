"""``evaluate-surrogate``: check a trained surrogate against fresh PDE solves.

Examples
--------
::

    mpiexec -n 2 evaluate-surrogate model/ --samples 200 --seed 7 --out report/
    evaluate-surrogate model/ --data other.h5 --out report/
    evaluate-surrogate npz_model/ --problem cdr --set n_cells=12 --samples 20 --seed 7 --out r/

Started again with the same command after an interruption, it resumes ``REPORT_DIR/fresh.h5``.
See :mod:`surrogate.evaluate` for what is computed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "evaluate-surrogate"


def build_parser(rank: int = 0) -> argparse.ArgumentParser:
    """The command-line parser (prints only on world rank ``0``)."""

    class Parser(argparse.ArgumentParser):
        def _print_message(self, message: str, file=None) -> None:  # noqa: ANN001
            if rank == 0:
                super()._print_message(message, file)

    p = Parser(prog=PROG, description="Compare a trained surrogate with fresh PDE solves drawn "
               "from its training data's sampler and solver settings (run under mpiexec for "
               "several ranks), or with an existing dataset (--data).")
    p.add_argument("model", type=Path, metavar="MODEL_DIR", help="model directory written by "
                   "train-surrogate")
    p.add_argument("--out", required=True, type=Path, metavar="REPORT_DIR",
                   help="report directory (fresh.h5, report.json, report.md, figures)")
    p.add_argument("--samples", type=int, default=200, help="fresh samples (default 200)")
    p.add_argument("--seed", type=int, help="seed of the fresh samples (must differ from the "
                   "training data's seed; required unless --data)")
    p.add_argument("--ranks-per-sample", type=int, default=1, metavar="K",
                   help="ranks that solve one sample together (must divide the rank count)")
    p.add_argument("--data", type=Path, metavar="FILE",
                   help="evaluate against this dataset (.h5, .npz, .mat) instead of solving")
    p.add_argument("--problem", choices=("cdr", "dcr"),
                   help="problem to solve, for models trained on data without solver "
                   "provenance (.npz/.mat)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="assign",
                   help="solver setting with --problem; VALUE is a TOML literal (repeatable)")
    p.add_argument("--device", help="device of the surrogate (cpu, cuda, cuda:N; default: the "
                   "training device if available, else cpu)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of torch for the "
                   "surrogate (default 1: one core, as a PDE solve on one rank; several "
                   "threads on a busy machine slow small batches down)")
    p.add_argument("--checkpoint-interval", type=float, default=10.0, metavar="SECONDS",
                   help="minimum seconds between checkpoints of fresh.h5 (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 user error, 128 + signal number when
    interrupted). Bugs abort all ranks."""
    from solvers.common.mpi_network import configure_mpi_network

    configure_mpi_network()  # loopback defaults for single-node runs, before MPI starts
    import dolfinx_solver  # noqa: F401  (orders MPI ahead of petsc4py / dolfinx)
    from mpi4py import MPI

    from datasets.cli import _stop_on_signals, run_job
    from datasets.config import resolve_overrides
    from datasets.errors import ConfigError, ConfigMismatchError, DatasetFileError
    from surrogate.evaluate import EvaluationError, EvaluationRequest, evaluate, summary_table

    world = MPI.COMM_WORLD
    try:
        args = build_parser(world.rank).parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    _stop_on_signals(world.rank)
    user_errors = (EvaluationError, ConfigError, ConfigMismatchError, DatasetFileError)

    def job() -> dict:
        if args.assign and args.problem is None:
            raise EvaluationError("--set needs --problem (a model with solver provenance uses "
                                  "its training data's settings)")
        if args.data is not None and (args.problem is not None or args.seed is not None):
            raise EvaluationError("--data evaluates an existing file: --problem/--set/--seed "
                                  "do not apply")
        if args.ranks_per_sample < 1 or world.size % args.ranks_per_sample:
            raise EvaluationError(f"--ranks-per-sample {args.ranks_per_sample} must divide "
                                  f"the number of MPI ranks ({world.size})")
        if args.threads < 1:
            raise EvaluationError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
        request = EvaluationRequest(
            model_dir=args.model, out=args.out, samples=args.samples, seed=args.seed,
            ranks_per_sample=args.ranks_per_sample, data=args.data, problem=args.problem,
            settings=resolve_overrides(None, args.assign), device=args.device,
            checkpoint_interval=args.checkpoint_interval, progress=not args.no_progress)
        return evaluate(request, world)

    status, report = run_job(
        PROG, world, job, user_errors,
        lambda: (f"finished solves are saved in {args.out / 'fresh.h5'}; run the same command "
                 "again to resume"))
    if status:
        return status
    if world.rank == 0:
        print(summary_table(report), end="", flush=True)
        print(f"{PROG}: report in {args.out / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
