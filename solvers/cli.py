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
    stop_on_signals,
)
from solvers.common.mpi_network import configure_mpi_network
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

PROBLEM_HELP = {
    "cdr": "convection-diffusion-reaction, y in R^55 -> c in R^72 (SPEC 1)",
    "dcr": "DC resistivity, y in R^3 -> c in R^882 (SPEC 2)",
}

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
    if not p.is_file():
        raise UsageError(f"parameter file {path!r} does not exist")
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


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (.npy) atomically (see
    :func:`solvers.common.atomic.write_atomic`: through a symlink to its target, regular files
    only, mode from the umask)."""
    write_atomic(path, lambda fh: np.save(fh, array))


def build_parser() -> argparse.ArgumentParser:
    parser = RankZeroParser(
        prog="solve-pde",
        description="Solve one parameter sample of a PDE problem and write its observables. "
                    "Under mpiexec the mesh is distributed over all ranks.")
    sub = parser.add_subparsers(dest="problem", required=True, metavar="{cdr,dcr}")
    for name, help_text in PROBLEM_HELP.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", metavar="FILE.toml",
                       help="TOML file of solver settings (top-level keys; --set overrides)")
        src = p.add_mutually_exclusive_group()
        src.add_argument("--params", metavar="FILE",
                         help="parameter vector y: .npy, or text with one number per line")
        src.add_argument("--seed", type=int, default=None,
                         help="draw y from the SPEC distribution with this seed "
                              "(default when --params is absent: seed 0)")
        p.add_argument("--out", metavar="FILE.npy", required=True,
                       help="where to write the observables c (.npy, float64)")
        p.add_argument("--plot", metavar="FILE.png", help="also write a figure of the solution")
        p.add_argument("--set", dest="settings", action="append", default=[],
                       metavar="KEY=VALUE",
                       help="override a solver setting (TOML literal), e.g. --set n_cells=100; "
                            "repeatable")
        if name == "dcr":
            p.add_argument("--allow-extrapolation", action="store_true",
                           help="accept y outside the documented parameter ranges")
        if name == "cdr":
            p.add_argument("--fields", metavar="FILE.npz",
                           help="also save u at the output times: arrays x (N, 2), t, u (T, N)")
    return parser


def _run(args: argparse.Namespace) -> None:
    import dolfinx_solver  # noqa: F401  (before mpi4py)
    from mpi4py import MPI

    from solvers import make_solver

    comm = MPI.COMM_WORLD
    stop_on_signals()
    settings = read_toml(args.config, SolverSettingsError) if args.config is not None else {}
    settings.update(parse_set_options(args.settings))
    if getattr(args, "allow_extrapolation", False):
        settings["allow_extrapolation"] = True
    # outputs are checked before the solve (by rank 0, which writes them; same verdict on all)
    error = None
    if comm.rank == 0:
        try:
            for what, path in (("--out", args.out), ("--plot", args.plot),
                               ("--fields", getattr(args, "fields", None))):
                if path is not None:
                    resolve_output(path, what)
        except OutputPathError as exc:
            error = str(exc)
    error = comm.bcast(error)
    if error is not None:
        raise UsageError(error)
    solver: Any = make_solver(args.problem, comm, **settings)
    if args.params is not None:
        y = read_parameters(args.params)
    else:
        y = solver.sample_parameters(np.random.default_rng(0 if args.seed is None else args.seed))
    if args.problem == "cdr":
        from solvers.cdr_plot import plot_solution as plot_cdr

        result = solver.run(y, keep_fields=bool(args.plot or args.fields))
        c = result.observables
        if comm.rank == 0:
            print(f"cdr: {result.substeps} steps, {result.newton_iterations} Newton iterations, "
                  f"{result.wall_time:.2f} s on {comm.size} rank(s)")
        if args.plot:
            plot_cdr(solver, result, args.plot)
        if args.fields:
            _save_fields(solver, result, args.fields)
    else:
        from solvers.dcr_plot import plot_solution as plot_dcr

        c = solver.solve(y)
        if args.plot:
            plot_dcr(solver, y, c, args.plot)
    if comm.rank == 0:
        save_npy_atomic(args.out, c)
        print(f"wrote {c.size} observables to {args.out}"
              + (f" and the figure {args.plot}" if args.plot else ""))


def _save_fields(solver: Any, result: Any, path: str) -> None:
    from solvers.cdr_plot import gather_field

    gathered = [gather_field(solver, f) for f in result.fields]
    if solver.comm.rank == 0:  # rank 0 holds every gathered field
        fields = [g for g in gathered if g is not None]
        xy = fields[0][0]
        u = np.stack([g[1] for g in fields])
        write_atomic(path, lambda fh: np.savez(fh, x=xy, t=solver.output_times, u=u),
                     "--fields")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0, or exits with 2 (bad input), 1 (solve failed) or 128 + signal
    (interrupted)."""
    configure_mpi_network()  # before MPI is initialised (in _run)
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
