"""Convection-diffusion-reaction (CDR) solver: Q1 finite elements on dolfinx (SPEC section 1).

The PDE (GNvpro appendix A, SPEC 1) for u(x, t) on (0, 1)^2 x (0, 0.5]::

    du/dt = div(D grad u) - v . grad u + f(x, t) + rbar(x) sum_k y_k r_k(u),
    D grad u . n = 0,   u(x, 0) = 0.

Discretisation: bilinear (Q1) elements on a uniform quadrilateral mesh, consistent mass,
backward Euler with the source at the new time level, Newton on the reaction term. The mesh,
function space, compiled forms, constant matrices and linear solver are built once per
:class:`CDRSolver`; a sample only changes the runtime constant ``y`` (no JIT per sample).

Readings of SPEC 1 made here:

* The weak form is ``(M/dt + K + A) u^{n+1} = M u^n / dt + F(t_{n+1}) + R(u^{n+1})`` with
  K the stiffness (D grad u . grad w), A the non-conservative advection ((v . grad u) w) and
  R the reaction load; no integration by parts of the advection.
* The reaction uses 10 exponentials per quadrature point instead of 55: with
  ``a_d = ln(C^-2) / (6 d)`` (d = j - i) the logistic is ``r_ij = 1 / (1 + c_ij exp(-a_d u))``
  with the constant ``c_ij = exp(a_d u_i) / C``. This form never overflows into NaN: for
  u -> -inf the exponential becomes inf and r -> 0, for u -> +inf it becomes 0 and r -> 1.
  The derivative is ``a_d r (1 - r)``.
* Per sample, s(u) = sum_k y_k r_k(u) is one smooth scalar function of u. It is tabulated
  once per sample (exact values and derivatives on a uniform u-grid, spacing
  ``reaction_table_step``) and evaluated at the quadrature points by cubic Hermite
  interpolation; s' is the derivative of that interpolant, so Newton sees a consistent
  Jacobian. The interpolation error is below 1e-11 for the default step (tested against
  the direct formula); points outside the table range use the direct formula. Set
  ``reaction_table_step=0`` to always evaluate directly.
* Newton stops when ||F(u_k)|| <= newton_rtol ||F(u_0)|| (u_0 = u^n) or
  ||F(u_k)|| <= newton_atol; see :class:`~solvers.cdr_settings.CDRSettings` for the chosen
  defaults.
* A time step whose Newton iteration fails is retried as two steps of dt/2, recursively, up
  to ``max_halvings`` times; a step that still fails raises :class:`~solvers.errors.SolveError`.

Module layout: settings and their validation in :mod:`solvers.cdr_settings`, the reaction
kernels in :mod:`solvers.cdr_reaction`, the JIT options in :mod:`solvers.cdr_jit`, figures in
:mod:`solvers.cdr_plot`; this module holds the solver (assembly, Newton, time stepping).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from solvers.common.mpi_network import init_mpi

init_mpi()  # loopback MPI for single-node runs, then dolfinx_solver (MPI before PETSc/dolfinx)

import basix  # noqa: E402
import basix.ufl  # noqa: E402
import numpy as np  # noqa: E402
import ufl  # noqa: E402
from dolfinx import fem, geometry, mesh  # noqa: E402
from dolfinx.fem import petsc as fem_petsc  # noqa: E402
from mpi4py import MPI  # noqa: E402
from petsc4py import PETSc  # noqa: E402

from solvers.base import SolveError, SolverSettingsError, check_parameter_vector  # noqa: E402
from solvers.cdr_jit import jit_options  # noqa: E402
from solvers.cdr_reaction import ReactionTable, reaction_sum, sample_simplex  # noqa: E402
from solvers.cdr_settings import DEFAULTS, FACTS, CDRSettings  # noqa: E402


@dataclass
class CDRResult:
    """Outcome of one CDR solve.

    Attributes
    ----------
    observables : ndarray, shape (n_times * n_points,)
        u at the points, time-major (c[n_points k + p] = u(x_p, t_k)).
    newton_iterations : int
        Total Newton iterations over all (sub)steps.
    substeps : int
        Number of (sub)steps taken (n_steps when no step had to be halved).
    fields : list of ndarray
        Owned nodal values of u at the output times (only if requested).
    wall_time : float
        Seconds for the solve.
    """

    observables: np.ndarray
    newton_iterations: int
    substeps: int
    wall_time: float
    fields: list[np.ndarray] = field(default_factory=list)


class _NewtonFailure(Exception):
    """Internal: Newton did not converge for one (sub)step."""


class CDRSolver:
    """CDR parameter-to-observable map y (55,) -> c (72,) of SPEC 1 (with the defaults).

    Parameters
    ----------
    comm : MPI communicator
        COMM_SELF solves a sample on one rank; a larger communicator distributes the mesh.
    n_cells : int
        Cells per direction of the uniform quadrilateral mesh of (0, 1)^2 (h = 1 / n_cells).
    dt : float
        Backward-Euler time step; final_time / dt must be an integer.
    final_time : float
        End of the time interval [0, final_time].
    diffusion : float
        Diffusion coefficient D.
    velocity : (float, float, float)
        (a, b, c) in v = (a (1 + b sin(2 pi x1)), c (0.5 - x2)).
    sources : sequence of dict
        Terms of f = sum_s amplitude (offset + modulation trig(frequency pi t)) g(center) with
        keys amplitude, offset, modulation, function ("sin" or "cos"), frequency, center.
    source_width : float
        The 200 of g(a, b) = exp(-200 ((x1 - a)^2 + (x2 - b)^2)).
    reaction_amplitude : float
        Factor of rbar = amplitude (a + b sin(2 pi x1) cos(2 pi x2) + c x2); 0 switches the
        reaction off.
    reaction_field : (float, float, float)
        (a, b, c) of rbar (SPEC: 0.8, 0.2, 1).
    level_start, level_spacing, n_levels : float, float, int
        Species levels u_i = level_start + level_spacing (i - 1), i = 1..n_levels; y has
        n_levels (n_levels - 1) / 2 entries (SPEC: 5, 6, 11 -> 55).
    logistic_c : float
        The 1e-3 of C = 1e-3 / (1 - 1e-3).
    points : sequence of (x1, x2)
        Observation points (evaluated by finite-element interpolation).
    output_times : sequence of float
        Observation times; each must be a multiple of dt in (0, final_time].
    newton_rtol, newton_atol : float
        Newton stops when ||F|| <= rtol ||F(u^n)|| or ||F|| <= atol.
    newton_max_iterations : int
        Newton iterations before a step counts as failed (and is halved).
    max_halvings : int
        How many times a failing step may be halved before the sample fails.
    quadrature_degree : int
        Degree of the Gauss rule for all cell integrals (2: 2 x 2 points).
    linear_solver : {"gmres", "lu"}
        Newton systems: GMRES (inexact-Newton tolerance, see ``_forcing_term``) preconditioned
        by a lagged LU factorisation that is refreshed when GMRES needs more than 6
        iterations, or a fresh LU every iteration.
    predictor : bool
        Start Newton from the linear extrapolation 2 u^n - u^(n-1) instead of u^n. About 20 %
        fewer Newton iterations, but in stiff corner cases (y near e_1) it changes which steps
        get sub-stepped and so the observables (by ~0.5 %); off by default so that results
        follow the plain SPEC reading (Newton from the previous time level).
    reaction_table_step : float
        u-spacing of the per-sample cubic Hermite table of the reaction sum; 0 evaluates the
        55 logistic functions directly at every quadrature point.
    reaction_table_range : (float, float)
        u-interval of that table; values outside use the direct formula.
    source : callable, optional
        ``source(x, t) -> ufl expression`` replacing the SPEC source f (t is a ufl Constant);
        used for manufactured solutions.
    config : CDRSettings, optional
        All settings at once, already validated (instead of the keywords above).

    Every setting is validated by :class:`~solvers.cdr_settings.CDRSettings` (a bad one raises
    :class:`~solvers.errors.SolverSettingsError` naming it) before any mesh is built; the
    settings stay available as :attr:`config` and as attributes of the same names.
    """

    name = "cdr"
    #: the problem's facts (:data:`solvers.cdr_settings.FACTS`): paper dataset size, SPEC 3
    #: split, training hints, sizes with the defaults
    default_samples = FACTS.default_samples
    default_split = FACTS.default_split
    training_hints = FACTS.training_hints
    default_sizes = FACTS.default_sizes

    def __init__(self, comm: MPI.Comm = MPI.COMM_SELF, *, source: Callable | None = None,
                 config: CDRSettings | None = None, **settings: Any):
        if config is None:
            config = CDRSettings.from_dict(settings)
        elif not isinstance(config, CDRSettings):
            raise SolverSettingsError(f"config must be a CDRSettings, got {config!r}")
        elif settings:
            raise SolverSettingsError(
                f"pass either config or setting keywords, not both (got {sorted(settings)})")
        self.comm = comm
        self._custom_source = source is not None
        self._store(config)
        config.check_memory(comm.size)
        self._build_mesh_and_space()
        self._build_forms(source)
        self._build_linear_algebra()
        self._build_point_evaluation()

    # ------------------------------------------------------------------ settings
    def _store(self, config: CDRSettings) -> None:
        """Keep ``config`` and its values as attributes (points, output_times as arrays)."""
        self.config = config
        self.n_cells, self.dt, self.final_time = config.n_cells, config.dt, config.final_time
        self.n_steps = config.n_steps
        self.diffusion, self.velocity = config.diffusion, config.velocity
        self.sources, self.source_width = config.sources, config.source_width
        self.reaction_amplitude = config.reaction_amplitude
        self.reaction_field = config.reaction_field
        self.level_start, self.level_spacing = config.level_start, config.level_spacing
        self.n_levels, self.logistic_c = config.n_levels, config.logistic_c
        self.levels = config.levels
        self.n_parameters = len(self.levels)
        self.parameter_names = config.parameter_names
        #: observation points, shape (n_points, 2)
        self.points = np.asarray(config.points, dtype=np.float64)
        #: observation times, shape (n_times,)
        self.output_times = np.asarray(config.output_times, dtype=np.float64)
        self._output_steps = config.output_steps
        self.newton_rtol, self.newton_atol = config.newton_rtol, config.newton_atol
        self.newton_max_iterations = config.newton_max_iterations
        self.max_halvings = config.max_halvings
        self.quadrature_degree = config.quadrature_degree
        self.linear_solver = config.linear_solver
        self.predictor = config.predictor
        self.reaction_table_step = config.reaction_table_step
        self.reaction_table_range = config.reaction_table_range
        self.n_observables = config.n_observables

    def settings(self) -> dict[str, Any]:
        """Resolved settings (JSON-serialisable); ``CDRSolver(comm, **settings())`` rebuilds."""
        if self._custom_source:
            raise ValueError("settings() is undefined for a solver with a custom source")
        return self.config.to_dict()

    # ------------------------------------------------------------------ set-up
    def _build_mesh_and_space(self) -> None:
        self.mesh = mesh.create_unit_square(self.comm, self.n_cells, self.n_cells,
                                            cell_type=mesh.CellType.quadrilateral)
        self.function_space = fem.functionspace(self.mesh, ("Lagrange", 1))

    def _build_forms(self, source: Callable | None) -> None:
        V, msh = self.function_space, self.mesh
        x = ufl.SpatialCoordinate(msh)
        w, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        q = self.quadrature_degree
        dx = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": q})
        self.u = fem.Function(V, name="u")
        self.time = fem.Constant(msh, PETSc.ScalarType(0.0))

        a, b, c = self.velocity
        vel = ufl.as_vector((a * (1 + b * ufl.sin(2 * ufl.pi * x[0])), c * (0.5 - x[1])))
        ra, rb, rc = self.reaction_field
        rbar = self.reaction_amplitude * (
            ra + rb * ufl.sin(2 * ufl.pi * x[0]) * ufl.cos(2 * ufl.pi * x[1]) + rc * x[1])

        # Reaction: rbar s(u) and rbar s'(u) live in a quadrature space on the same Gauss
        # points as dx, filled per Newton iteration (see module docstring).
        qel = basix.ufl.quadrature_element(msh.basix_cell(), value_shape=(), degree=q)
        Q = fem.functionspace(msh, qel)
        self._react_q = fem.Function(Q)
        self._dreact_q = fem.Function(Q)
        qpoints, _ = basix.make_quadrature(basix.CellType.quadrilateral, q)
        n_cells_local = msh.topology.index_map(msh.topology.dim).size_local
        self._cells = np.arange(n_cells_local, dtype=np.int32)
        self._qdofs = Q.dofmap.list[:n_cells_local].ravel()
        jit = jit_options()
        self._u_at_q = fem.Expression(self.u, qpoints, jit_options=jit)
        if self.reaction_amplitude > 0:
            self._rbar_q = fem.Expression(rbar, qpoints, jit_options=jit).eval(
                msh, self._cells).ravel()
        else:  # reaction switched off (rbar is the zero expression)
            self._rbar_q = np.zeros(self._qdofs.size)

        self._mass_form = fem.form(w * v * dx, jit_options=jit)
        self._op_form = fem.form(
            self.diffusion * ufl.inner(ufl.grad(w), ufl.grad(v)) * dx
            + ufl.dot(vel, ufl.grad(w)) * v * dx, jit_options=jit)
        self._react_form = fem.form(self._react_q * v * dx, jit_options=jit)
        self._dreact_form = fem.form(-self._dreact_q * w * v * dx, jit_options=jit)

        # Source: the SPEC f is sum_s a_s(t) g_s(x), so its load vector is a combination of
        # vectors assembled once; a custom source(x, t) is assembled per step.
        if source is None:
            def g(x0, x1):
                return ufl.exp(-self.source_width * ((x[0] - x0) ** 2 + (x[1] - x1) ** 2))
            self._source_vectors = []
            for form in (g(*src["center"]) for src in self.sources):
                vec = fem_petsc.assemble_vector(fem.form(form * v * dx, jit_options=jit))
                vec.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
                self._source_vectors.append(vec)
            self._source_form = None
        else:
            self._source_form = fem.form(source(x, self.time) * v * dx, jit_options=jit)

    def _source_amplitudes(self, t: float) -> list[float]:
        """a_s(t) of f = sum_s a_s(t) g_s(x) (SPEC 1)."""
        trig = {"sin": math.sin, "cos": math.cos}
        return [src["amplitude"] * (src["offset"] + src["modulation"]
                                    * trig[src["function"]](src["frequency"] * math.pi * t))
                for src in self.sources]

    def _build_linear_algebra(self) -> None:
        self._M = fem_petsc.assemble_matrix(self._mass_form)
        self._M.assemble()
        self._S = fem_petsc.assemble_matrix(self._op_form)
        self._S.assemble()
        self._J = fem_petsc.assemble_matrix(self._dreact_form)  # Q1 sparsity pattern
        self._J.assemble()
        self._lin_cache: dict[int, PETSc.Mat] = {}
        self._F = fem_petsc.create_vector(self.function_space)
        self._b = self._F.duplicate()
        self._du = self._F.duplicate()
        self._tmp = self._F.duplicate()
        self._lag_iterations = 6
        ksp = PETSc.KSP().create(self.comm)
        ksp.setOperators(self._J)
        pc = ksp.getPC()
        pc.setType("lu")
        # PETSc's own LU (nested dissection) is sequential; MUMPS on several ranks.
        if self.comm.size == 1:
            pc.setFactorSolverType("petsc")
            pc.setFactorOrdering("nd")
        else:
            pc.setFactorSolverType("mumps")
        if self.linear_solver == "lu":
            ksp.setType("preonly")
        else:
            # GMRES preconditioned by an LU factorisation of an earlier Jacobian, refreshed
            # when GMRES needs more than `_lag_iterations` iterations.
            ksp.setType("gmres")
            ksp.setTolerances(rtol=1e-9, atol=0.0, max_it=self._lag_iterations)
            ksp.getPC().setReusePreconditioner(True)
        self._ksp = ksp
        self._refresh_pc = True
        self._divergence_factor = 1e6

    def _linear_operator(self, level: int) -> PETSc.Mat:
        """M / dt_level + S with dt_level = dt / 2^level (cached per level)."""
        if level not in self._lin_cache:
            A = self._S.copy()
            A.axpy(2.0 ** level / self.dt, self._M, PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
            self._lin_cache[level] = A
        return self._lin_cache[level]

    def _build_point_evaluation(self) -> None:
        """Locate each observation point in a locally owned cell (one rank per point)."""
        msh = self.mesh
        pts3 = np.zeros((self.points.shape[0], 3))
        pts3[:, :2] = self.points
        tree = geometry.bb_tree(msh, msh.topology.dim)
        candidates = geometry.compute_collisions_points(tree, pts3)
        colliding = geometry.compute_colliding_cells(msh, candidates, pts3)
        n_owned = msh.topology.index_map(msh.topology.dim).size_local
        cells = np.full(len(pts3), -1, dtype=np.int32)
        for p in range(len(pts3)):
            links = colliding.links(p)
            owned = links[links < n_owned]
            if owned.size:
                cells[p] = owned[0]
        rank = self.comm.rank
        found = np.where(cells >= 0, rank, self.comm.size)
        owner = np.empty_like(found)
        self.comm.Allreduce(found, owner, op=MPI.MIN)
        if np.any(owner == self.comm.size):
            raise SolverSettingsError("an observation point lies outside the mesh")
        mine = owner == rank
        self._eval_idx = np.flatnonzero(mine)
        self._eval_pts = pts3[mine]
        self._eval_cells = cells[mine]

    # ------------------------------------------------------------------ interface
    def sample_parameters(self, rng: np.random.Generator) -> np.ndarray:
        """One SPEC-1 draw: y_k ~ U(0, 1) independently, then y / sum(y). Shape (n_params,)."""
        return sample_simplex(rng, self.n_parameters)

    @property
    def parameter_bounds(self) -> np.ndarray:
        """The box [0, 1]^n_parameters holding the SPEC 1 simplex, shape (n_parameters, 2)
        (any y >= 0 not all zero can be solved: :meth:`check_parameters`)."""
        return np.tile([0.0, 1.0], (self.n_parameters, 1))

    def observable_coords(self) -> dict[str, np.ndarray]:
        """Per-observable coordinates (time-major, point index fastest), each (n_obs,)."""
        n_p, n_t = self.points.shape[0], self.output_times.size
        return {
            "point": np.tile(np.arange(n_p), n_t),
            "x1": np.tile(self.points[:, 0], n_t),
            "x2": np.tile(self.points[:, 1], n_t),
            "time": np.repeat(self.output_times, n_p),
        }

    # ------------------------------------------------------------------ solve
    def check_parameters(self, y: Any) -> np.ndarray:
        """Validate y (n_parameters,): finite, >= 0, not all zero. Returns a float64 copy."""
        arr = check_parameter_vector(y, self.n_parameters)
        neg = np.flatnonzero(arr < 0)
        if neg.size:
            raise ValueError(f"y[{neg[0]}] = {arr[neg[0]]} is negative; reaction coefficients "
                             "must be >= 0")
        if not np.any(arr > 0):
            raise ValueError("y is all zero; SPEC 1 parameters lie on the unit simplex "
                             "(y >= 0, sum 1)")
        return arr

    #: solve_and_plot can also save the solution fields (solve-pde --fields)
    saves_fields = True

    def solve_and_plot(self, y: Any, *, plot: str | None = None, fields: str | None = None
                       ) -> tuple[np.ndarray, str]:
        """``solve-pde``'s hook: the observables of y, the figure ``plot`` (PNG) and the fields
        ``fields`` (.npz, :func:`~solvers.cdr_plot.save_fields`) if given (collective).

        Returns
        -------
        c : numpy.ndarray, shape (n_observables,)
        note : str
            Steps, Newton iterations and time of the solve (printed by solve-pde).
        """
        from solvers.cdr_plot import plot_solution, save_fields

        result = self.run(y, keep_fields=bool(plot or fields))
        if plot:
            plot_solution(self, result, plot)
        if fields:
            save_fields(self, result, fields)
        note = (f"cdr: {result.substeps} steps, {result.newton_iterations} Newton iterations, "
                f"{result.wall_time:.2f} s on {self.comm.size} rank(s)")
        return result.observables, note

    def solve(self, y: Any, *, sample: int | None = None) -> np.ndarray:
        """Observables c (n_points * n_times,), time-major, identical on every rank."""
        return self.run(y, sample=sample).observables

    def run(self, y: Any, *, sample: int | None = None, keep_fields: bool = False) -> CDRResult:
        """Solve one sample; see :class:`CDRResult`. Raises SolveError if a step fails."""
        yv = self.check_parameters(y)
        t0 = time.perf_counter()
        #: s(u) and s'(u) at the quadrature points, shape (m,) -> (m,), (m,)
        self._reaction: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
        if self.reaction_table_step > 0:
            self._reaction = ReactionTable(yv, self.reaction_table_step,
                                           self.reaction_table_range, self.levels)
        else:
            self._reaction = partial(reaction_sum, y=yv, levels=self.levels)
        self.u.x.array[:] = 0.0
        self._refresh_pc = True  # a sample never reuses another sample's factorisation
        obs = np.zeros((self.output_times.size, self.points.shape[0]))
        fields = []
        stats = {"newton": 0, "substeps": 0}
        out_k = {int(s): k for k, s in enumerate(self._output_steps)}
        self._u_prev = None
        for n in range(1, self.n_steps + 1):
            u_n = self.u.x.array.copy()
            self._advance(n * self.dt, self.dt, 0, stats, sample)
            self._u_prev = u_n
            if n in out_k:
                obs[out_k[n]] = self._evaluate_points()
                if keep_fields:
                    fields.append(self.u.x.array[:self.n_owned_dofs()].copy())
        return CDRResult(obs.ravel(), stats["newton"], stats["substeps"],
                         time.perf_counter() - t0, fields)

    def n_owned_dofs(self) -> int:
        """Number of nodal values owned by this rank (the first ones of ``u.x.array``)."""
        im = self.function_space.dofmap.index_map
        return im.size_local * self.function_space.dofmap.index_map_bs

    def _advance(self, t_end: float, step: float, level: int, stats: dict,
                 sample: int | None) -> None:
        """Advance u by one backward-Euler step of size ``step`` ending at ``t_end``; if Newton
        fails, redo it as two steps of step / 2 (recursively, at most ``max_halvings``)."""
        u_start = self.u.x.array.copy()
        try:
            stats["newton"] += self._newton_step(t_end, level)
            stats["substeps"] += 1
        except _NewtonFailure as exc:
            self.u.x.array[:] = u_start
            if level >= self.max_halvings:
                raise SolveError(f"Newton failed with dt = {step:g} after {level} halvings of "
                                 f"dt = {self.dt:g}: {exc}", sample=sample, time=t_end) from None
            self._advance(t_end - step / 2, step / 2, level + 1, stats, sample)
            self._advance(t_end, step / 2, level + 1, stats, sample)

    def _newton_step(self, t_new: float, level: int) -> int:
        """One backward-Euler step to t_new with dt / 2^level; returns Newton iterations."""
        inv_dt = 2.0 ** level / self.dt
        A_lin = self._linear_operator(level)
        b = self._load_vector(t_new, inv_dt)
        u = self.u.x.petsc_vec
        if level == 0 and self._u_prev is not None and self.predictor:
            # Newton starts from the linear extrapolation 2 u^n - u^(n-1).
            arr = self.u.x.array
            arr *= 2.0
            arr -= self._u_prev
        norm0: float | None = None
        fnorm = math.nan
        for it in range(self.newton_max_iterations + 1):
            F = self._residual(A_lin, b)
            fnorm = cast(float, F.norm())  # the 2-norm (petsc4py's stub also allows a pair)
            if not np.isfinite(fnorm):
                raise _NewtonFailure(f"residual is {fnorm} at Newton iteration {it}")
            if norm0 is None:
                norm0 = fnorm
            elif fnorm > self._divergence_factor * norm0:
                raise _NewtonFailure(f"Newton diverged (||F|| = {fnorm:.3e} > "
                                     f"{self._divergence_factor:g} ||F0|| at iteration {it})")
            if fnorm <= self.newton_rtol * norm0 or fnorm <= self.newton_atol:
                return it
            if it == self.newton_max_iterations:
                break
            self._assemble_jacobian(A_lin)
            self._linear_solve(F, self._forcing_term(fnorm, norm0))
            u.axpy(-1.0, self._du)
            self.u.x.scatter_forward()
        raise _NewtonFailure(f"no convergence in {self.newton_max_iterations} iterations "
                             f"(||F|| = {fnorm:.3e}, ||F0|| = {norm0:.3e})")

    def _load_vector(self, t_new: float, inv_dt: float) -> PETSc.Vec:
        """b = M u^n / dt + F(t_new) (u^n is the current iterate at the start of the step)."""
        b = self._b
        self.time.value = t_new  # type: ignore[assignment]  # dolfinx types value as array
        if self._source_form is None:
            b.set(0.0)
            for amp, vec in zip(self._source_amplitudes(t_new), self._source_vectors,
                                strict=True):
                b.axpy(amp, vec)
        else:
            with b.localForm() as bl:
                bl.set(0.0)
            fem_petsc.assemble_vector(b, self._source_form)
            b.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        self._M.mult(self.u.x.petsc_vec, self._tmp)
        b.axpy(inv_dt, self._tmp)
        return b

    def _update_reaction(self) -> None:
        """Fill rbar s(u) and rbar s'(u) at the quadrature points of the owned cells."""
        uq = self._u_at_q.eval(self.mesh, self._cells).ravel()
        s, ds = self._reaction(uq)
        self._react_q.x.array[self._qdofs] = self._rbar_q * s
        self._dreact_q.x.array[self._qdofs] = self._rbar_q * ds

    def _residual(self, A_lin: PETSc.Mat, b: PETSc.Vec) -> PETSc.Vec:
        """F(u) = A_lin u - b - R(u)."""
        self._update_reaction()
        F = self._F
        with F.localForm() as fl:
            fl.set(0.0)
        fem_petsc.assemble_vector(F, self._react_form)
        F.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        F.scale(-1.0)
        F.axpy(-1.0, b)
        A_lin.multAdd(self.u.x.petsc_vec, F, F)
        return F

    def _assemble_jacobian(self, A_lin: PETSc.Mat) -> None:
        """J = A_lin - dR/du at the current iterate (reaction values from _residual)."""
        J = self._J
        J.zeroEntries()
        fem_petsc.assemble_matrix(J, self._dreact_form)
        J.assemble()
        J.axpy(1.0, A_lin, PETSc.Mat.Structure.SAME_NONZERO_PATTERN)

    def _forcing_term(self, fnorm: float, norm0: float) -> float:
        """Relative GMRES tolerance for the Newton system (inexact Newton).

        Loose (<= 1e-4) while the Newton residual is large, and tight enough near the end that
        the linear residual stays below half the Newton target newton_rtol * ||F0||:
        eta = min(1e-4, max(0.5 rtol ||F0|| / ||F||, ||F|| / ||F0||)), at least 1e-12.
        """
        target = max(self.newton_rtol * norm0, self.newton_atol)
        return max(1e-12, min(1e-4, max(0.5 * target / fnorm, fnorm / norm0)))

    def _linear_solve(self, F: PETSc.Vec, rtol: float = 1e-12) -> None:
        """du = J^-1 F (GMRES to relative tolerance ``rtol``); with GMRES, refresh the lagged
        LU when GMRES does not converge within ``_lag_iterations`` iterations."""
        ksp, pc = self._ksp, self._ksp.getPC()
        ksp.setOperators(self._J)
        if self.linear_solver == "gmres":
            ksp.setTolerances(rtol=rtol)
        if self.linear_solver == "lu" or self._refresh_pc:
            pc.setReusePreconditioner(False)
            ksp.solve(F, self._du)
            pc.setReusePreconditioner(self.linear_solver != "lu")
            self._refresh_pc = False
        else:
            ksp.solve(F, self._du)
            if ksp.getConvergedReason() < 0:  # not converged within _lag_iterations
                self._refresh_pc = True
                self._linear_solve(F, rtol)
                return
        reason = ksp.getConvergedReason()
        if reason < 0:
            raise _NewtonFailure(f"linear solve failed (KSP reason {reason})")

    def _evaluate_points(self) -> np.ndarray:
        vals = np.zeros(self.points.shape[0])
        if self._eval_idx.size:
            vals[self._eval_idx] = self.u.eval(self._eval_pts, self._eval_cells)[:, 0]
        out = np.empty_like(vals)
        self.comm.Allreduce(vals, out, op=MPI.SUM)
        return out


__all__ = ["DEFAULTS", "CDRResult", "CDRSolver"]
