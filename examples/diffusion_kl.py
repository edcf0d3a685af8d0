"""Diffusion with a log-normal Karhunen-Loeve coefficient: a problem written as a user would.

This file is a *plugin*: nothing in the package registers it. The commands take it as
``examples/diffusion_kl.py:DiffusionKL`` (a path relative to the working directory and the
class name), e.g.::

    mpiexec -n 2 generate-dataset examples/diffusion_kl.py:DiffusionKL --samples 1000 \\
        --set n_cells=48 --out kl.h5

The problem (a classic UQ benchmark) for u on the unit square D = (0, 1)^2::

    -div(exp(kappa(x; y)) grad u) = f   in D,      f = 1,
                                  u = 0   on the whole boundary,

with the log-conductivity a truncated Karhunen-Loeve (KL) expansion of a centred Gaussian
field with the separable exponential covariance

    C(x, x') = sigma^2 exp(-|x1 - x1'| / l) exp(-|x2 - x2'| / l),

    kappa(x; y) = sum_{k=1}^{n_kl} sqrt(lambda_k) phi_k(x) y_k,    y_k ~ N(0, 1) i.i.d.

Its eigenpairs are products of the analytic 1-D ones (Ghanem & Spanos, *Stochastic Finite
Elements*, 1991, sec. 2.3.3): on t = x - 1/2 in [-a, a], a = 1/2, c = 1/l,

    even:  phi(t) = cos(w t) / sqrt(a + sin(2 w a) / (2 w)),  c - w tan(w a) = 0,
    odd:   phi(t) = sin(w t) / sqrt(a - sin(2 w a) / (2 w)),  w + c tan(w a) = 0,

each with eigenvalue 2 c / (w^2 + c^2); the 2-D pairs are lambda_ij = sigma^2 lambda_i
lambda_j, phi_ij(x) = phi_i(x1 - 1/2) phi_j(x2 - 1/2), and the n_kl largest are kept
(ties in the order (i, j)). The roots w are found by bisection (scipy's brentq) on the
intervals where each has exactly one.

Discretisation: P1 (linear Lagrange) elements on a uniform triangle mesh of n_cells x
n_cells squares, each cut into two triangles; kappa is the exact UFL expression of x (forms
compiled once, y is a runtime constant), integrated with a quadrature of degree
``quadrature_degree``; linear solver: LU (MUMPS) or CG preconditioned by algebraic multigrid
(GAMG), through ``dolfinx.fem.petsc.LinearProblem``. Observables: u at the n_points x n_points
interior grid points (i / (n_points + 1), j / (n_points + 1)), i, j = 1..n_points (x1 fastest),
25 by default; they are mesh vertices when n_cells is a multiple of n_points + 1 (48 and 5 by
default), where P1 point values converge like h^2.

On a communicator of several ranks the mesh is distributed; each point is evaluated on the
lowest rank that owns a cell containing it and the values are summed over the ranks, so every
rank returns the same observables.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import dolfinx_solver  # noqa: F401  (before mpi4py/petsc4py/dolfinx: loads the matching MPI)
import numpy as np
import ufl
from dolfinx import fem, geometry, mesh
from dolfinx.fem.petsc import LinearProblem
from mpi4py import MPI
from petsc4py import PETSc
from scipy.optimize import brentq

from solvers.errors import SolveError, SolverSettingsError

#: constructor defaults (every setting is a keyword of DiffusionKL)
DEFAULTS: dict[str, Any] = {
    "n_cells": 48,
    "n_kl": 12,
    "correlation_length": 0.5,
    "sigma": 1.0,
    "n_points": 5,
    "quadrature_degree": 4,
    "linear_solver": "lu",
}

#: PETSc options of the two linear solvers
PETSC_OPTIONS: dict[str, dict[str, Any]] = {
    "lu": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    "cg": {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12, "ksp_atol": 0.0,
           "ksp_max_it": 1000},
}


def exponential_modes_1d(correlation_length: float, n: int) -> list[tuple[float, float, str]]:
    """The n largest eigenpairs of exp(-|s - t| / l) on an interval of length 1.

    Parameters
    ----------
    correlation_length : float
        l > 0 (same unit as x).
    n : int
        Number of modes.

    Returns
    -------
    list of (eigenvalue, w, parity)
        Decreasing eigenvalues 2c / (w^2 + c^2), c = 1/l; parity "even" (cos) or "odd" (sin).
    """
    a, c = 0.5, 1.0 / correlation_length
    modes = []
    for k in range(n):
        tiny = 1e-12
        # even: c - w tan(w a) = 0 has one root with w a in (k pi, k pi + pi/2)
        w = brentq(lambda w: c - w * math.tan(w * a),
                   (k * math.pi + tiny) / a, ((k + 0.5) * math.pi - tiny) / a, xtol=1e-14)
        modes.append((2 * c / (w * w + c * c), w, "even"))
        # odd: w + c tan(w a) = 0 has one root with w a in (k pi + pi/2, (k + 1) pi)
        w = brentq(lambda w: w + c * math.tan(w * a),
                   ((k + 0.5) * math.pi + tiny) / a, ((k + 1) * math.pi - tiny) / a,
                   xtol=1e-14)
        modes.append((2 * c / (w * w + c * c), w, "odd"))
    modes.sort(key=lambda m: -m[0])
    return modes[:n]


def kl_modes(n_kl: int, correlation_length: float, sigma: float
             ) -> list[tuple[float, tuple[float, str], tuple[float, str]]]:
    """The n_kl largest 2-D eigenpairs: (lambda_ij, (w_i, parity_i), (w_j, parity_j))."""
    one_d = exponential_modes_1d(correlation_length, n_kl)
    pairs = [(sigma ** 2 * li * lj, (wi, pi), (wj, pj))
             for (li, wi, pi) in one_d for (lj, wj, pj) in one_d]
    pairs.sort(key=lambda m: -m[0])  # stable: ties keep the (i, j) order
    return pairs[:n_kl]


def _phi_1d(t: Any, w: float, parity: str, sin: Any = np.sin, cos: Any = np.cos) -> Any:
    """Normalised 1-D eigenfunction at t = x - 1/2 (numpy, or UFL with sin/cos given)."""
    a = 0.5
    if parity == "even":
        return cos(w * t) / math.sqrt(a + math.sin(2 * w * a) / (2 * w))
    return sin(w * t) / math.sqrt(a - math.sin(2 * w * a) / (2 * w))


class DiffusionKL:
    """Diffusion with a log-normal KL coefficient on the unit square, u at a 5 x 5 grid.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        COMM_SELF (one rank per sample) or a larger communicator (distributed mesh).
    n_cells : int
        Squares per side of the mesh (each cut into two triangles).
    n_kl : int
        Number of KL terms = number of parameters (standard normal).
    correlation_length : float
        l of the exponential covariance.
    sigma : float
        Standard deviation of the log-conductivity field (before truncation).
    n_points : int
        Observation grid points per axis (n_observables = n_points^2).
    quadrature_degree : int
        Degree of the quadrature rule of the forms.
    linear_solver : {"lu", "cg"}
        MUMPS LU, or CG with GAMG (relative tolerance 1e-12).
    """

    name = "diffusion_kl"
    #: optional facts (solvers.plugins): generate-dataset's --samples default; the rest keep
    #: their fallbacks (split 80/10/10, standardised inputs, raw targets, no periodic input)
    default_samples = 1000

    def __init__(self, comm: MPI.Comm = MPI.COMM_SELF, *, n_cells: int = DEFAULTS["n_cells"],
                 n_kl: int = DEFAULTS["n_kl"],
                 correlation_length: float = DEFAULTS["correlation_length"],
                 sigma: float = DEFAULTS["sigma"], n_points: int = DEFAULTS["n_points"],
                 quadrature_degree: int = DEFAULTS["quadrature_degree"],
                 linear_solver: str = DEFAULTS["linear_solver"]):
        self.comm = comm
        self.n_cells = _integer(n_cells, "n_cells", 1, 4096)
        self.n_kl = _integer(n_kl, "n_kl", 1, 400)
        self.correlation_length = _positive(correlation_length, "correlation_length")
        self.sigma = _positive(sigma, "sigma")
        self.n_points = _integer(n_points, "n_points", 1, 100)
        self.quadrature_degree = _integer(quadrature_degree, "quadrature_degree", 1, 20)
        if linear_solver not in PETSC_OPTIONS:
            raise SolverSettingsError(f"linear_solver must be one of {sorted(PETSC_OPTIONS)}, "
                                      f"got {linear_solver!r}")
        self.linear_solver = linear_solver
        self.n_parameters = self.n_kl
        self.n_observables = self.n_points ** 2
        self.parameter_names = tuple(f"xi{k + 1}" for k in range(self.n_kl))
        self.modes = kl_modes(self.n_kl, self.correlation_length, self.sigma)
        g = np.arange(1, self.n_points + 1) / (self.n_points + 1)
        self.points = np.column_stack([np.tile(g, self.n_points), np.repeat(g, self.n_points)])
        self._build_problem()
        self._locate_points()

    # ------------------------------------------------------------------ contract
    def settings(self) -> dict[str, Any]:
        """The resolved settings (JSON); ``DiffusionKL(comm, **settings())`` rebuilds."""
        return {"n_cells": self.n_cells, "n_kl": self.n_kl,
                "correlation_length": self.correlation_length, "sigma": self.sigma,
                "n_points": self.n_points, "quadrature_degree": self.quadrature_degree,
                "linear_solver": self.linear_solver}

    def sample_parameters(self, rng: np.random.Generator) -> np.ndarray:
        """y ~ N(0, I), shape (n_kl,): ``rng.standard_normal(n_kl)``."""
        return rng.standard_normal(self.n_kl)

    def observable_coords(self) -> dict[str, np.ndarray]:
        """Coordinates (x1, x2) of the observation points, each (n_observables,)."""
        return {"x1": self.points[:, 0].copy(), "x2": self.points[:, 1].copy()}

    @classmethod
    def memory_estimate(cls, comm_size: int, **settings: Any) -> float:
        """Rough bytes per process: 64 MiB + 4 KiB per mesh vertex (LU fill included)."""
        n = settings.get("n_cells", DEFAULTS["n_cells"])
        try:
            vertices = (int(n) + 1) ** 2
        except (TypeError, ValueError):
            return 0.0  # the constructor reports the bad setting
        return 64 * 2 ** 20 + 4096 * vertices / max(comm_size, 1)

    # ------------------------------------------------------------------ set-up
    def _build_problem(self) -> None:
        msh = mesh.create_unit_square(self.comm, self.n_cells, self.n_cells,
                                      cell_type=mesh.CellType.triangle)
        V = fem.functionspace(msh, ("Lagrange", 1))
        self.mesh, self.V = msh, V
        self.y = fem.Constant(msh, np.zeros(self.n_kl, dtype=PETSc.ScalarType))
        self.kappa = self._kappa_ufl(ufl.SpatialCoordinate(msh))
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        dx = ufl.Measure("dx", domain=msh,
                         metadata={"quadrature_degree": self.quadrature_degree})
        a = ufl.exp(self.kappa) * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx
        L = fem.Constant(msh, PETSc.ScalarType(1.0)) * v * dx
        tdim = msh.topology.dim
        msh.topology.create_connectivity(tdim - 1, tdim)
        facets = mesh.exterior_facet_indices(msh.topology)
        dofs = fem.locate_dofs_topological(V, tdim - 1, facets)
        bc = fem.dirichletbc(PETSc.ScalarType(0.0), dofs, V)
        self.u = fem.Function(V, name="u")
        options = {**PETSC_OPTIONS[self.linear_solver], "ksp_error_if_not_converged": True}
        self.problem = LinearProblem(a, L, bcs=[bc], u=self.u, petsc_options=options,
                                     petsc_options_prefix="diffusion_kl_")

    def _kappa_ufl(self, x: Any) -> Any:
        t1, t2 = x[0] - 0.5, x[1] - 0.5
        terms = [math.sqrt(lam) * self.y[k]
                 * _phi_1d(t1, wi, pi, ufl.sin, ufl.cos) * _phi_1d(t2, wj, pj, ufl.sin, ufl.cos)
                 for k, (lam, (wi, pi), (wj, pj)) in enumerate(self.modes)]
        return sum(terms[1:], terms[0])

    def log_conductivity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """kappa(x; y) with numpy at points x of shape (n, 2); shape (n,)."""
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros(x.shape[0])
        for k, (lam, (wi, pi), (wj, pj)) in enumerate(self.modes):
            out += math.sqrt(lam) * y[k] * _phi_1d(x[:, 0] - 0.5, wi, pi) \
                * _phi_1d(x[:, 1] - 0.5, wj, pj)
        return out

    def _locate_points(self) -> None:
        """Each observation point is evaluated on the lowest rank owning a cell holding it."""
        msh = self.mesh
        pts = np.zeros((self.points.shape[0], 3))
        pts[:, :2] = self.points
        tree = geometry.bb_tree(msh, msh.topology.dim)
        colliding = geometry.compute_colliding_cells(
            msh, geometry.compute_collisions_points(tree, pts), pts)
        n_owned = msh.topology.index_map(msh.topology.dim).size_local
        cells = np.full(len(pts), -1, dtype=np.int32)
        for p in range(len(pts)):
            owned = colliding.links(p)
            owned = owned[owned < n_owned]
            if owned.size:
                cells[p] = owned[0]
        found = np.where(cells >= 0, self.comm.rank, self.comm.size).astype(np.int64)
        owner = np.empty_like(found)
        self.comm.Allreduce(found, owner, op=MPI.MIN)
        mine = owner == self.comm.rank
        self._eval_idx = np.flatnonzero(mine)
        self._eval_pts = pts[mine]
        self._eval_cells = cells[mine]

    # ------------------------------------------------------------------ solve
    def solve(self, y: Any, *, sample: int | None = None) -> np.ndarray:
        """u at the observation points for parameters y; shape (n_points^2,), float64, the
        same on every rank of the communicator.

        Raises
        ------
        SolveError
            The linear solver failed (e.g. a zero pivot or no CG convergence).
        """
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (self.n_kl,) or not np.isfinite(y).all():
            raise ValueError(f"y must be {self.n_kl} finite numbers, got shape {y.shape}")
        self.y.value[:] = y
        try:
            self.problem.solve()
        except PETSc.Error as exc:
            reason = self.problem.solver.getConvergedReason()
            raise SolveError(f"linear solve failed (PETSc error {exc.ierr}, KSP reason "
                             f"{reason})", sample=sample) from None
        values = np.zeros(self.n_observables)
        if self._eval_idx.size:
            values[self._eval_idx] = self.u.eval(self._eval_pts, self._eval_cells)[:, 0]
        out = np.empty_like(values)
        self.comm.Allreduce(values, out, op=MPI.SUM)
        return out


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) \
            or not low <= value <= high:
        raise SolverSettingsError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _positive(value: Any, name: str) -> float:
    try:
        v = float(value) if not isinstance(value, bool | str) else math.nan
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v <= 0:
        raise SolverSettingsError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def main(argv: list[str] | None = None) -> int:
    """Time a few solves: ``python examples/diffusion_kl.py --n-cells 48 --samples 20``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=DEFAULTS["n_cells"])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--linear-solver", choices=sorted(PETSC_OPTIONS), default="lu")
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    start = time.perf_counter()
    problem = DiffusionKL(comm, n_cells=args.n_cells, linear_solver=args.linear_solver)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.samples):
        c = problem.solve(problem.sample_parameters(np.random.default_rng([0, i])), sample=i)
    per = (time.perf_counter() - start) / args.samples
    if comm.rank == 0:
        print(f"n_cells={args.n_cells} ({args.linear_solver}, {comm.size} rank(s)): set-up "
              f"{setup:.2f} s, {1e3 * per:.2f} ms per solve; c[12] = {c[12]:.6g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
