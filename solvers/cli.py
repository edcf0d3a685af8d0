"""``solve-pde``: solve one sample of a PDE problem and write its observables.

Examples
--------
    solve-pde cdr --params y.npy --out c.npy --plot field.png
    solve-pde cdr --seed 3 --out c.npy --set n_cells=100 --set dt=0.005
    mpiexec -n 2 solve-pde dcr --params y.txt --out c.npy --plot dcr.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from solvers.base import SolveError, SolverSettingsError, parse_assignment

PROBLEM_HELP = {
    "cdr": "convection-diffusion-reaction, y in R^55 -> c in R^72 (SPEC 1)",
    "dcr": "DC resistivity, y in R^3 -> c in R^882 (SPEC 2)",
}


class CLIError(Exception):
    """A user error reported as ``solve-pde: error: ...`` with exit status 2."""


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> settings dict (values parsed as TOML literals)."""
    return dict(parse_assignment(item) for item in items)


def read_parameters(path: str) -> np.ndarray:
    """Read y from a .npy vector or a text file with one number per line."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"parameter file {path!r} does not exist")
    try:
        if p.suffix == ".npy":
            y = np.load(p, allow_pickle=False)
        else:
            y = np.loadtxt(p, dtype=np.float64, ndmin=1)
    except (ValueError, OSError) as exc:
        raise CLIError(f"cannot read parameters from {path!r}: {exc}") from None
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise CLIError(f"parameter file {path!r} must hold a vector, got shape {y.shape}")
    return y


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (.npy) through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solve-pde",
        description="Solve one parameter sample of a PDE problem and write its observables. "
                    "Under mpiexec the mesh is distributed over all ranks.")
    sub = parser.add_subparsers(dest="problem", required=True, metavar="{cdr,dcr}")
    for name, help_text in PROBLEM_HELP.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
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
    settings = parse_set_options(args.settings)
    if getattr(args, "allow_extrapolation", False):
        settings["allow_extrapolation"] = True
    solver = make_solver(args.problem, comm, **settings)
    if args.params is not None:
        y = read_parameters(args.params)
    else:
        y = solver.sample_parameters(np.random.default_rng(0 if args.seed is None else args.seed))
    if args.problem == "cdr":
        from solvers.cdr import plot_solution

        result = solver.run(y, keep_fields=bool(args.plot or args.fields))
        c = result.observables
        if comm.rank == 0:
            print(f"cdr: {result.substeps} steps, {result.newton_iterations} Newton iterations, "
                  f"{result.wall_time:.2f} s on {comm.size} rank(s)")
        if args.plot:
            plot_solution(solver, result, args.plot)
        if args.fields:
            _save_fields(solver, result, args.fields)
    else:
        from solvers.dcr import plot_solution

        c = solver.solve(y)
        if args.plot:
            plot_solution(solver, y, c, args.plot)
    if comm.rank == 0:
        save_npy_atomic(args.out, c)
        print(f"wrote {c.size} observables to {args.out}"
              + (f" and the figure {args.plot}" if args.plot else ""))


def _save_fields(solver: Any, result: Any, path: str) -> None:
    from solvers.cdr import gather_field

    gathered = [gather_field(solver, f) for f in result.fields]
    if solver.comm.rank == 0:
        xy = gathered[0][0]
        u = np.stack([g[1] for g in gathered])
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=xy, t=solver.output_times, u=u)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _run(args)
    except (CLIError, SolverSettingsError, ValueError) as exc:
        parser.exit(2, f"solve-pde: error: {exc}\n")
    except SolveError as exc:
        parser.exit(1, f"solve-pde: solve failed: {exc}\n")
    except OSError as exc:
        parser.exit(2, f"solve-pde: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
