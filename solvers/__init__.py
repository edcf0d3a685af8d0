"""PDE solvers (problems) that map a parameter vector y to an observable vector c (no torch).

The registry of the package's own problems (:data:`SOLVERS`; their light facts modules in
:data:`FACTS`) is the one place the package looks a problem up by name:

``cdr``       convection-diffusion-reaction, Q1 finite elements on dolfinx (SPEC section 1)
``dcr``       DC resistivity, nodal finite volumes on PETSc (SPEC section 2)
``umbridge``  any model served over the UM-Bridge protocol (:mod:`solvers.umbridge_source`)

Any other problem is a plugin: ``package.module:Class``, ``path/to/file.py:Class`` or an entry
point of the group ``varpro_surrogates.problems`` (:mod:`solvers.plugins`). Every command
that takes a problem resolves it through :func:`solvers.plugins.resolve_problem`.

This package init stays light: ``import solvers`` never loads dolfinx or PETSc; the solver
modules are imported on first use.
"""

from __future__ import annotations

from typing import Any

from solvers.base import PDESolver, SolveError, SolverSettingsError

#: problem name -> "module:class"
SOLVERS: dict[str, str] = {
    "cdr": "solvers.cdr:CDRSolver",
    "dcr": "solvers.dcr:DCRSolver",
    "umbridge": "solvers.umbridge_source:UMBridgeProblem",
}

#: problem name -> "module:ProblemFacts" of the registered problems whose solver module loads
#: dolfinx or PETSc: their facts, readable without loading it (:mod:`solvers.facts`)
FACTS: dict[str, str] = {
    "cdr": "solvers.cdr_settings:FACTS",
    "dcr": "solvers.dcr_settings:FACTS",
}


def solver_class(name: str) -> type:
    """The problem class of a spec: a registered name (``"cdr"``, ``"dcr"``, ``"umbridge"``)
    or any plugin spec (:func:`solvers.plugins.resolve_problem`; PluginError, a ValueError,
    if it cannot be resolved)."""
    from solvers.plugins import resolve_problem

    return resolve_problem(name).cls


def make_solver(name: str, comm: Any = None, **settings: Any) -> PDESolver:
    """Build the problem ``name`` (any spec) on ``comm`` (default COMM_SELF) with its defaults
    overridden by ``settings`` (:meth:`solvers.plugins.Problem.build`: unknown settings are
    refused, SolverSettingsError)."""
    from solvers.plugins import resolve_problem

    return resolve_problem(name).build(comm, **settings)


__all__ = ["FACTS", "SOLVERS", "PDESolver", "SolveError", "SolverSettingsError", "make_solver",
           "solver_class"]
