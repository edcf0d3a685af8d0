"""Settings of the CDR solver (SPEC 1) as a validated, frozen dataclass (numpy only).

:class:`CDRSettings` holds every setting of :class:`~solvers.cdr.CDRSolver` with the SPEC 1
value as default. Building one validates and normalises every value (a bad one raises
:class:`~solvers.errors.SolverSettingsError` naming the setting and the value), so the solver
itself only builds meshes and matrices. :data:`DEFAULTS` (setting name -> SPEC default) is
derived from the dataclass; :mod:`solvers` reads it to refuse unknown ``--set`` keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from solvers.base import (
    check_bool,
    check_finite,
    check_int,
    check_numbers,
    check_positive,
    check_positive_int,
    to_plain,
)
from solvers.cdr_reaction import Levels, reaction_levels
from solvers.common.memory import check_memory as _guard_memory
from solvers.common.memory import format_bytes
from solvers.errors import SolverSettingsError
from solvers.facts import ProblemFacts

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
#: Keys of one entry of ``sources``, in this order.
SOURCE_KEYS = ("amplitude", "offset", "modulation", "function", "frequency", "center")

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


@dataclass(frozen=True)
class CDRSettings:
    """Validated settings of the CDR solver; every default is the SPEC 1 value.

    Construction validates and normalises every field (ints, floats, tuples; ``points`` a
    tuple of (x1, x2) pairs, ``sources`` a tuple of dicts) and raises
    :class:`~solvers.errors.SolverSettingsError` naming the first bad setting and its value.
    The fields are documented in :class:`~solvers.cdr.CDRSolver`; times and lengths are in the
    dimensionless units of SPEC 1.

    Use :meth:`from_dict` for a mapping that may hold unknown keys (``--set``, TOML files),
    :meth:`to_dict` for the JSON-serialisable form stored with datasets, and
    :meth:`check_memory` before allocating the mesh.
    """

    n_cells: int = 150
    dt: float = 0.01
    final_time: float = 0.5
    diffusion: float = 0.5
    velocity: tuple[float, float, float] = (4.5, 0.8, 5.5)
    sources: tuple[dict[str, Any], ...] = DEFAULT_SOURCES
    source_width: float = 200.0
    reaction_amplitude: float = 500.0
    reaction_field: tuple[float, float, float] = (0.8, 0.2, 1.0)
    level_start: float = 5.0
    level_spacing: float = 6.0
    n_levels: int = 11
    logistic_c: float = 1e-3
    points: tuple[tuple[float, float], ...] = DEFAULT_POINTS
    output_times: tuple[float, ...] = DEFAULT_OUTPUT_TIMES
    newton_rtol: float = 1e-10
    newton_atol: float = 1e-12
    newton_max_iterations: int = 25
    max_halvings: int = 8
    quadrature_degree: int = 2
    linear_solver: str = "gmres"
    predictor: bool = False
    reaction_table_step: float = 5e-3
    reaction_table_range: tuple[float, float] = (-50.0, 600.0)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> CDRSettings:
        """Settings from a mapping of setting name -> value; missing keys take the defaults.

        Raises
        ------
        SolverSettingsError
            An unknown key (listing the valid ones) or a bad value.
        """
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise SolverSettingsError(
                f"unknown CDR setting(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
        return cls(**settings)

    def __post_init__(self) -> None:
        def store(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        store("n_cells", check_positive_int(self.n_cells, "n_cells"))
        store("dt", check_positive(self.dt, "dt"))
        store("final_time", check_positive(self.final_time, "final_time"))
        n_steps = self.final_time / self.dt
        if n_steps > MAX_TIME_STEPS:
            raise SolverSettingsError(
                f"final_time / dt = {self.final_time:g} / {self.dt:g} = {n_steps:.3g} time "
                f"steps; at most {MAX_TIME_STEPS:.0e} are accepted")
        if abs(n_steps - round(n_steps)) > 1e-8 * n_steps:
            raise SolverSettingsError(
                f"final_time / dt must be an integer, got {self.final_time} / {self.dt} = "
                f"{n_steps}")
        store("diffusion", check_positive(self.diffusion, "diffusion"))
        store("velocity", check_numbers(self.velocity, 3, "velocity"))
        store("sources", _check_sources(self.sources))
        store("source_width", check_positive(self.source_width, "source_width"))
        store("reaction_field", check_numbers(self.reaction_field, 3, "reaction_field"))
        store("level_start", check_finite(self.level_start, "level_start"))
        store("level_spacing", check_positive(self.level_spacing, "level_spacing"))
        store("n_levels", check_int(self.n_levels, "n_levels", 2, 1000))
        store("reaction_amplitude", check_finite(self.reaction_amplitude,
                                                 "reaction_amplitude", 0.0))
        store("logistic_c", check_finite(self.logistic_c, "logistic_c"))
        if not 0.0 < self.logistic_c < 0.5:
            raise SolverSettingsError(f"logistic_c must be in (0, 0.5), got {self.logistic_c}")
        try:
            levels = self.levels
        except (OverflowError, ZeroDivisionError):
            levels = []
        if not levels or not all(math.isfinite(a) and math.isfinite(c) and c >= 0
                                 for _, _, a, c in levels):
            raise SolverSettingsError(
                f"n_levels = {self.n_levels} with level_start = {self.level_start:g} and "
                f"level_spacing = {self.level_spacing:g}: the logistic constants "
                "exp(a_ij u_i) / C overflow float64 (SPEC 1: 11 levels; at most about 50 "
                "levels are representable)")
        pts = _float_array(self.points, "points")
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
            raise SolverSettingsError(f"points must have shape (n, 2), got {pts.shape}")
        if np.any(~np.isfinite(pts)) or np.any(pts < 0) or np.any(pts > 1):
            raise SolverSettingsError(f"points must lie in [0, 1]^2, got {pts.tolist()}")
        store("points", tuple((x1, x2) for x1, x2 in pts.tolist()))
        times = _float_array(self.output_times, "output_times")
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
        store("output_times", tuple(times.tolist()))
        tolerances = {key: getattr(self, key) for key in ("newton_rtol", "newton_atol")}
        for key, value in tolerances.items():
            store(key, check_positive(value, key))
        for key, value in tolerances.items():
            if getattr(self, key) >= 1:
                raise SolverSettingsError(f"{key} must be in (0, 1), got {value!r}")
        store("newton_max_iterations", check_int(self.newton_max_iterations,
                                                 "newton_max_iterations", 1,
                                                 MAX_NEWTON_ITERATIONS))
        store("max_halvings", check_int(self.max_halvings, "max_halvings", 0,
                                        MAX_HALVINGS_LIMIT))
        store("quadrature_degree", check_int(self.quadrature_degree, "quadrature_degree", 1,
                                             30))
        if not isinstance(self.linear_solver, str) or self.linear_solver not in ("lu", "gmres"):
            raise SolverSettingsError(
                f"linear_solver must be 'lu' or 'gmres', got {self.linear_solver!r}")
        store("predictor", check_bool(self.predictor, "predictor"))
        store("reaction_table_step", check_finite(self.reaction_table_step,
                                                  "reaction_table_step", 0.0))
        lo, hi = check_numbers(self.reaction_table_range, 2, "reaction_table_range")
        if not lo < hi:
            raise SolverSettingsError(f"reaction_table_range must be (lo, hi) with lo < hi, got "
                                      f"{self.reaction_table_range!r}")
        store("reaction_table_range", (lo, hi))

    # ------------------------------------------------------------------ derived values
    @property
    def n_steps(self) -> int:
        """Number of backward-Euler steps, final_time / dt."""
        return int(round(self.final_time / self.dt))

    @property
    def output_steps(self) -> np.ndarray:
        """Time-step index (1..n_steps) of each output time, int array of shape (n_times,)."""
        return np.round(np.asarray(self.output_times, dtype=np.float64) / self.dt).astype(int)

    @property
    def levels(self) -> Levels:
        """The reactions ``(i, j, a, c)`` of :func:`~solvers.cdr_reaction.reaction_levels`."""
        return reaction_levels(self.logistic_c, self.level_start, self.level_spacing,
                               self.n_levels)

    @property
    def n_parameters(self) -> int:
        """Length of y: one coefficient per reaction, n_levels (n_levels - 1) / 2."""
        return self.n_levels * (self.n_levels - 1) // 2

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """``r_i_j`` per entry of y, in the order of :attr:`levels`."""
        return tuple(f"r_{i}_{j}" for i, j, _, _ in self.levels)

    @property
    def n_observables(self) -> int:
        """Length of c: n_points * n_times."""
        return len(self.points) * len(self.output_times)

    # ------------------------------------------------------------------ checks and output
    def check_memory(self, n_ranks: int = 1) -> None:
        """Refuse a mesh, quadrature or reaction table whose estimated memory does not fit.

        Parameters
        ----------
        n_ranks : int
            Ranks sharing the mesh (each holds 1 / n_ranks of the nodes and cells).

        Raises
        ------
        SolverSettingsError
            Naming the largest part of the estimate and the memory available.
        """
        nodes = (self.n_cells + 1) ** 2 / n_ranks
        q_points = self.n_cells ** 2 * ((self.quadrature_degree + 2) // 2) ** 2 / n_ranks
        lo, hi = self.reaction_table_range
        table = (math.ceil((hi - lo) / self.reaction_table_step) + 1
                 if self.reaction_table_step > 0 else 0)
        parts = {f"n_cells = {self.n_cells} ({nodes * n_ranks:.3g} nodes)":
                 BYTES_PER_NODE * nodes,
                 f"quadrature_degree = {self.quadrature_degree} ({q_points * n_ranks:.3g} "
                 "quadrature points)": BYTES_PER_QUADRATURE_POINT * q_points,
                 f"reaction_table_step = {self.reaction_table_step:g} over "
                 f"reaction_table_range = {list(self.reaction_table_range)} ({table:.3g} "
                 "table points)": BYTES_PER_TABLE_POINT * table}
        main = max(parts, key=lambda key: parts[key])
        _guard_memory(sum(parts.values()) + 64 * 2**20,
                      f"{main}, {format_bytes(parts[main])} for this part alone,")

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-serialisable values (tuples become lists), in field order;
        ``CDRSettings.from_dict(s.to_dict()) == s``."""
        return {f.name: to_plain(getattr(self, f.name)) for f in fields(self)}


#: Setting name -> SPEC 1 default, in field order (the solver's keyword arguments).
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(CDRSettings)}


def _float_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a float64 array, or SolverSettingsError."""
    try:
        if isinstance(value, str | bytes | dict):
            raise TypeError
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise SolverSettingsError(f"{name} must be a list of numbers, got {value!r}") from None


def _check_sources(sources: Any) -> tuple[dict[str, Any], ...]:
    """``sources`` as a tuple of dicts with the keys :data:`SOURCE_KEYS`, or
    SolverSettingsError naming the bad entry."""
    if isinstance(sources, str | bytes | dict) or not hasattr(sources, "__iter__"):
        raise SolverSettingsError(f"sources must be a list of tables with keys "
                                  f"{list(SOURCE_KEYS)}, got {sources!r}")
    out = []
    for k, src in enumerate(sources):
        if not isinstance(src, dict) or set(src) != set(SOURCE_KEYS):
            raise SolverSettingsError(
                f"sources[{k}] must be a table with keys {list(SOURCE_KEYS)}, got {src!r}")
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


__all__ = ["BYTES_PER_NODE", "BYTES_PER_QUADRATURE_POINT", "BYTES_PER_TABLE_POINT",
           "CDRSettings", "DEFAULTS", "DEFAULT_OUTPUT_TIMES", "DEFAULT_POINTS",
           "DEFAULT_SOURCES", "MAX_HALVINGS_LIMIT", "MAX_NEWTON_ITERATIONS", "MAX_TIME_STEPS",
           "SOURCE_KEYS"]

#: The CDR problem's facts (SPEC 1 and 3), read by the registry without loading dolfinx:
#: help text; 55 -> 72 with the defaults; the paper's 800 samples split 50/25/25 (SPEC 3);
#: inputs on the simplex (~1/55 each) used as they are and targets not centred, as in the paper.
FACTS = ProblemFacts(
    name="cdr",
    help="convection-diffusion-reaction, y in R^55 -> c in R^72 (SPEC 1)",
    default_sizes=(55, 72),
    default_samples=800,
    default_split=(0.5, 0.25, 0.25),
    training_hints={"standardize_inputs": False, "center_targets": False},
)
