"""PDE solvers that map a parameter vector y to an observable vector c (no torch here).

``cdr``  convection-diffusion-reaction, Q1 finite elements on dolfinx (SPEC section 1)
``dcr``  DC resistivity, nodal finite volumes on PETSc (SPEC section 2)

This package init stays light: ``import solvers`` never loads dolfinx or PETSc; the solver
modules are imported on first use through :func:`solver_class`.
"""

from __future__ import annotations

import importlib
from typing import Any

from solvers.base import PDESolver, SolveError, SolverSettingsError

#: problem name -> "module:class"
SOLVERS: dict[str, str] = {
    "cdr": "solvers.cdr:CDRSolver",
    "dcr": "solvers.dcr:DCRSolver",
}


def solver_class(name: str) -> type:
    """The solver class registered under ``name`` ("cdr" or "dcr")."""
    try:
        target = SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; choose one of {sorted(SOLVERS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def make_solver(name: str, comm: Any = None, **settings: Any) -> PDESolver:
    """Build the solver ``name`` on ``comm`` (default COMM_SELF) with SPEC defaults overridden
    by ``settings``."""
    cls = solver_class(name)
    defaults = getattr(importlib.import_module(cls.__module__), "DEFAULTS", None)
    unknown = sorted(set(settings) - set(defaults)) if defaults is not None else []
    if unknown and defaults is not None:
        raise SolverSettingsError(f"unknown {name.upper()} setting(s) {unknown}; valid: "
                                  f"{sorted(defaults)}")
    if comm is None:
        import dolfinx_solver  # noqa: F401  (loads the matching MPI before mpi4py)
        from mpi4py import MPI

        comm = MPI.COMM_SELF
    return cls(comm, **settings)


__all__ = ["SOLVERS", "PDESolver", "SolveError", "SolverSettingsError", "make_solver",
           "solver_class"]
