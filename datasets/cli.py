"""``generate-dataset``: parameter/observable datasets from the PDE solvers, under MPI.

Examples
--------
::

    mpiexec -n 8 generate-dataset cdr --samples 800 --seed 1 --out cdr.h5
    mpiexec -n 8 generate-dataset dcr --samples 10000 --out dcr.h5 --ranks-per-sample 2
    generate-dataset dcr --samples 20 --out small.h5 --set 'n_cells=[12,12,6]'

Started again with the same command after an interruption, it resumes the file.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from solvers.common.mpi_network import configure_mpi_network

configure_mpi_network()  # loopback defaults for single-node runs, before MPI is initialised

import dolfinx_solver  # noqa: E402, F401  (orders MPI ahead of petsc4py / dolfinx)
from mpi4py import MPI  # noqa: E402

from datasets.config import resolve_overrides  # noqa: E402
from datasets.errors import (  # noqa: E402
    ConfigError,
    ConfigMismatchError,
    DatasetFileError,
    DatasetWriteError,
    Interrupted,
)
from datasets.generate import GenerationOptions, generate  # noqa: E402
from datasets.splits import SplitSpec  # noqa: E402
from solvers import SOLVERS  # noqa: E402

PROG = "generate-dataset"
#: paper dataset sizes (SPEC 3), the default --samples
PAPER_SAMPLES = {"cdr": 800, "dcr": 10000}
USER_ERRORS = (ConfigError, ConfigMismatchError, DatasetFileError)


class _RankZeroParser(argparse.ArgumentParser):
    """An ArgumentParser that prints (usage, errors, help) on world rank 0 only."""

    def _print_message(self, message: str, file=None) -> None:  # noqa: ANN001
        if MPI.COMM_WORLD.rank == 0:
            super()._print_message(message, file)


def sample_count(text: str) -> int:
    """``--samples`` value: an integer, also written as ``1e4`` (argparse type)."""
    try:
        value = float(text) if any(ch in text.lower() for ch in ".e") else int(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = _RankZeroParser(
        prog=PROG, description="Solve a PDE for many random parameter vectors in parallel and "
        "write a resumable HDF5 dataset (run under mpiexec for several ranks).")
    p.add_argument("problem", choices=sorted(SOLVERS), help="which PDE problem")
    p.add_argument("--out", required=True, type=Path, help="output HDF5 file (resumed if it "
                   "exists and was made with the same configuration)")
    p.add_argument("--samples", type=sample_count, help="number of samples (default: the paper's, "
                   + ", ".join(f"{k} {v}" for k, v in PAPER_SAMPLES.items()) + ")")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--ranks-per-sample", type=int, default=1, metavar="K",
                   help="ranks that solve one sample together (must divide the rank count)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="assign",
                   help="override a solver setting; VALUE is a TOML literal (repeatable)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML file of solver settings (--set overrides it)")
    p.add_argument("--split", type=str, metavar="TRAIN,VAL,TEST",
                   help="split sizes as counts (400,200,200) or fractions (0.8,0.1,0.1); "
                   "default: SPEC 3 ratios, CDR 50/25/25, DCR 80/10/10")
    p.add_argument("--checkpoint-interval", type=float, default=10.0, metavar="SECONDS",
                   help="minimum seconds between checkpoints of the output file (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def options_from_args(args: argparse.Namespace) -> GenerationOptions:
    """GenerationOptions from parsed arguments (raises ConfigError for bad values)."""
    return GenerationOptions(
        problem=args.problem, out=args.out,
        samples=args.samples if args.samples is not None else PAPER_SAMPLES[args.problem],
        seed=args.seed, settings=resolve_overrides(args.config, args.assign),
        ranks_per_sample=args.ranks_per_sample,
        split=SplitSpec.parse(args.split) if args.split is not None else None,
        checkpoint_interval=args.checkpoint_interval, progress=not args.no_progress)


def _stop_on_signals(rank: int) -> None:
    """SIGTERM/SIGINT (a scheduler's time limit, Ctrl-C): rank 0 raises :class:`Interrupted`,
    saves a checkpoint and exits; the other ranks ignore the signal and are ended by mpiexec
    when rank 0 exits, so they cannot take the job down before the checkpoint is written."""
    def interrupt(signum: int, frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a repeated signal must not abort the
            signal.signal(sig, signal.SIG_IGN)        # checkpoint that this one triggers
        raise Interrupted(signum)

    from petsc4py import PETSc  # noqa: F401  PetscInitialize installs handlers: replace them

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, interrupt if rank == 0 else signal.SIG_IGN)


def run_job[T](prog: str, world: MPI.Comm, job: Callable[[], T],
               user_errors: tuple[type[BaseException], ...],
               interrupted_text: Callable[[], str]) -> tuple[int, T | None]:
    """Run an MPI job (``generate-dataset``, the fresh solves of ``evaluate-surrogate``) and
    turn its failures into exit statuses, reported once (rank 0).

    Returns (0, result), (2, None) for ``user_errors`` (bad input), (1, None) for a dataset
    that cannot be written (disk full: the other ranks are ended). An :class:`Interrupted`
    (SIGTERM/SIGINT) prints ``interrupted_text()`` and exits at once with 128 + signal; any
    other exception is a bug: traceback, and all ranks are aborted.
    """
    try:
        return 0, job()
    except Interrupted as exc:
        name = signal.Signals(exc.signum).name
        print(f"{prog}: interrupted by signal {exc.signum} ({name}); {interrupted_text()}",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(128 + exc.signum)  # skip MPI_Finalize: the other ranks are not waiting
    except DatasetWriteError as exc:  # rank 0 only, possibly while the others still solve
        if world.rank == 0:
            print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        if world.size > 1:
            sys.stdout.flush()
            os._exit(1)  # mpiexec ends the other ranks
        return 1, None
    except user_errors as exc:
        if world.rank == 0:
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2, None
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        if world.size > 1:
            world.Abort(1)
        raise


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 user error, 128 + signal number when
    interrupted). Bugs abort all ranks."""
    world = MPI.COMM_WORLD
    args = build_parser().parse_args(argv)
    _stop_on_signals(world.rank)

    def interrupted_text() -> str:
        if args.out.exists():
            return f"finished samples are saved in {args.out}; run the same command again to resume"
        return f"nothing was saved yet ({args.out} was not written)"

    status, summary = run_job(PROG, world, lambda: generate(options_from_args(args)),
                              USER_ERRORS, interrupted_text)
    if status:
        return status
    if world.rank == 0:
        print(f"{PROG}: {summary.line()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
