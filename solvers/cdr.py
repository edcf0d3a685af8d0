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
  ||F(u_k)|| <= newton_atol; see :data:`DEFAULTS` for the chosen defaults.
* A time step whose Newton iteration fails is retried as two steps of dt/2, recursively, up
  to ``max_halvings`` times; a step that still fails raises :class:`~solvers.base.SolveError`.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import basix
import basix.ufl
import dolfinx_solver  # noqa: F401  (loads the matching MPI before mpi4py/petsc4py)
import numpy as np
import ufl
from dolfinx import fem, geometry, mesh
from dolfinx.fem import petsc as fem_petsc
from mpi4py import MPI
from petsc4py import PETSc

from solvers.base import (
    SolveError,
    SolverSettingsError,
    check_bool,
    check_finite,
    check_int,
    check_memory,
    check_numbers,
    check_parameter_vector,
    check_positive,
    check_positive_int,
    format_bytes,
)

#: SPEC 1 observation points (x1, x2); all are nodes of the default 150 x 150 mesh.
DEFAULT_POINTS: tuple[tuple[float, float], ...] = (
    (0.24, 0.18), (0.30, 0.16), (0.76, 0.16), (0.64, 0.78), (0.36, 0.56), (0.66, 0.20),
)
#: SPEC 1 output times t = 0.39, 0.40, ..., 0.50 (the last 12 time levels).
DEFAULT_OUTPUT_TIMES: tuple[float, ...] = tuple(round(0.39 + 0.01 * k, 10) for k in range(12))

#: SPEC 1 source f = sum_s amplitude (offset + modulation trig(frequency pi t)) g(center), with
#: g(a, b) = exp(-source_width ((x1 - a)^2 + (x2 - b)^2)).
DEFAULT_SOURCES: tuple[dict[str, Any], ...] = (
    {"amplitude": 1000.0, "offset": 1.0, "modulation": 0.3, "function": "cos",
     "frequency": 2.0, "center": (0.2, 0.2)},
    {"amplitude": 800.0, "offset": 1.2, "modulation": 0.4, "function": "sin",
     "frequency": 4.0, "center": (0.6, 0.8)},
    {"amplitude": 900.0, "offset": 0.9, "modulation": 0.2, "function": "sin",
     "frequency": 6.0, "center": (0.3, 0.6)},
)
_SOURCE_KEYS = ("amplitude", "offset", "modulation", "function", "frequency", "center")

#: Constructor defaults (SPEC 1 values; solver choices documented in the module docstring).
DEFAULTS: dict[str, Any] = {
    "n_cells": 150,
    "dt": 0.01,
    "final_time": 0.5,
    "diffusion": 0.5,
    "velocity": (4.5, 0.8, 5.5),
    "sources": DEFAULT_SOURCES,
    "source_width": 200.0,
    "reaction_amplitude": 500.0,
    "reaction_field": (0.8, 0.2, 1.0),
    "level_start": 5.0,
    "level_spacing": 6.0,
    "n_levels": 11,
    "logistic_c": 1e-3,
    "points": DEFAULT_POINTS,
    "output_times": DEFAULT_OUTPUT_TIMES,
    "newton_rtol": 1e-10,
    "newton_atol": 1e-12,
    "newton_max_iterations": 25,
    "max_halvings": 8,
    "quadrature_degree": 2,
    "linear_solver": "gmres",
    "predictor": False,
    "reaction_table_step": 5e-3,
    "reaction_table_range": (-50.0, 600.0),
}


Levels = list[tuple[int, int, float, float]]

#: Memory model (bytes) used to refuse settings that cannot fit, from peak-RSS measurements on
#: one rank (150^2 cells -> 131 MiB, 300^2 -> 289 MiB, about 2.4 kB per node with the LU
#: factors), with head-room for the fill of larger factorisations; per quadrature point; and
#: per point of the reaction table (grid, values, derivatives, 4 coefficient arrays and the
#: exponentials of up to 10 level gaps).
BYTES_PER_NODE = 4000
BYTES_PER_QUADRATURE_POINT = 48
BYTES_PER_TABLE_POINT = 8 * 24

#: most time-step halvings accepted (dt / 2^40 is ~1e-14 for the SPEC dt)
MAX_HALVINGS_LIMIT = 40
#: most Newton iterations per step accepted
MAX_NEWTON_ITERATIONS = 10_000
#: most time steps accepted (final_time / dt)
MAX_TIME_STEPS = 10_000_000


def reaction_levels(logistic_c: float = 1e-3, level_start: float = 5.0,
                    level_spacing: float = 6.0, n_levels: int = 11) -> Levels:
    """The reactions (i, j), 1 <= i < j <= n_levels, of SPEC 1 in lexicographic order.

    With u_i = level_start + level_spacing (i - 1) (SPEC: 5 + 6 (i - 1), 11 levels, 55
    reactions), returns a list of ``(i, j, a, c)`` such that ``r_ij(u) = 1 / (1 + c exp(-a u))``.
    """
    C = logistic_c / (1.0 - logistic_c)
    L = math.log(C ** -2)
    out = []
    for i in range(1, n_levels + 1):
        for j in range(i + 1, n_levels + 1):
            ui = level_start + level_spacing * (i - 1)
            uj = level_start + level_spacing * (j - 1)
            a = L / (uj - ui)
            out.append((i, j, a, math.exp(a * ui) / C))
    return out


def reaction_functions(u: np.ndarray, levels: Levels | None = None) -> np.ndarray:
    """Evaluate the logistic reactions r_(i,j)(u) of SPEC 1, overflow-safe.

    Parameters
    ----------
    u : array, any shape
        Concentration values.
    levels : list, optional
        From :func:`reaction_levels` (default: SPEC 1, 55 reactions).

    Returns
    -------
    array, shape (n_reactions, *u.shape)
    """
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.stack([1.0 / (1.0 + c * np.exp(-a * u)) for _, _, a, c in
                         (levels or reaction_levels())])


def reaction_sum(u: np.ndarray, y: np.ndarray, levels: Levels | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """s(u) = sum_k y_k r_k(u) and s'(u), evaluated directly (one exponential per level gap).

    Parameters
    ----------
    u : ndarray, shape (m,)
    y : ndarray, shape (n_reactions,)
    levels : list, optional
        From :func:`reaction_levels` (default: SPEC 1).

    Returns
    -------
    s, ds : ndarray, shape (m,) each
    """
    u = np.asarray(u, dtype=np.float64)
    s = np.zeros_like(u)
    ds = np.zeros_like(u)
    exps: dict[float, np.ndarray] = {}
    with np.errstate(over="ignore"):
        for k, (_, _, a, c) in enumerate(levels or reaction_levels()):
            if y[k] == 0.0:
                continue
            if a not in exps:
                exps[a] = np.exp(-a * u)
            r = 1.0 / (1.0 + c * exps[a])
            s += y[k] * r
            ds += (y[k] * a) * r * (1.0 - r)
    return s, ds


class ReactionTable:
    """Cubic Hermite table of s(u) = sum_k y_k r_k(u) for one parameter vector y.

    Parameters
    ----------
    y : ndarray, shape (n_reactions,)
    step : float
        Grid spacing in u; the interpolation error is about step^4 max|s''''| / 384.
    u_range : (float, float)
        Tabulated interval; points outside it are evaluated directly.
    """

    def __init__(self, y: np.ndarray, step: float, u_range: tuple[float, float],
                 levels: Levels | None = None):
        self.y, self.levels = y, levels
        self.lo, hi = float(u_range[0]), float(u_range[1])
        self.n = int(math.ceil((hi - self.lo) / step))
        self.h = (hi - self.lo) / self.n
        grid = self.lo + self.h * np.arange(self.n + 1)
        sv, dv = reaction_sum(grid, y, levels)
        # Per interval, the Hermite cubic in t = (u - u_i) / h in monomial form.
        s0, s1, d0, d1 = sv[:-1], sv[1:], dv[:-1] * self.h, dv[1:] * self.h
        self.coef = (s0, d0, 3.0 * (s1 - s0) - 2.0 * d0 - d1, 2.0 * (s0 - s1) + d0 + d1)

    def __call__(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated s(u) and its derivative, shape (m,) each."""
        t = (u - self.lo) * (1.0 / self.h)
        i = t.astype(np.intp)  # truncation; negative t is caught by `inside`
        inside = (t >= 0) & (i < self.n)
        np.copyto(i, 0, where=~inside)
        t -= i
        c0, c1, c2, c3 = (c[i] for c in self.coef)
        s = c0 + t * (c1 + t * (c2 + t * c3))
        ds = (c1 + t * (2.0 * c2 + 3.0 * t * c3)) * (1.0 / self.h)
        if not inside.all():
            out = ~inside
            s[out], ds[out] = reaction_sum(u[out], self.y, self.levels)
        return s, ds


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


def _jit_options() -> dict[str, Any]:
    """Optimised JIT flags with a cache directory specific to this CPU (-march=native).

    The cache lives in ``$VARPRO_JIT_CACHE_DIR`` if set, else ``~/.cache/fenics``, in a
    sub-folder named by a hash of the CPU model and flags, so that a home directory shared
    by different nodes of a cluster never runs code compiled for another CPU.

    Containers set ``$VARPRO_JIT_MARCH`` to a portable ISA level (e.g. ``x86-64-v2``): the
    forms are then compiled with ``-march=<that>`` and the sub-folder is named by the level
    instead of the CPU, so a cache compiled when the image was built is valid on any machine
    of that level. ``$VARPRO_JIT_SEED_DIR`` names a (read-only) cache of that kind, copied
    into the writable cache the first time a sub-folder is missing there (:func:`_seed_cache`).
    """
    march = os.environ.get("VARPRO_JIT_MARCH", "native")
    if march == "native":
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
            tag_src = "".join(ln for ln in cpuinfo.splitlines(True)
                              if ln.startswith(("model name", "flags")))[:4096]
        except OSError:
            tag_src = platform.processor()
    else:
        tag_src = f"march={march}"
    tag = hashlib.sha1((platform.machine() + tag_src).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("VARPRO_JIT_CACHE_DIR", "~/.cache/fenics")).expanduser() \
        / f"varpro-{tag}"
    _seed_cache(cache)
    return {
        "cffi_extra_compile_args": ["-O3", f"-march={march}"],
        "cache_dir": str(cache),
        "timeout": 300,
    }


def _seed_cache(cache: Path) -> None:
    """Copy ``$VARPRO_JIT_SEED_DIR/<cache.name>`` to ``cache`` if ``cache`` does not exist.

    The copy goes to a temporary sibling that is renamed into place, so concurrent ranks never
    see a half-copied cache (the loser of the race discards its copy).
    """
    seed = os.environ.get("VARPRO_JIT_SEED_DIR")
    if not seed or cache.exists() or not (Path(seed) / cache.name).is_dir():
        return
    import shutil
    import tempfile

    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}."))
    try:
        shutil.copytree(Path(seed) / cache.name, tmp, dirs_exist_ok=True)
        for path in (tmp, *tmp.rglob("*")):  # the seed may be read-only; the copy is the
            path.chmod(path.stat().st_mode | 0o200)  # user's, to compile new forms into
        os.rename(tmp, cache)
    except OSError:
        if not cache.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    """

    name = "cdr"

    def __init__(self, comm: MPI.Comm = MPI.COMM_SELF, *, source: Callable | None = None,
                 **settings: Any):
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise SolverSettingsError(
                f"unknown CDR setting(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
        s = {**DEFAULTS, **settings}
        self.comm = comm
        self._custom_source = source is not None
        self._validate_and_store(s)
        self._build_mesh_and_space()
        self._build_forms(source)
        self._build_linear_algebra()
        self._build_point_evaluation()

    # ------------------------------------------------------------------ settings
    def _validate_and_store(self, s: dict[str, Any]) -> None:
        self.n_cells = check_positive_int(s["n_cells"], "n_cells")
        self.dt = check_positive(s["dt"], "dt")
        self.final_time = check_positive(s["final_time"], "final_time")
        n_steps = self.final_time / self.dt
        if n_steps > MAX_TIME_STEPS:
            raise SolverSettingsError(
                f"final_time / dt = {self.final_time:g} / {self.dt:g} = {n_steps:.3g} time "
                f"steps; at most {MAX_TIME_STEPS:.0e} are accepted")
        if abs(n_steps - round(n_steps)) > 1e-8 * n_steps:
            raise SolverSettingsError(
                f"final_time / dt must be an integer, got {self.final_time} / {self.dt} = "
                f"{n_steps}")
        self.n_steps = int(round(n_steps))
        self.diffusion = check_positive(s["diffusion"], "diffusion")
        self.velocity = check_numbers(s["velocity"], 3, "velocity")
        self.sources = self._check_sources(s["sources"])
        self.source_width = check_positive(s["source_width"], "source_width")
        self.reaction_field = check_numbers(s["reaction_field"], 3, "reaction_field")
        self.level_start = check_finite(s["level_start"], "level_start")
        self.level_spacing = check_positive(s["level_spacing"], "level_spacing")
        self.n_levels = check_int(s["n_levels"], "n_levels", 2, 1000)
        self.reaction_amplitude = check_finite(s["reaction_amplitude"], "reaction_amplitude",
                                               0.0)
        self.logistic_c = check_finite(s["logistic_c"], "logistic_c")
        if not 0.0 < self.logistic_c < 0.5:
            raise SolverSettingsError(f"logistic_c must be in (0, 0.5), got {self.logistic_c}")
        try:
            self.levels = reaction_levels(self.logistic_c, self.level_start,
                                          self.level_spacing, self.n_levels)
        except (OverflowError, ZeroDivisionError):
            self.levels = []
        if not self.levels or not all(math.isfinite(a) and math.isfinite(c) and c >= 0
                                      for _, _, a, c in self.levels):
            raise SolverSettingsError(
                f"n_levels = {self.n_levels} with level_start = {self.level_start:g} and "
                f"level_spacing = {self.level_spacing:g}: the logistic constants "
                "exp(a_ij u_i) / C overflow float64 (SPEC 1: 11 levels; at most about 50 "
                "levels are representable)")
        self.n_parameters = len(self.levels)
        self.parameter_names = tuple(f"r_{i}_{j}" for i, j, _, _ in self.levels)
        pts = self._float_array(s["points"], "points")
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
            raise SolverSettingsError(f"points must have shape (n, 2), got {pts.shape}")
        if np.any(~np.isfinite(pts)) or np.any(pts < 0) or np.any(pts > 1):
            raise SolverSettingsError(f"points must lie in [0, 1]^2, got {pts.tolist()}")
        self.points = pts
        times = self._float_array(s["output_times"], "output_times")
        with np.errstate(over="ignore", invalid="ignore"):
            steps = times / self.dt
        if times.ndim != 1 or times.size == 0 or not np.all(np.isfinite(times)):
            raise SolverSettingsError("output_times must be a non-empty list of times")
        bad = (np.abs(steps - np.round(steps)) > 1e-8) | (steps < 0.5) | \
            (np.round(steps) > self.n_steps)
        if np.any(bad):
            raise SolverSettingsError(
                f"output time {times[bad][0]} is not a multiple of dt = {self.dt} in "
                f"(0, {self.final_time}]")
        self.output_times = times
        self._output_steps = np.round(steps).astype(int)
        self.newton_rtol = check_positive(s["newton_rtol"], "newton_rtol")
        self.newton_atol = check_positive(s["newton_atol"], "newton_atol")
        for key in ("newton_rtol", "newton_atol"):
            if getattr(self, key) >= 1:
                raise SolverSettingsError(f"{key} must be in (0, 1), got {s[key]!r}")
        self.newton_max_iterations = check_int(s["newton_max_iterations"],
                                               "newton_max_iterations", 1,
                                               MAX_NEWTON_ITERATIONS)
        self.max_halvings = check_int(s["max_halvings"], "max_halvings", 0, MAX_HALVINGS_LIMIT)
        self.quadrature_degree = check_int(s["quadrature_degree"], "quadrature_degree", 1, 30)
        if not isinstance(s["linear_solver"], str) or s["linear_solver"] not in ("lu", "gmres"):
            raise SolverSettingsError(
                f"linear_solver must be 'lu' or 'gmres', got {s['linear_solver']!r}")
        self.linear_solver = s["linear_solver"]
        self.predictor = check_bool(s["predictor"], "predictor")
        self.reaction_table_step = check_finite(s["reaction_table_step"],
                                                "reaction_table_step", 0.0)
        lo, hi = check_numbers(s["reaction_table_range"], 2, "reaction_table_range")
        if not lo < hi:
            raise SolverSettingsError(f"reaction_table_range must be (lo, hi) with lo < hi, got "
                                      f"{s['reaction_table_range']!r}")
        self.reaction_table_range = (lo, hi)
        self.n_observables = self.points.shape[0] * self.output_times.size
        self._check_memory()

    def _check_memory(self) -> None:
        """Refuse a mesh, quadrature or reaction table whose estimated memory does not fit."""
        size = self.comm.size
        nodes = (self.n_cells + 1) ** 2 / size
        q_points = self.n_cells ** 2 * ((self.quadrature_degree + 2) // 2) ** 2 / size
        lo, hi = self.reaction_table_range
        table = (math.ceil((hi - lo) / self.reaction_table_step) + 1
                 if self.reaction_table_step > 0 else 0)
        parts = {f"n_cells = {self.n_cells} ({nodes * size:.3g} nodes)": BYTES_PER_NODE * nodes,
                 f"quadrature_degree = {self.quadrature_degree} ({q_points * size:.3g} "
                 "quadrature points)": BYTES_PER_QUADRATURE_POINT * q_points,
                 f"reaction_table_step = {self.reaction_table_step:g} over "
                 f"reaction_table_range = {list(self.reaction_table_range)} ({table:.3g} "
                 "table points)": BYTES_PER_TABLE_POINT * table}
        main = max(parts, key=parts.get)
        check_memory(sum(parts.values()) + 64 * 2**20,
                     f"{main}, {format_bytes(parts[main])} for this part alone,")

    @staticmethod
    def _float_array(value: Any, name: str) -> np.ndarray:
        """``value`` as a float64 array, or SolverSettingsError."""
        try:
            if isinstance(value, str | bytes | dict):
                raise TypeError
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise SolverSettingsError(f"{name} must be a list of numbers, got {value!r}") from None

    @staticmethod
    def _check_sources(sources: Any) -> tuple[dict[str, Any], ...]:
        if isinstance(sources, str | bytes | dict) or not hasattr(sources, "__iter__"):
            raise SolverSettingsError(f"sources must be a list of tables with keys "
                                      f"{list(_SOURCE_KEYS)}, got {sources!r}")
        out = []
        for k, src in enumerate(sources):
            if not isinstance(src, dict) or set(src) != set(_SOURCE_KEYS):
                raise SolverSettingsError(
                    f"sources[{k}] must be a table with keys {list(_SOURCE_KEYS)}, got {src!r}")
            if not isinstance(src["function"], str) or src["function"] not in ("sin", "cos"):
                raise SolverSettingsError(
                    f"sources[{k}].function must be 'sin' or 'cos', got {src['function']!r}")
            center = check_numbers(src["center"], 2, f"sources[{k}].center")
            numbers = [check_finite(src[key], f"sources[{k}].{key}")
                       for key in ("amplitude", "offset", "modulation", "frequency")]
            out.append({"amplitude": numbers[0], "offset": numbers[1], "modulation": numbers[2],
                        "function": src["function"], "frequency": numbers[3],
                        "center": center})
        return tuple(out)

    def settings(self) -> dict[str, Any]:
        """Resolved settings (JSON-serialisable); ``CDRSolver(comm, **settings())`` rebuilds."""
        if self._custom_source:
            raise ValueError("settings() is undefined for a solver with a custom source")
        return {
            "n_cells": self.n_cells, "dt": self.dt, "final_time": self.final_time,
            "diffusion": self.diffusion, "velocity": list(self.velocity),
            "sources": [{**src, "center": list(src["center"])} for src in self.sources],
            "source_width": self.source_width,
            "reaction_amplitude": self.reaction_amplitude,
            "reaction_field": list(self.reaction_field), "level_start": self.level_start,
            "level_spacing": self.level_spacing, "n_levels": self.n_levels,
            "logistic_c": self.logistic_c,
            "points": self.points.tolist(), "output_times": self.output_times.tolist(),
            "newton_rtol": self.newton_rtol, "newton_atol": self.newton_atol,
            "newton_max_iterations": self.newton_max_iterations,
            "max_halvings": self.max_halvings, "quadrature_degree": self.quadrature_degree,
            "linear_solver": self.linear_solver,
            "predictor": self.predictor,
            "reaction_table_step": self.reaction_table_step,
            "reaction_table_range": list(self.reaction_table_range),
        }

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
        jit = {"jit_options": _jit_options()}
        self._u_at_q = fem.Expression(self.u, qpoints, jit_options=jit["jit_options"])
        if self.reaction_amplitude > 0:
            self._rbar_q = fem.Expression(rbar, qpoints, jit_options=jit["jit_options"]).eval(
                msh, self._cells).ravel()
        else:  # reaction switched off (rbar is the zero expression)
            self._rbar_q = np.zeros(self._qdofs.size)

        self._mass_form = fem.form(w * v * dx, **jit)
        self._op_form = fem.form(
            self.diffusion * ufl.inner(ufl.grad(w), ufl.grad(v)) * dx
            + ufl.dot(vel, ufl.grad(w)) * v * dx, **jit)
        self._react_form = fem.form(self._react_q * v * dx, **jit)
        self._dreact_form = fem.form(-self._dreact_q * w * v * dx, **jit)

        # Source: the SPEC f is sum_s a_s(t) g_s(x), so its load vector is a combination of
        # vectors assembled once; a custom source(x, t) is assembled per step.
        if source is None:
            def g(x0, x1):
                return ufl.exp(-self.source_width * ((x[0] - x0) ** 2 + (x[1] - x1) ** 2))
            self._source_vectors = []
            for form in (g(*src["center"]) for src in self.sources):
                vec = fem_petsc.assemble_vector(fem.form(form * v * dx, **jit))
                vec.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
                self._source_vectors.append(vec)
            self._source_form = None
        else:
            self._source_form = fem.form(source(x, self.time) * v * dx, **jit)

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

    def solve(self, y: Any, *, sample: int | None = None) -> np.ndarray:
        """Observables c (n_points * n_times,), time-major, identical on every rank."""
        return self.run(y, sample=sample).observables

    def run(self, y: Any, *, sample: int | None = None, keep_fields: bool = False) -> CDRResult:
        """Solve one sample; see :class:`CDRResult`. Raises SolveError if a step fails."""
        yv = self.check_parameters(y)
        t0 = time.perf_counter()
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
                    fields.append(self.u.x.array[:self._n_owned()].copy())
        return CDRResult(obs.ravel(), stats["newton"], stats["substeps"],
                         time.perf_counter() - t0, fields)

    def _n_owned(self) -> int:
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
        norm0 = fnorm = None
        for it in range(self.newton_max_iterations + 1):
            F = self._residual(A_lin, b)
            fnorm = F.norm()
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
        self.time.value = t_new
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


def default_parameters() -> np.ndarray:
    """A reproducible SPEC-1 parameter vector (seed 0) for demos: y ~ U(0,1)^55 / sum."""
    y = np.random.default_rng(0).random(len(reaction_levels()))
    return y / y.sum()


def sample_simplex(rng: np.random.Generator, n: int) -> np.ndarray:
    """SPEC 1 sampling: y_k ~ U(0, 1) independently, then y <- y / sum(y). Shape (n,)."""
    y = rng.random(n)
    return y / y.sum()


__all__: Sequence[str] = ["CDRSolver", "CDRResult", "DEFAULTS", "ReactionTable", "gather_field",
                          "plot_solution", "reaction_functions", "reaction_sum",
                          "reaction_levels", "sample_simplex", "default_parameters"]


def gather_field(solver: CDRSolver, values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Gather owned nodal values on rank 0 of ``solver.comm``.

    Returns ``(coords (N, 2), values (N,))`` sorted by node on rank 0, None elsewhere.
    """
    n_owned = solver._n_owned()
    coords = solver.function_space.tabulate_dof_coordinates()[:n_owned, :2]
    parts = solver.comm.gather((coords, np.asarray(values)[:n_owned]), root=0)
    if solver.comm.rank != 0:
        return None
    xy = np.concatenate([p[0] for p in parts])
    vals = np.concatenate([p[1] for p in parts])
    order = np.lexsort((xy[:, 0], xy[:, 1]))
    return xy[order], vals[order]


def plot_solution(solver: CDRSolver, result: CDRResult, path: str | Path) -> None:
    """Figure: u at the last output time with the observation points, and c(t) per point.

    ``result`` must come from ``solver.run(y, keep_fields=True)``. Collective; rank 0 writes.
    """
    gathered = gather_field(solver, result.fields[-1])
    if gathered is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy, vals = gathered
    n = solver.n_cells + 1
    field_img = vals.reshape(n, n)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    im = ax0.imshow(field_img, origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
    fig.colorbar(im, ax=ax0, label="u")
    ax0.scatter(solver.points[:, 0], solver.points[:, 1], s=60, facecolors="none",
                edgecolors="white", linewidths=1.5)
    for p, (x1, x2) in enumerate(solver.points):
        ax0.annotate(str(p), (x1, x2), xytext=(5, 4), textcoords="offset points", color="white")
    ax0.set(xlabel="$x_1$", ylabel="$x_2$",
            title=f"u at t = {solver.output_times[-1]:g} ({solver.n_cells}$^2$ Q1 cells)")
    obs = result.observables.reshape(solver.output_times.size, solver.points.shape[0])
    for p in range(obs.shape[1]):
        ax1.plot(solver.output_times, obs[:, p], "o-", ms=3, label=f"point {p}")
    ax1.set(xlabel="t", ylabel="u(x_p, t)", title="observables c")
    ax1.legend(fontsize=8)
    from solvers.output import write_atomic

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, format=fmt, dpi=120), "figure")
    finally:
        plt.close(fig)
