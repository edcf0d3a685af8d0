"""``generate-dataset``: parameter/observable datasets from the PDE solvers, under MPI.

Examples
--------
::

    mpiexec -n 8 generate-dataset cdr --samples 800 --seed 1 --out cdr.h5
    mpiexec -n 8 generate-dataset dcr --samples 10000 --out dcr.h5 --ranks-per-sample 2
    generate-dataset dcr --samples 20 --out small.h5 --set 'n_cells=[12,12,6]'
    mpiexec -n 2 generate-dataset examples/diffusion_kl.py:DiffusionKL --samples 1000 --out kl.h5
    generate-dataset umbridge --set url="http://127.0.0.1:4242" --set model="forward" \
        --set 'lower=[0, 0]' --set 'upper=[1, 1]' --samples 100 --out ub.h5

The problem is any spec of :func:`solvers.plugins.resolve_problem` (docs/own-model.md).
Started again with the same command after an interruption, it resumes the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from datasets.config import resolve_overrides
from datasets.errors import (
    ConfigError,
    ConfigMismatchError,
    DatasetFileError,
    DatasetWriteError,
    ProblemBrokeContract,
)
from datasets.splits import SplitSpec
from solvers.common.cli import (
    RankZeroParser,
    add_set_option,
    path_argument,
    run_job,
    start_mpi,
    stop_on_signals,
    whole_number,
)
from solvers.plugins import SPEC_HELP, PluginError, problems_help

if TYPE_CHECKING:
    from datasets.generate import GenerationOptions

PROG = "generate-dataset"
#: bad input (exit status 2): options, settings, files, a plugin that cannot be used
USER_ERRORS = (ConfigError, ConfigMismatchError, DatasetFileError, PluginError)
#: failures on rank 0 while the other ranks may still work (exit status 1)
FATAL_ERRORS = (DatasetWriteError, ProblemBrokeContract)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = RankZeroParser(
        prog=PROG, description="Solve a PDE for many random parameter vectors in parallel and "
        "write a resumable HDF5 dataset (run under mpiexec for several ranks).",
        epilog=problems_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("problem", metavar="PROBLEM", help=SPEC_HELP)
    p.add_argument("--out", required=True, type=path_argument, help="output HDF5 file (resumed "
                   "if it "
                   "exists and was made with the same configuration)")
    p.add_argument("--samples", type=whole_number, help="number of samples (default: the "
                   "problem's default_samples: the paper's for cdr 800 and dcr 10000)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--ranks-per-sample", type=int, default=1, metavar="K",
                   help="ranks that solve one sample together (must divide the rank count)")
    add_set_option(p)
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML file of solver settings (--set overrides it)")
    p.add_argument("--split", type=str, metavar="TRAIN,VAL,TEST",
                   help="split sizes as counts (400,200,200) or fractions (0.8,0.1,0.1); "
                   "default: the problem's default_split (SPEC 3: CDR 50/25/25, DCR 80/10/10; "
                   "else 80/10/10)")
    p.add_argument("--sample-timeout", type=float, metavar="SECONDS",
                   help="seconds one solve may take; a solve still running then is "
                   "interrupted and recorded as failed (Python-level: see datasets.timeout "
                   "for its limits; default: no limit)")
    p.add_argument("--checkpoint-interval", type=float, default=10.0, metavar="SECONDS",
                   help="minimum seconds between checkpoints of the output file (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def options_from_args(args: argparse.Namespace) -> GenerationOptions:
    """GenerationOptions from parsed arguments (raises ConfigError for bad values)."""
    from datasets.generate import GenerationOptions

    return GenerationOptions(
        problem=args.problem, out=args.out,
        samples=args.samples, seed=args.seed,
        settings=resolve_overrides(args.config, args.assign),
        ranks_per_sample=args.ranks_per_sample,
        split=SplitSpec.parse(args.split) if args.split is not None else None,
        checkpoint_interval=args.checkpoint_interval, progress=not args.no_progress,
        sample_timeout=args.sample_timeout)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 user error, 128 + signal number when
    interrupted). Bugs abort all ranks."""
    world = start_mpi(PROG).COMM_WORLD  # loopback for single-node runs, before PETSc/dolfinx
    from datasets.generate import generate

    args = build_parser().parse_args(argv)
    stop_on_signals(rank_zero_only=True)

    def interrupted_text() -> str:
        if args.out.exists():
            return f"finished samples are saved in {args.out}; run the same command again to resume"
        return f"nothing was saved yet ({args.out} was not written)"

    status, summary = run_job(PROG, world, lambda: generate(options_from_args(args)),
                              USER_ERRORS, interrupted_text, fatal_errors=FATAL_ERRORS)
    if status:
        return status
    assert summary is not None  # run_job returns the job's Summary with status 0
    if world.rank == 0:
        print(f"{PROG}: {summary.line()}", flush=True)
        if summary.failure_line():
            print(f"{PROG}: {summary.failure_line()}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
