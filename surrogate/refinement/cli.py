"""``refine-surrogate``: adaptive sampling of new PDE solves until a target error.

Examples
--------
::

    mpiexec -n 2 refine-surrogate ensemble/ --target 0.005 --max-solves 2000 --batch 100 \\
        --out refine/
    refine-surrogate ensemble/ --strategy uniform --target 0.005 --max-solves 2000 \\
        --batch 100 --out uniform/

Started again with the same command after an interruption (even ``kill -9``), it continues
where it stopped. See :mod:`surrogate.refinement` and docs/refine.md. Exit statuses: 0 done
(target reached or budget spent), 1 a failure (a file that cannot be written, training that
diverged), 2 bad input, 128 + signal when interrupted. MPI starts in :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from solvers.common.cli import (
    RankZeroParser,
    run_job,
    start_mpi,
    stop_on_signals,
    whole_number,
)
from solvers.errors import InputError, RunError

PROG = "refine-surrogate"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (prints only on MPI world rank 0)."""
    p = RankZeroParser(prog=PROG, description="Add PDE solves where an ensemble surrogate "
                       "predicts the largest errors, retrain, and repeat until the error on a "
                       "fixed set of fresh solves reaches --target or --max-solves are spent "
                       "(run under mpiexec for several ranks).")
    p.add_argument("model", type=Path, metavar="MODEL_DIR",
                   help="an ensemble written by train-surrogate --ensemble K")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="run folder")
    p.add_argument("--target", type=float, default=0.005,
                   help="mean relative error on the check set to reach (default 0.005)")
    p.add_argument("--max-solves", type=whole_number, default=2000,
                   help="budget of new training solves (default 2000; the check set is extra)")
    p.add_argument("--batch", type=whole_number, default=100,
                   help="solves per round (default 100)")
    p.add_argument("--strategy", choices=("adaptive", "uniform"), default="adaptive",
                   help="adaptive: the candidates with the largest predicted error (default); "
                   "uniform: plain draws from the sampler (the baseline)")
    p.add_argument("--candidates", type=whole_number,
                   help="candidates scored per round (default 10 x --batch)")
    p.add_argument("--check-samples", type=whole_number, default=200,
                   help="size of the fixed fresh check set (default 200)")
    p.add_argument("--check-seed", type=int,
                   help="dataset seed of the check set (default: the training data's + 1000)")
    p.add_argument("--seed", type=int, help="seed of the candidates (default: the training "
                   "data's seed)")
    p.add_argument("--cold", action="store_true", help="retrain every round from scratch "
                   "(all levels) instead of warm-starting the members on the finest level")
    p.add_argument("--ranks-per-sample", type=int, default=1, metavar="K",
                   help="ranks that solve one sample together (must divide the rank count)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the training (default 1)")
    p.add_argument("--checkpoint-interval", type=float, default=10.0, metavar="SECONDS",
                   help="minimum seconds between checkpoints of the solved files (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    return p


def options_of(args: argparse.Namespace) -> Any:
    """The :class:`~surrogate.refinement.options.RefineOptions` of the command line."""
    from surrogate.refinement.options import RefineOptions

    return RefineOptions(
        model_dir=args.model, out=args.out, target=args.target, max_solves=args.max_solves,
        batch=args.batch, strategy=args.strategy, candidates=args.candidates,
        check_samples=args.check_samples, check_seed=args.check_seed, seed=args.seed,
        warm_start=not args.cold, ranks_per_sample=args.ranks_per_sample,
        checkpoint_interval=args.checkpoint_interval, progress=not args.no_progress,
        threads=args.threads)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 failure, 2 bad input, 128 + signal)."""
    MPI = start_mpi(PROG)  # loopback defaults for single-node runs, then MPI

    from surrogate.refinement.loop import refine, summary_table

    world = MPI.COMM_WORLD
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    stop_on_signals(rank_zero_only=True)
    status, summary = run_job(
        PROG, world, lambda: refine(options_of(args), world), (InputError,),
        lambda: f"finished rounds are kept in {args.out}; run the same command again to "
                "continue", fatal_errors=(RunError, OSError))
    if status:
        return status
    if world.rank == 0 and summary is not None:
        print(summary_table(summary), end="", flush=True)
        print(f"{PROG}: figure {args.out / 'refine.png'}, latest model "
              f"{summary['model']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
