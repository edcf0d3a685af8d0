"""``solve-pde``: solve one sample of a PDE problem and write its observables.

Examples
--------
    solve-pde cdr --params y.npy --out c.npy --plot field.png
    solve-pde cdr --seed 3 --out c.npy --set n_cells=100 --set dt=0.005
    mpiexec -n 2 solve-pde dcr --params y.txt --out c.npy --plot dcr.png
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from solvers.common.atomic import resolve_output, write_atomic
from solvers.common.cli import (
    BAD_INPUT,
    FAILURE,
    INTERRUPT_STATUS,
    RankZeroParser,
    exit_now,
    signal_name,
    start_mpi,
    stop_on_signals,
)
from solvers.common.toml import parse_assignments, read_toml
from solvers.errors import (
    Interrupted,
    OutputPathError,
    SolveError,
    SolverSettingsError,
    UsageError,
)

#: most entries a parameter file may hold before it is refused unread
MAX_PARAMETER_ENTRIES = 1_000_000

def parse_set_options(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> settings dict (values parsed as TOML literals)."""
    return parse_assignments(items, SolverSettingsError)


def read_parameters(path: str) -> np.ndarray:
    """Read y from a .npy vector or a text file with one number per line.

    Returns a float64 vector, shape (n,); raises UsageError saying what is wrong with the file
    (missing, a folder, empty, not a vector, complex or non-numeric values, too large).
    """
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"parameter file {path!r} is a folder")
    if not p.exists():
        raise UsageError(f"parameter file {path!r} does not exist")
    if not p.is_file():         # /dev/stdin, a pipe or process substitution, /dev/null
        return _read_stream(path)
    try:
        if p.stat().st_size == 0:
            raise UsageError(f"parameter file {path!r} is empty")
        if p.suffix == ".npy":
            y = np.load(p, allow_pickle=False, mmap_mode="r")
            if y.size > MAX_PARAMETER_ENTRIES:
                raise UsageError(f"parameter file {path!r} holds {y.size} values (shape "
                               f"{y.shape}); a parameter vector has far fewer")
            if y.dtype.kind not in "iuf":
                kind = "complex" if y.dtype.kind == "c" else str(y.dtype)
                raise UsageError(f"parameter file {path!r} holds {kind} values; parameters "
                               "must be real numbers (float or integer)")
            y = np.array(y, dtype=np.float64)
        else:
            if p.stat().st_size > 64 * MAX_PARAMETER_ENTRIES:
                raise UsageError(f"parameter file {path!r} is {p.stat().st_size} bytes, too "
                               "large for a parameter vector")
            with warnings.catch_warnings():  # "input contained no data": reported below
                warnings.simplefilter("ignore", UserWarning)
                y = np.loadtxt(p, dtype=np.float64, ndmin=1, encoding="utf-8")
    except UsageError:
        raise
    except UnicodeDecodeError:
        raise UsageError(f"cannot read parameters from {path!r}: not UTF-8 text (use .npy for "
                       "binary files)") from None
    except Exception as exc:  # any parser failure on a malformed file (EOFError, ...)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot read parameters from {path!r}: {detail}") from None
    if y.ndim != 1:
        raise UsageError(f"parameter file {path!r} must hold a vector, got shape {y.shape}")
    if y.size == 0:
        raise UsageError(f"parameter file {path!r} holds no numbers")
    return y


def _read_stream(path: str) -> np.ndarray:
    """Parameters from a file that is not a regular one (a pipe, ``<(...)``, a device): read
    at most 64 x MAX_PARAMETER_ENTRIES bytes into memory, then parsed as a regular file
    (``.npy`` by its magic bytes, else text)."""
    import tempfile

    limit = 64 * MAX_PARAMETER_ENTRIES
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read parameters from {path!r}: {exc.strerror}") from None
    if not data:
        raise UsageError(f"parameter file {path!r} is empty (nothing could be read from it)")
    if len(data) > limit:
        raise UsageError(f"parameter file {path!r} holds more than {limit} bytes, too large "
                         "for a parameter vector")
    suffix = ".npy" if data.startswith(b"\x93NUMPY") else ".txt"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / f"params{suffix}"
        copy.write_bytes(data)
        try:
            return read_parameters(str(copy))
        except UsageError as exc:
            raise UsageError(str(exc).replace(repr(str(copy)), repr(path))) from None


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (.npy) atomically (see
    :func:`solvers.common.atomic.write_atomic`: through a symlink to its target, regular files
    only, mode from the umask)."""
    write_atomic(path, lambda fh: np.save(fh, array))


def build_parser() -> argparse.ArgumentParser:
    from solvers.plugins import SPEC_HELP, problems_help

    p = RankZeroParser(
        prog="solve-pde",
        description="Solve one parameter sample of a PDE problem and write its observables. "
                    "Under mpiexec the mesh is distributed over all ranks (a problem that "
                    "uses its communicator).",
        epilog=problems_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("problem", metavar="PROBLEM", help=SPEC_HELP)
    p.add_argument("--config", metavar="FILE.toml",
                   help="TOML file of solver settings (top-level keys; --set overrides)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--params", metavar="FILE",
                     help="parameter vector y: .npy, or text with one number per line")
    src.add_argument("--seed", type=int, default=None,
                     help="draw y from the problem's distribution with this seed "
                          "(default when --params is absent: seed 0)")
    p.add_argument("--out", metavar="FILE.npy", required=True,
                   help="where to write the observables c (.npy, float64)")
    p.add_argument("--plot", metavar="FILE.png", help="also write a figure of the solution "
                   "(problems with a solve_and_plot method: cdr, dcr)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override a solver setting (TOML literal), e.g. --set n_cells=100; "
                        "repeatable")
    p.add_argument("--allow-extrapolation", action="store_true",
                   help="accept y outside the documented parameter ranges (--set "
                        "allow_extrapolation=true, for problems with that setting: dcr)")
    p.add_argument("--fields", metavar="FILE.npz", help="also save the solution at the "
                   "output times (problems that can, cdr: arrays x (N, 2), t, u (T, N))")
    return p


def _check_outputs(comm: Any, args: argparse.Namespace) -> None:
    """Outputs are checked before the solve (by rank 0, which writes them; same verdict on
    all ranks); UsageError naming the option."""
    error = None
    if comm.rank == 0:
        try:
            for what, path in (("--out", args.out), ("--plot", args.plot),
                               ("--fields", args.fields)):
                if path is not None:
                    resolve_output(path, what)
        except OutputPathError as exc:
            error = str(exc)
    error = comm.bcast(error)
    if error is not None:
        raise UsageError(error)


def _solve(problem: Any, solver: Any, y: np.ndarray, args: argparse.Namespace
           ) -> tuple[np.ndarray, str | None]:
    """The observables (and figure/fields through the problem's ``solve_and_plot`` hook)."""
    from solvers.plugins import check_output, check_parameters, one_line

    hook = getattr(solver, "solve_and_plot", None)
    for option, value in (("--plot", args.plot), ("--fields", args.fields)):
        if value and (not callable(hook) or (option == "--fields"
                                             and not getattr(solver, "saves_fields", False))):
            raise UsageError(f"{option}: {problem.label} cannot write it (no "
                             f"{'solve_and_plot method' if not callable(hook) else 'fields'})")
    y = check_parameters(solver, y)
    info = problem.describe(solver)
    try:
        if callable(hook):
            c, note = hook(y, plot=args.plot, fields=args.fields)
        else:
            c, note = solver.solve(y), None
    except (SolveError, ValueError, Interrupted, KeyboardInterrupt):
        raise
    except Exception as exc:
        if problem.identity.kind == "registered":
            raise
        raise SolveError(f"{problem.label}: solve() raised {one_line(exc)}") from None
    return check_output(info, c, None), note


def _run(args: argparse.Namespace) -> None:
    from solvers.plugins import resolve_problem

    comm = start_mpi("solve-pde").COMM_WORLD
    stop_on_signals()
    settings = read_toml(args.config, SolverSettingsError) if args.config is not None else {}
    settings.update(parse_set_options(args.settings))
    if args.allow_extrapolation:
        settings["allow_extrapolation"] = True
    _check_outputs(comm, args)
    problem = resolve_problem(args.problem)
    solver: Any = problem.build(comm, **settings)
    if args.params is not None:
        y = read_parameters(args.params)
    else:
        y = solver.sample_parameters(np.random.default_rng(0 if args.seed is None else args.seed))
    c, note = _solve(problem, solver, y, args)
    if comm.rank == 0:
        if note:
            print(note)
        save_npy_atomic(args.out, c)
        print(f"wrote {c.size} observables to {args.out}"
              + (f" and the figure {args.plot}" if args.plot else ""))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0, or exits with 2 (bad input), 1 (solve failed) or 128 + signal
    (interrupted)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        _run(args)
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = getattr(exc, "signum", 2)  # KeyboardInterrupt: SIGINT
        return exit_now(INTERRUPT_STATUS + signum,
                        f"solve-pde: interrupted ({signal_name(signum)}); no output written")
    except ValueError as exc:  # InputError and the checks of numpy/solvers on bad values
        sys.exit(exit_now(BAD_INPUT, f"solve-pde: error: {exc}"))
    except SolveError as exc:
        sys.exit(exit_now(FAILURE, f"solve-pde: solve failed: {exc}"))
    except OSError as exc:
        detail = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc
        sys.exit(exit_now(BAD_INPUT, f"solve-pde: error: {detail}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
