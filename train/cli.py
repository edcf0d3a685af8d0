"""``train-surrogate``: train a separable surrogate with GNvpro or a baseline.

    train-surrogate --data data.h5 --method {gnvpro,gn,adam,lbfgsvpro,slimtrain}
                    [--config train.toml] [--device cpu|cuda] [--seed S] [--resume] --out model_dir
    train-surrogate --compare --data data.h5 [...] --out compare_dir

Writes into ``model_dir``: ``weights.npz`` + ``metadata.json`` (the surrogate, see
:mod:`surrogate.artifact`), ``history.csv``, ``convergence.png``, ``summary.json`` and
``summary.txt`` (slimTrain also ``lambda_history.csv`` and ``lambda.png``). ``--compare`` trains
all five methods into ``compare_dir/<method>/`` and
prints GNvpro table 2 rows (also in ``compare.txt``/``compare.json``, plot ``convergence.png``).

This module holds the options and the exit statuses only: the run is :mod:`train.run`, the
optimisers and models :mod:`train.factories`, the tables :mod:`train.summary`. Exit statuses:
0 success, 1 a failure while training (non-finite training, a full disk), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from solvers.common.cli import (
    BAD_INPUT,
    FAILURE,
    RankZeroParser,
    os_error_message,
    path_argument,
)
from solvers.errors import InputError, UsageError
from surrogate.device import resolve_device
from surrogate.errors import NonFiniteModelError
from train.config import METHODS, PRESETS
from train.errors import NonFiniteTrainingError
from train.run import RunOptions, run

PROG = "train-surrogate"


def build_parser() -> argparse.ArgumentParser:
    """The options of ``train-surrogate``."""
    p = RankZeroParser(
        prog=PROG, description="Train a separable surrogate c = W [F(y); 1] with GNvpro or "
        "a baseline (full GN, ADAM, L-BFGSvpro, slimTrain), multilevel in time (SPEC "
        "section 4).")
    p.add_argument("--data", required=True, help="dataset (.h5 from generate-dataset, .npz "
                   "with y, c (samples x features), or .mat with Y, C)")
    p.add_argument("--method", choices=METHODS, help="training method")
    p.add_argument("--compare", action="store_true",
                   help="train all five methods into OUT/<method>/ and print a comparison")
    p.add_argument("--methods", help="with --compare: comma-separated subset of the methods "
                   f"(default all: {','.join(METHODS)})")
    p.add_argument("--config", help="TOML file overriding the defaults (see train.config)")
    p.add_argument("--preset", choices=PRESETS, default="default",
                   help="default: the best surrogate (stable start, problem-declared input "
                   "encodings, radius continuation, budgets rebalanced across levels); paper: "
                   "GNvpro table 2 settings exactly (200/400 WU per level, T = 4, widths 8/16)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights, ADAM batches and (for files without a "
                   "stored split) the split")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in OUT from its last finished level")
    p.add_argument("--restart", action="store_true",
                   help="discard the checkpoint of an interrupted (or damaged) run in OUT and "
                   "train from the start")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model of a different run already in OUT (the same run "
                   "again replaces its own model without this option)")
    p.add_argument("--ensemble", type=int, metavar="K", help="train K >= 2 independently "
                   "seeded members (seeds derived from --seed) into one model directory: "
                   "predictive uncertainty, model.predict(y, return_std=True)")
    p.add_argument("--out", required=True, type=path_argument,
                   help="output model directory")
    p.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's "
                   "choice; 1 is often fastest for these small networks on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no per-iteration progress lines")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="GNvpro: the best surrogate reachable in this wall time; chooses the "
                   "width and the seconds of each level itself (ignores model.width and "
                   "work_units_per_level; stops within about one iteration of the budget); with "
                   "--ensemble K each member gets SECONDS / K")
    return p


def compare_methods(text: str | None) -> tuple[str, ...]:
    """The methods of ``--compare`` from ``--methods a,b`` (all of METHODS if None)."""
    if text is None:
        return METHODS
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise UsageError(f"--methods {text!r}: unknown method(s) {bad}; choose from "
                         f"{', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in names)


def options(args: argparse.Namespace) -> RunOptions:
    """The run's options from the parsed command line (``--threads`` is applied here).

    Raises
    ------
    UsageError
        Options that exclude each other or are out of range, an unusable ``--device``.
    """
    if not args.compare and args.method is None:
        raise UsageError("one of --method or --compare is required")
    if args.compare and args.method is not None:
        raise UsageError("--method and --compare exclude each other")
    if args.resume and args.restart:
        raise UsageError("--resume and --restart exclude each other")
    methods = compare_methods(args.methods) if args.compare else (args.method,)
    if args.methods is not None and not args.compare:
        raise UsageError("--methods selects the methods of --compare; use --method for one")
    if args.ensemble is not None and (args.ensemble < 2 or args.compare):
        raise UsageError(f"--ensemble {args.ensemble}: needs K >= 2 members and one --method"
                         if not args.compare else "--ensemble and --compare exclude each other")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be >= 0")
    if args.time_budget is not None and not (args.time_budget > 0 and args.time_budget < 1e9):
        raise UsageError(f"--time-budget {args.time_budget}: must be a positive number of "
                         "seconds")
    if args.time_budget is not None and "gnvpro" not in methods:
        raise UsageError("--time-budget applies to GNvpro only (--method gnvpro, or --compare "
                         "with gnvpro among --methods)")
    device = resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    return RunOptions(data=args.data, methods=methods, out=Path(args.out), compare=args.compare,
                      config=args.config, preset=args.preset, device=device, seed=args.seed,
                      resume=args.resume, restart=args.restart, overwrite=args.overwrite,
                      stream=None if args.quiet else sys.stdout, ensemble=args.ensemble or 0,
                      time_budget=args.time_budget)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 success, 1 failure, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:         # argparse has printed "train-surrogate: error: ..."
        return int(exc.code or 0)
    try:
        run(options(args))
        return 0
    except (NonFiniteTrainingError, NonFiniteModelError) as exc:
        print(f"{PROG}: error: {exc} (nothing was saved; the checkpoint of the finished "
              "levels, if any, is kept: change the settings and run with --restart)",
              file=sys.stderr)
        return FAILURE
    except InputError as exc:         # settings, data, output folder, checkpoint, memory
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except OSError as exc:
        print(f"{PROG}: error: {os_error_message(exc)}", file=sys.stderr)
        return FAILURE


if __name__ == "__main__":
    sys.exit(main())
