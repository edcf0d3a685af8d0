"""``evaluate-surrogate``: check a trained surrogate against fresh PDE solves.

Examples
--------
::

    mpiexec -n 2 evaluate-surrogate model/ --samples 200 --seed 7 --out report/
    evaluate-surrogate model/ --data other.h5 --out report/
    evaluate-surrogate npz_model/ --problem cdr --set n_cells=12 --samples 20 --seed 7 --out r/
    evaluate-surrogate npz_model/ --problem my_model.py:MyModel --samples 20 --seed 7 --out r/

Started again with the same command after an interruption, it resumes ``REPORT_DIR/fresh.h5``.
See :mod:`surrogate.evaluation` for what is computed. MPI starts in :func:`main`, not on import.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from solvers.common.cli import (
    RankZeroParser,
    add_set_option,
    path_argument,
    run_job,
    stop_on_signals,
    whole_number,
)
from solvers.errors import InputError
from solvers.plugins import ALLOW_CHANGED_OPTION, SPEC_HELP, problems_help
from surrogate.errors import EvaluationError

PROG = "evaluate-surrogate"
#: bad input of any kind (EvaluationError, UsageError, ConfigError, DatasetFileError, ...):
#: exit status 2
USER_ERRORS = (InputError,)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (prints only on MPI world rank 0)."""
    p = RankZeroParser(prog=PROG, description="Compare a trained surrogate with fresh PDE "
                       "solves drawn from its training data's sampler and solver settings (run "
                       "under mpiexec for several ranks), or with an existing dataset (--data).",
                       epilog=problems_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=path_argument, metavar="MODEL_DIR",
                   help="model directory written by train-surrogate")
    p.add_argument("--out", required=True, type=path_argument, metavar="REPORT_DIR",
                   help="report directory (fresh.h5, report.json, report.md, figures)")
    p.add_argument("--samples", type=whole_number, default=200,
                   help="fresh samples (default 200)")
    p.add_argument("--seed", type=int, help="seed of the fresh samples (must differ from the "
                   "training data's seed; required unless --data)")
    p.add_argument("--ranks-per-sample", type=int, default=1, metavar="K",
                   help="ranks that solve one sample together (must divide the rank count)")
    p.add_argument("--data", type=path_argument, metavar="FILE",
                   help="evaluate against this dataset (.h5, .npz, .mat) instead of solving")
    p.add_argument("--allow-different-settings", action="store_true",
                   help="with --data: evaluate on a file solved with other solver settings "
                   "than the training data (refused otherwise)")
    p.add_argument("--problem", metavar="PROBLEM",
                   help="problem to solve, for models trained on data without solver "
                   f"provenance (.npz/.mat): {SPEC_HELP}")
    p.add_argument(ALLOW_CHANGED_OPTION, action="store_true",
                   help="re-solve with the recorded plugin even if its code (file SHA-256, "
                   "version) or settings changed since the training data was made")
    add_set_option(p, help="solver setting with --problem; VALUE is a TOML literal "
                   "(repeatable)")
    p.add_argument("--device", help="device of the surrogate (cpu, cuda, cuda:N; default: the "
                   "training device if available, else cpu)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of torch for the "
                   "surrogate (default 1: one core, as a PDE solve on one rank; several "
                   "threads on a busy machine slow small batches down)")
    p.add_argument("--checkpoint-interval", type=float, default=10.0, metavar="SECONDS",
                   help="minimum seconds between checkpoints of fresh.h5 (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def check_options(args: argparse.Namespace, world_size: int) -> None:
    """Option combinations argparse cannot check; EvaluationError naming the option."""
    if args.assign and args.problem is None:
        raise EvaluationError("--set needs --problem (a model with solver provenance uses "
                              "its training data's settings)")
    if args.data is not None and (args.problem is not None or args.seed is not None):
        raise EvaluationError("--data evaluates an existing file: --problem/--set/--seed "
                              "do not apply")
    if args.allow_different_settings and args.data is None:
        raise EvaluationError("--allow-different-settings applies to --data only")
    if args.ranks_per_sample < 1 or world_size % args.ranks_per_sample:
        raise EvaluationError(f"--ranks-per-sample {args.ranks_per_sample} must divide "
                              f"the number of MPI ranks ({world_size})")
    if args.threads < 1:
        raise EvaluationError(f"--threads must be >= 1, got {args.threads}")


def run(args: argparse.Namespace, world: Any) -> dict | None:
    """Check the options and run the evaluation (collective); the report on rank 0."""
    import torch

    from solvers.common.toml import parse_assignments
    from surrogate.evaluation import EvaluationRequest, evaluate

    check_options(args, world.size)
    torch.set_num_threads(args.threads)
    request = EvaluationRequest(
        model_dir=args.model, out=args.out, samples=args.samples, seed=args.seed,
        ranks_per_sample=args.ranks_per_sample, data=args.data, problem=args.problem,
        settings=parse_assignments(args.assign), device=args.device,
        checkpoint_interval=args.checkpoint_interval, progress=not args.no_progress,
        allow_different_settings=args.allow_different_settings,
        allow_changed_plugin=args.allow_changed_plugin)
    return evaluate(request, world)


def interrupted_text(fresh: Path) -> str:
    """What an interruption leaves: the fresh solves saved so far, or nothing."""
    if fresh.exists():
        return f"finished solves are saved in {fresh}; run the same command again to resume"
    return f"nothing was saved yet ({fresh} was not written)"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 a fresh file that cannot be written,
    2 user error, 128 + signal number when interrupted). Bugs abort all ranks."""
    from solvers.common.cli import start_mpi

    MPI = start_mpi(PROG)  # loopback defaults for single-node runs, then MPI

    from datasets.errors import DatasetWriteError, ProblemBrokeContract
    from surrogate.errors import ReportWriteError
    from surrogate.evaluation import summary_table

    world = MPI.COMM_WORLD
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    stop_on_signals(rank_zero_only=True)
    status, report = run_job(PROG, world, lambda: run(args, world), USER_ERRORS,
                             lambda: interrupted_text(args.out / "fresh.h5"),
                             fatal_errors=(DatasetWriteError, ReportWriteError,
                                           ProblemBrokeContract))
    if status:
        return status
    if world.rank == 0 and report is not None:
        print(summary_table(report), end="", flush=True)
        print(f"{PROG}: report in {args.out / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
