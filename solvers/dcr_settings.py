"""Settings of the DC-resistivity solver (SPEC 2) as a validated, frozen dataclass (numpy only).

:class:`DCRSettings` holds every setting of :class:`~solvers.dcr.DCRSolver` with the SPEC 2
value as default (then the linear-solver choices). Building one validates and normalises
every value (a bad one raises :class:`~solvers.errors.SolverSettingsError` naming the setting
and the value) and checks the geometry: both electrodes on mesh nodes, all receiver points
inside the domain. :data:`DEFAULTS` (setting name -> default) is derived from the dataclass;
:mod:`solvers` reads it to refuse unknown ``--set`` keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from solvers.base import (
    check_bool,
    check_finite,
    check_int,
    check_numbers,
    check_positive,
    check_positive_int,
    to_plain,
)
from solvers.common.memory import check_memory as _guard_memory
from solvers.common.memory import format_bytes
from solvers.errors import SolverSettingsError
from solvers.facts import ProblemFacts

#: Preconditioners accepted by the ``preconditioner`` setting.
PRECONDITIONERS = ("auto", "icc", "gamg")

#: Largest |contrast| accepted: the conductivity spans [1, e^|contrast|], and beyond a ratio of
#: 1e15 (|contrast| = 34.5) the operator's condition number exceeds what float64 CG can resolve
#: (at contrast = 1000 the conductivity overflows to inf and the solve never ends).
MAX_CONTRAST = math.log(1e15)

#: Upper bound of CG iterations accepted for ``max_iterations``.
MAX_ITERATIONS_LIMIT = 10_000_000

#: Memory model (bytes) used to refuse meshes that cannot fit, from peak-RSS measurements on
#: one rank (bench/bench_dcr.py sizes: 48 x 48 x 24 -> 73 MiB, 96 x 96 x 48 -> 324 MiB, i.e.
#: about 660 B per node), with head-room: per node, and per receiver point of the observation
#: matrix (4 interpolation stencils of 8 weights each, while it is built).
BYTES_PER_NODE = 900
BYTES_PER_RECEIVER = 1600

#: Relative tolerance for "this coordinate lies on a mesh node".
NODE_TOL = 1e-9


@dataclass(frozen=True)
class DCRSettings:
    """Validated settings of the DCR solver; the defaults are the SPEC 2 values.

    Construction validates and normalises every field (ints, floats, tuples) and raises
    :class:`~solvers.errors.SolverSettingsError` naming the first bad setting and its value.
    The fields are documented in :class:`~solvers.dcr.DCRSolver`; lengths are in the units of
    the domain (SPEC 2: a 2 x 2 x 1 box), angles in radians.

    Use :meth:`from_dict` for a mapping that may hold unknown keys (``--set``, TOML files),
    :meth:`to_dict` for the JSON-serialisable form stored with datasets, and
    :meth:`check_memory` before allocating the mesh.
    """

    n_cells: tuple[int, int, int] = (48, 48, 24)
    domain: tuple[float, float, float] = (2.0, 2.0, 1.0)
    source_plus: tuple[float, float, float] = (1.0, 11 / 6, 1.0)
    source_minus: tuple[float, float, float] = (1.0, 1 / 6, 1.0)
    receiver_start: float = 0.1
    receiver_spacing: float = 0.09
    n_receivers: int = 21
    difference_step: float = 0.045
    depth_range: tuple[float, float] = (0.3, 0.7)
    size_range: tuple[float, float] = (0.1, 0.3)
    angle_range: tuple[float, float] = (0.0, math.pi)
    body_center: tuple[float, float] = (1.0, 1.0)
    contrast: float = 10.0
    anisotropy: float = 2.0
    allow_extrapolation: bool = False
    rtol: float = 1e-10
    max_iterations: int = 10_000
    preconditioner: str = "auto"
    factor_levels: int = 1

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> DCRSettings:
        """Settings from a mapping of setting name -> value; missing keys take the defaults.

        Raises
        ------
        SolverSettingsError
            An unknown key (listing the valid ones) or a bad value.
        """
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise SolverSettingsError(
                f"unknown DCR setting(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
        return cls(**settings)

    def __post_init__(self) -> None:
        def store(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        # mesh
        n_cells = self.n_cells
        if isinstance(n_cells, str | bytes | dict) or not hasattr(n_cells, "__iter__"):
            raise SolverSettingsError(f"n_cells must be 3 integers, got {n_cells!r}")
        cells = list(n_cells)
        if len(cells) != 3:
            raise SolverSettingsError(f"n_cells must be 3 integers, got {n_cells!r}")
        store("n_cells", tuple(check_positive_int(c, f"n_cells[{d}]")
                               for d, c in enumerate(cells)))
        lengths = _as_triple(self.domain, "domain")
        store("domain", tuple(check_positive(v, f"domain[{d}]") for d, v in enumerate(lengths)))
        if self.n_nodes > 2**31 - 1:
            raise SolverSettingsError(
                f"n_cells = {list(self.n_cells)} gives {self.n_nodes:.3g} nodes, more than "
                "PETSc's 32-bit indices allow (2^31 - 1)")
        # electrodes
        raw_plus, raw_minus = self.source_plus, self.source_minus
        store("source_plus", self._on_node(raw_plus, "source_plus")[0])
        store("source_minus", self._on_node(raw_minus, "source_minus")[0])
        plus_node, minus_node = (node for node, _ in self.electrode_nodes)
        if plus_node == minus_node:
            raise SolverSettingsError(
                f"source_plus = {raw_plus!r} and source_minus = {raw_minus!r} are the "
                "same node; the dipole would vanish")
        # receivers
        store("receiver_start", check_finite(self.receiver_start, "receiver_start"))
        store("receiver_spacing", check_positive(self.receiver_spacing, "receiver_spacing"))
        store("n_receivers", check_positive_int(self.n_receivers, "n_receivers"))
        store("difference_step", check_positive(self.difference_step, "difference_step"))
        lo = self.receiver_start - self.difference_step
        hi = self.receiver_start + self.receiver_spacing * (self.n_receivers - 1) \
            + self.difference_step
        for d in range(2):
            if lo < 0 or hi > self.domain[d]:
                raise SolverSettingsError(
                    f"receiver points (centres +- difference_step) span [{lo:.6g}, {hi:.6g}] "
                    f"in x{d + 1}, outside the domain [0, {self.domain[d]}]")
        # parameter ranges and the conductivity model
        raw_size = self.size_range
        for key in ("depth_range", "size_range", "angle_range"):
            store(key, _as_range(getattr(self, key), key))
        if self.size_range[0] <= 0:
            raise SolverSettingsError(f"size_range must be > 0, got {raw_size!r}")
        store("body_center", check_numbers(self.body_center, 2, "body_center"))
        try:
            store("contrast", check_finite(self.contrast, "contrast", -MAX_CONTRAST,
                                           MAX_CONTRAST))
        except SolverSettingsError:
            raise SolverSettingsError(
                f"contrast = {self.contrast!r} is refused: m = exp(contrast * ...) would span "
                f"[1, e^|contrast|]; |contrast| must be at most {MAX_CONTRAST:.4g} "
                "(conductivity ratio 1e15; SPEC 2: 10)") from None
        raw = self.anisotropy
        store("anisotropy", check_positive(raw, "anisotropy"))
        if self.anisotropy > 1e6:
            raise SolverSettingsError(f"anisotropy must be in (0, 1e6], got {raw!r}")
        store("allow_extrapolation", check_bool(self.allow_extrapolation,
                                                "allow_extrapolation"))
        # linear solver
        raw = self.rtol
        store("rtol", check_positive(raw, "rtol"))
        if self.rtol >= 1:
            raise SolverSettingsError(f"rtol must be in (0, 1), got {raw!r}")
        store("max_iterations", check_int(self.max_iterations, "max_iterations", 1,
                                          MAX_ITERATIONS_LIMIT))
        if not isinstance(self.preconditioner, str) or \
                self.preconditioner not in PRECONDITIONERS:
            raise SolverSettingsError(
                f"preconditioner must be one of {PRECONDITIONERS}, got {self.preconditioner!r}")
        store("factor_levels", check_int(self.factor_levels, "factor_levels", 0, 20))

    def _on_node(self, point: Any, name: str) -> tuple[tuple[float, float, float], int]:
        """Validate an electrode position; return it and its node index (x1 fastest)."""
        x = _as_triple(point, name)
        idx = []
        for d in range(3):
            if not -NODE_TOL * self.domain[d] <= x[d] <= self.domain[d] * (1 + NODE_TOL):
                raise SolverSettingsError(
                    f"{name} = {x} lies outside the domain (0, {self.domain[d]}) in x{d + 1}")
            t = x[d] / self.h[d]
            if abs(t - round(t)) > NODE_TOL * max(1.0, abs(t)):
                raise SolverSettingsError(
                    f"{name} = {x} is not on a mesh node for n_cells = {self.n_cells}: "
                    f"x{d + 1} / h{d + 1} = {t:.6g} is not an integer")
            idx.append(int(round(t)))
        N1, N2, _ = self.n_nodes_axis
        return x, idx[0] + N1 * (idx[1] + N2 * idx[2])

    # ------------------------------------------------------------------ derived values
    @property
    def h(self) -> tuple[float, float, float]:
        """Cell sizes (h1, h2, h3) = domain / n_cells (length units)."""
        h1, h2, h3 = (L / n for L, n in zip(self.domain, self.n_cells, strict=True))
        return h1, h2, h3

    @property
    def n_nodes_axis(self) -> tuple[int, int, int]:
        """Node counts (n1 + 1, n2 + 1, n3 + 1)."""
        n1, n2, n3 = self.n_cells
        return n1 + 1, n2 + 1, n3 + 1

    @property
    def n_nodes(self) -> int:
        """Number of mesh nodes, (n1 + 1)(n2 + 1)(n3 + 1)."""
        return math.prod(self.n_nodes_axis)

    @property
    def electrode_nodes(self) -> tuple[tuple[int, float], tuple[int, float]]:
        """``((node of source_plus, +1.0), (node of source_minus, -1.0))``, nodes numbered
        x1 fastest."""
        return ((self._on_node(self.source_plus, "source_plus")[1], 1.0),
                (self._on_node(self.source_minus, "source_minus")[1], -1.0))

    @property
    def n_observables(self) -> int:
        """Length of c: D1 and D2 at n_receivers^2 receiver centres."""
        return 2 * self.n_receivers ** 2

    # ------------------------------------------------------------------ checks and output
    def check_memory(self, n_ranks: int = 1) -> None:
        """Refuse a mesh or receiver count whose estimated memory does not fit (per rank).

        Parameters
        ----------
        n_ranks : int
            Ranks sharing the mesh (each holds 1 / n_ranks of the nodes).

        Raises
        ------
        SolverSettingsError
            Naming the mesh, the receivers and the memory available.
        """
        nodes = self.n_nodes / n_ranks
        receivers = 4 * self.n_receivers ** 2
        estimate = BYTES_PER_NODE * nodes + BYTES_PER_RECEIVER * receivers + 64 * 2**20
        what = (f"n_cells = {list(self.n_cells)} ({self.n_nodes:.3g} nodes"
                + (f" on {n_ranks} ranks" if n_ranks > 1 else "")
                + f") with n_receivers = {self.n_receivers} ({self.n_observables:.3g} "
                f"observables; estimate {format_bytes(BYTES_PER_NODE)} per node, "
                f"{format_bytes(BYTES_PER_RECEIVER)} per receiver point)")
        _guard_memory(estimate, what)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-serialisable values (tuples become lists), in field order;
        ``DCRSettings.from_dict(s.to_dict()) == s``."""
        return {f.name: to_plain(getattr(self, f.name)) for f in fields(self)}


#: Setting name -> default (SPEC 2 values, then the linear-solver choices), in field order.
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(DCRSettings)}


def _as_triple(value: Any, name: str) -> tuple[float, float, float]:
    """``value`` as 3 finite floats, or SolverSettingsError."""
    try:
        t = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise SolverSettingsError(f"{name} must be 3 numbers, got {value!r}") from exc
    if len(t) != 3 or not all(math.isfinite(v) for v in t):
        raise SolverSettingsError(f"{name} must be 3 finite numbers, got {value!r}")
    return t[0], t[1], t[2]


def _as_range(value: Any, name: str) -> tuple[float, float]:
    """``value`` as a pair (low, high) of finite floats with low < high, or
    SolverSettingsError."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise SolverSettingsError(f"{name} must be a pair (low, high), got {value!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise SolverSettingsError(f"{name} must be finite with low < high, got {value!r}")
    return lo, hi


__all__ = ["BYTES_PER_NODE", "BYTES_PER_RECEIVER", "DCRSettings", "DEFAULTS",
           "MAX_CONTRAST", "MAX_ITERATIONS_LIMIT", "NODE_TOL", "PRECONDITIONERS"]

#: The DCR problem's facts (SPEC 2 and 3), read by the registry without loading PETSc: help
#: text; 3 -> 882 with the defaults; the paper's 10,000 samples split 80/10/10 (SPEC 3); the
#: conductivity is pi-periodic in the orientation angle y3 (index 2); inputs standardised and
#: targets centred (SPEC 2).
FACTS = ProblemFacts(
    name="dcr",
    help="DC resistivity, y in R^3 -> c in R^882 (SPEC 2)",
    default_sizes=(3, 882),
    default_samples=10_000,
    default_split=(0.8, 0.1, 0.1),
    periodic_parameters={2: math.pi},
    training_hints={"standardize_inputs": True, "center_targets": True},
)
