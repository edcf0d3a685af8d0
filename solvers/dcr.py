"""DC-resistivity (DCR) solver: nodal finite volumes on a tensor mesh, PETSc (SPEC section 2).

The PDE (GNvpro appendix A, SPEC 2) for the potential u on (0, 2) x (0, 2) x (0, 1)::

    -div(m(x; y) grad u) = q,   grad u . n = 0 on the whole boundary,

with the conductivity ``m = exp(10 exp(-(2 r1^2 + r2^2 + (x3 - y1)^2) / y2^2))``,
``(r1, r2) = Q(y3) (x1 - 1, x2 - 1)``, and q a unit dipole on the surface x3 = 1.

Discretisation (SPEC 2): m is evaluated once per cell at its centre, u lives on the nodes and
``A = G^T M_e(m) G`` with G the nodal gradient (edge differences / edge length) and M_e the
diagonal edge mass matrix, ``(M_e)_ee = (cell volume / 4) * sum of m over the cells sharing
edge e`` (cells outside the domain contribute nothing). Because M_e is diagonal, A is a 7-point
stencil whose off-diagonal entry on edge e is ``-(M_e)_ee / h_e^2`` and whose diagonal is minus
the sum of its row's off-diagonals; it is assembled directly from these edge weights (numpy
slicing, no sparse products per sample) into a fixed CSR pattern. The right-hand side is +1 and
-1 at the two electrode nodes (no division by a control volume). Observables are central
differences of trilinearly interpolated surface potentials, ``c = P u`` with a sparse P.

Readings of SPEC 2 made here:

* Constant null space: the matrix carries a PETSc constant null space, the right-hand side is
  made orthogonal to it (the dipole already is) and the returned potential has zero mean over
  the nodes. Observables are differences of u, so they do not depend on this choice.
* Linear solver: conjugate gradients, preconditioned with ICC(1) on one rank (default mesh)
  and with GAMG on several ranks or large meshes (PETSc's ICC is sequential; see
  :data:`AUTO_ICC_MAX_NODES`). The relative residual tolerance ``rtol`` (unpreconditioned
  2-norm, relative to the right-hand side) defaults to 1e-10, which gives the observables to
  about 1e-11 relative (checked against a direct solve) for either preconditioner and any rank
  count; rtol = 1e-8 would still give ~2e-9. The initial guess is always zero, so a sample's
  result does not depend on which samples were solved before it.
* Parallel layout: rank r owns a contiguous block of whole x3-planes of nodes (the natural
  x1-fastest node order is kept, so PETSc rows are contiguous slabs); each rank evaluates m only
  on the cell planes its rows touch. This allows at most n3 + 1 ranks.

Module layout: settings and their validation in :mod:`solvers.dcr_settings`, figures in
:mod:`solvers.dcr_plot`; this module holds the solver (mesh layout, operator, CG solve).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from solvers.common.mpi_network import init_mpi

init_mpi()  # loopback MPI for single-node runs, then dolfinx_solver (MPI before PETSc/dolfinx)

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from mpi4py import MPI  # noqa: E402
from petsc4py import PETSc  # noqa: E402

from solvers.base import SolveError, SolverSettingsError, check_parameter_vector  # noqa: E402
from solvers.dcr_settings import DEFAULTS, FACTS, DCRSettings  # noqa: E402

#: "auto" uses ICC up to this many nodes on one rank, else GAMG. Measured per sample (CG,
#: rtol 1e-10, CPU seconds): 60,025 nodes ICC(1) 88 its 0.12 s vs GAMG 16 its 0.14 s;
#: 461,041 nodes ICC(1) 163 its ~2.5 s vs GAMG 16 its 1.5 s.
AUTO_ICC_MAX_NODES = 200_000


def _stencil_offsets(N1: int, N2: int) -> np.ndarray:
    """Column offsets of the 7-point stencil in the x1-fastest node order, ascending:
    (down, south, west, centre, east, north, up) for node counts N1, N2 in x1, x2."""
    return np.array([-N1 * N2, -N1, -1, 0, 1, N1, N1 * N2], dtype=np.int64)


def _pair_sum(a: np.ndarray, axis: int) -> np.ndarray:
    """Sum of neighbouring entries along ``axis`` (length shrinks by one)."""
    lo = [slice(None)] * a.ndim
    hi = [slice(None)] * a.ndim
    lo[axis] = slice(None, -1)
    hi[axis] = slice(1, None)
    return a[tuple(lo)] + a[tuple(hi)]


def trilinear_matrix(points: np.ndarray, spacing: Sequence[float],
                     n_cells: Sequence[int]) -> sp.csr_matrix:
    """Sparse trilinear interpolation from the nodes of a uniform tensor mesh to points.

    Parameters
    ----------
    points : ndarray, shape (n_points, 3)
        Points inside the closed box [0, n_cells[d] * spacing[d]]^3.
    spacing : sequence of 3 floats
        Cell sizes (h1, h2, h3).
    n_cells : sequence of 3 ints
        Cell counts (n1, n2, n3).

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_points, (n1+1)(n2+1)(n3+1))
        Row p holds the 8 trilinear weights of point p on the nodes, node (i, j, k) at column
        ``i + (n1+1) (j + (n2+1) k)`` (x1 fastest).
    """
    pts = np.asarray(points, dtype=np.float64)
    n = np.asarray(n_cells)
    t = pts / np.asarray(spacing, dtype=np.float64)
    base = np.clip(np.floor(t).astype(np.int64), 0, n - 1)
    frac = t - base
    rows, cols, vals = [], [], []
    for corner in np.ndindex(2, 2, 2):
        c = np.asarray(corner)
        w = np.prod(np.where(c == 1, frac, 1.0 - frac), axis=1)
        idx = base + c
        cols.append(idx[:, 0] + (n[0] + 1) * (idx[:, 1] + (n[1] + 1) * idx[:, 2]))
        rows.append(np.arange(len(pts)))
        vals.append(w)
    n_nodes = int(np.prod(n + 1))
    mat = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(len(pts), n_nodes))
    mat.eliminate_zeros()
    return mat


class DCRSolver:
    """DC-resistivity parameter-to-observable map of SPEC 2 (GNvpro appendix A).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        COMM_SELF: one rank per sample; a larger communicator distributes the nodes in slabs
        of x3-planes (at most n3 + 1 ranks).
    n_cells : 3 ints
        Cells (n1, n2, n3) of the uniform tensor mesh; both electrodes must lie on nodes.
    domain : 3 floats
        Box lengths (L1, L2, L3); the surface is x3 = L3.
    source_plus, source_minus : 3 floats
        Positions of the +1 and -1 electrodes (mesh nodes).
    receiver_start, receiver_spacing, n_receivers :
        Receiver centres ``r_k = receiver_start + receiver_spacing k``, k = 0..n_receivers-1,
        on the surface in both x1 and x2.
    difference_step : float
        Half-width of the central differences D1, D2 (SPEC 2).
    depth_range, size_range, angle_range : pairs of floats
        Ranges of y1 (height of the body's centre above the bottom), y2 (size) and y3
        (orientation angle, radians); ``sample_parameters`` draws uniformly from them.
    body_center, contrast, anisotropy : (float, float), float, float
        The (1, 1), 10 and 2 of m = exp(10 exp(-(2 r1^2 + r2^2 + (x3 - y1)^2) / y2^2)) with
        (r1, r2) = Q(y3) (x1 - 1, x2 - 1) (SPEC 2).
    allow_extrapolation : bool
        If False, ``solve`` rejects y outside the ranges; y2 <= 0 is always rejected.
    rtol : float
        Relative residual tolerance of CG (unpreconditioned 2-norm).
    max_iterations : int
        CG iteration limit; a solve that hits it raises :class:`~solvers.errors.SolveError`.
    preconditioner : {"auto", "icc", "gamg"}
        "auto": ICC on one rank for meshes up to ``AUTO_ICC_MAX_NODES`` nodes, else GAMG
        (PETSc's ICC is sequential).
    factor_levels : int
        Fill levels of the incomplete Cholesky factorisation (ICC(k)).
    config : DCRSettings, optional
        All settings at once, already validated (instead of the keywords above).

    Every setting is validated by :class:`~solvers.dcr_settings.DCRSettings` (a bad one raises
    :class:`~solvers.errors.SolverSettingsError` naming it) before any array is allocated;
    the settings stay available as :attr:`config` and as attributes of the same names.
    """

    name = "dcr"
    n_parameters = 3
    n_observables = 882
    parameter_names = ("depth", "size", "angle")
    #: the problem's facts (:data:`solvers.dcr_settings.FACTS`): paper dataset size, SPEC 3
    #: split, the pi-periodic angle y3, training hints, sizes with the defaults
    default_samples = FACTS.default_samples
    default_split = FACTS.default_split
    periodic_parameters = FACTS.periodic_parameters
    training_hints = FACTS.training_hints
    default_sizes = FACTS.default_sizes

    def __init__(self, comm: MPI.Comm = MPI.COMM_SELF, *, config: DCRSettings | None = None,
                 **settings: Any):
        if config is None:
            config = DCRSettings.from_dict(settings)
        elif not isinstance(config, DCRSettings):
            raise SolverSettingsError(f"config must be a DCRSettings, got {config!r}")
        elif settings:
            raise SolverSettingsError(
                f"pass either config or setting keywords, not both (got {sorted(settings)})")
        self.comm = comm
        self._store(config)
        if self.comm.size > self.n_nodes_axis[2]:
            raise SolverSettingsError(
                f"{self.comm.size} ranks but only {self.n_nodes_axis[2]} node planes in x3 "
                f"(n_cells = {self.n_cells}); use at most n3 + 1 ranks")
        config.check_memory(comm.size)
        #: CG iterations of the last solve (for benchmarks and logs).
        self.last_iterations = 0
        self._build_layout()
        self._build_pattern()
        self._build_observation()
        self._build_ksp()

    # ------------------------------------------------------------------ settings
    def _store(self, config: DCRSettings) -> None:
        """Keep ``config`` and its values (and the derived mesh sizes) as attributes."""
        self.config = config
        self.n_cells, self.domain, self.h = config.n_cells, config.domain, config.h
        self.n_nodes_axis, self.n_nodes = config.n_nodes_axis, config.n_nodes
        self.source_plus, self.source_minus = config.source_plus, config.source_minus
        self._electrode_nodes = config.electrode_nodes
        self.receiver_start = config.receiver_start
        self.receiver_spacing = config.receiver_spacing
        self.n_receivers = config.n_receivers
        self.difference_step = config.difference_step
        self.n_observables = config.n_observables
        self.depth_range, self.size_range = config.depth_range, config.size_range
        self.angle_range = config.angle_range
        self.body_center = config.body_center
        self.contrast, self.anisotropy = config.contrast, config.anisotropy
        self.allow_extrapolation = config.allow_extrapolation
        self.rtol, self.max_iterations = config.rtol, config.max_iterations
        self.preconditioner, self.factor_levels = config.preconditioner, config.factor_levels

    def settings(self) -> dict[str, Any]:
        """The resolved configuration (JSON-serialisable); ``DCRSolver(comm, **settings())``
        rebuilds an identical solver."""
        return self.config.to_dict()

    @property
    def parameter_bounds(self) -> np.ndarray:
        """Ranges of (y1, y2, y3), shape (3, 2): rows (low, high)."""
        return np.array([self.depth_range, self.size_range, self.angle_range])

    def sample_parameters(self, rng: np.random.Generator) -> np.ndarray:
        """Draw y ~ U(ranges) with exactly one ``rng.random(3)`` call; shape (3,)."""
        b = self.parameter_bounds
        return b[:, 0] + (b[:, 1] - b[:, 0]) * rng.random(3)

    def check_parameters(self, y: Any) -> np.ndarray:
        """Return y as float64 shape (3,) or raise ValueError naming the bad entry and range."""
        arr = check_parameter_vector(y, self.n_parameters)
        if arr[1] <= 0:
            raise ValueError(f"y[1] (size) = {arr[1]} must be > 0")
        if not self.allow_extrapolation:
            for d, (lo, hi) in enumerate(self.parameter_bounds):
                if not lo <= arr[d] <= hi:
                    raise ValueError(
                        f"y[{d}] ({self.parameter_names[d]}) = {arr[d]} is outside the range "
                        f"[{lo}, {hi}]; pass allow_extrapolation=True "
                        "(solve-pde: --allow-extrapolation) to allow it")
        return arr

    # ------------------------------------------------------------------ mesh and operators
    def _build_layout(self) -> None:
        """Rank r owns node planes [k0, k1) in x3 (contiguous rows in the x1-fastest order)."""
        N1, N2, N3 = self.n_nodes_axis
        size, rank = self.comm.size, self.comm.rank
        counts = [N3 // size + (r < N3 % size) for r in range(size)]
        self.k0 = sum(counts[:rank])
        self.k1 = self.k0 + counts[rank]
        self.row_start = self.k0 * N1 * N2
        self.row_end = self.k1 * N1 * N2

    def _build_pattern(self) -> None:
        """CSR pattern of the 7-point operator on the owned rows (fixed for every sample)."""
        N1, N2, N3 = self.n_nodes_axis
        i, j, k = (a.ravel(order="F") for a in np.meshgrid(
            np.arange(N1), np.arange(N2), np.arange(self.k0, self.k1), indexing="ij"))
        # neighbour exists: (down, south, west, centre, east, north, up)
        self._mask = np.stack([k > 0, j > 0, i > 0, np.ones_like(i, dtype=bool),
                               i < N1 - 1, j < N2 - 1, k < N3 - 1], axis=1)
        rows = self.row_start + np.arange(len(i))
        cols = rows[:, None] + _stencil_offsets(N1, N2)[None, :]
        self._indices = cols[self._mask].astype(PETSc.IntType)
        self._indptr = np.concatenate([[0], np.cumsum(self._mask.sum(axis=1))]).astype(
            PETSc.IntType)

    def node_volumes(self) -> np.ndarray:
        """Control volume of every node (h1 h2 h3, halved per boundary it lies on).

        Returns
        -------
        ndarray, shape (n1+1, n2+1, n3+1)
            Dual-cell volumes in length^3; multiply a source density by them to get the nodal
            right-hand side of :meth:`solve_potential`.
        """
        factors = []
        for n, h in zip(self.n_cells, self.h, strict=True):
            f = np.full(n + 1, h)
            f[[0, -1]] = h / 2
            factors.append(f)
        return np.einsum("i,j,k->ijk", *factors)

    def node_coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Node coordinates along each axis, shapes (n1+1,), (n2+1,), (n3+1,)."""
        x1, x2, x3 = (np.linspace(0.0, L, n + 1)
                      for L, n in zip(self.domain, self.n_cells, strict=True))
        return x1, x2, x3

    def _edge_weights(self, m_pad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edge conductances (M_e)_ee / h_e^2 for the owned node planes (SPEC 2).

        ``m_pad`` has shape (n1+2, n2+2, k1-k0+1): the cells around the owned nodes, zero
        outside the domain, padded by one cell in x1, x2 and covering cell planes k0-1..k1-1.
        Returns the x1-, x2- and x3-edge conductances with shapes (n1, n2+1, k1-k0),
        (n1+1, n2, k1-k0) and (n1+1, n2+1, k1-k0+1); x3-edge t joins planes k0-1+t, k0+t.
        """
        # SPEC 2: (M_e)_ee = (cell volume / 4) * sum of m over the (up to 4) cells sharing e;
        # an x1-edge's cells differ in x2 and x3, hence the pair sums along those axes
        quarter_vol = math.prod(self.h) / 4
        w1 = _pair_sum(_pair_sum(m_pad[1:-1], 1), 2)
        w2 = _pair_sum(_pair_sum(m_pad[:, 1:-1], 0), 2)
        w3 = _pair_sum(_pair_sum(m_pad, 0), 1)
        h1, h2, h3 = self.h
        return (w1 * (quarter_vol / h1**2), w2 * (quarter_vol / h2**2),
                w3 * (quarter_vol / h3**2))

    def _operator_values(self, m_pad: np.ndarray) -> np.ndarray:
        """CSR values of A = G^T M_e G on the owned rows, in the order of ``_indices``."""
        w1, w2, w3 = self._edge_weights(m_pad)
        # (G^T M_e G)_ab = -(M_e)_ee / h_e^2 for the edge e = (a, b), and the row sums vanish;
        # conductance of the edge towards each neighbour, on the owned nodes (zero if absent)
        west = np.pad(w1, ((1, 0), (0, 0), (0, 0)))
        east = np.pad(w1, ((0, 1), (0, 0), (0, 0)))
        south = np.pad(w2, ((0, 0), (1, 0), (0, 0)))
        north = np.pad(w2, ((0, 0), (0, 1), (0, 0)))
        down, up = w3[:, :, :-1], w3[:, :, 1:]
        centre = west + east + south + north + down + up
        bands = [-down, -south, -west, centre, -east, -north, -up]
        vals = np.stack([b.ravel(order="F") for b in bands], axis=1)
        return vals[self._mask]

    @property
    def _cell_planes(self) -> tuple[int, int]:
        """Cell planes [c0, c1) in x3 touching the owned node planes."""
        return max(self.k0 - 1, 0), min(self.k1, self.n_cells[2])

    def _pad_cells(self, m_planes: np.ndarray) -> np.ndarray:
        """Embed m on the cell planes [c0, c1) in the zero-padded block of _edge_weights."""
        n1, n2, _ = self.n_cells
        c0, c1 = self._cell_planes
        out = np.zeros((n1 + 2, n2 + 2, self.k1 - self.k0 + 1))
        out[1:-1, 1:-1, c0 - self.k0 + 1:c1 - self.k0 + 1] = m_planes
        return out

    def _build_observation(self) -> None:
        """Sparse P (n_observables x n_nodes) with c = P u (SPEC 2), and its owned columns."""
        r = self.receiver_start + self.receiver_spacing * np.arange(self.n_receivers)
        # observable order: i (x1 index) fastest, then j, D1 block then D2 block
        x1 = np.tile(r, self.n_receivers)
        x2 = np.repeat(r, self.n_receivers)
        top = np.full_like(x1, self.domain[2])
        s = self.difference_step
        blocks = []
        for shift in ((s, 0.0), (0.0, s)):
            plus = np.column_stack([x1 + shift[0], x2 + shift[1], top])
            minus = np.column_stack([x1 - shift[0], x2 - shift[1], top])
            blocks.append(trilinear_matrix(plus, self.h, self.n_cells)
                          - trilinear_matrix(minus, self.h, self.n_cells))
        self.observation_matrix = sp.vstack(blocks).tocsr()
        self._observation_local = self.observation_matrix[:, self.row_start:self.row_end]
        self._receiver_coords = {
            "receiver_x1": np.concatenate([x1, x1]),
            "receiver_x2": np.concatenate([x2, x2]),
            "direction": np.repeat([1, 2], self.n_receivers ** 2),
        }

    def observable_coords(self) -> dict[str, np.ndarray]:
        """Receiver centre (x1, x2) and difference direction (1: D1, 2: D2) per observable."""
        return {key: v.copy() for key, v in self._receiver_coords.items()}

    def _build_ksp(self) -> None:
        """PETSc matrix with the fixed pattern, constant null space, CG and preconditioner."""
        n_local = self.row_end - self.row_start
        values = np.zeros(len(self._indices))
        self._A = PETSc.Mat().createAIJ(
            size=((n_local, self.n_nodes), (n_local, self.n_nodes)),
            csr=(self._indptr, self._indices, values), comm=self.comm)
        self._A.setOption(PETSc.Mat.Option.SYMMETRIC, True)
        self._A.setOption(PETSc.Mat.Option.NEW_NONZERO_LOCATION_ERR, True)
        self._nullspace = PETSc.NullSpace().create(constant=True, comm=self.comm)
        self._A.setNullSpace(self._nullspace)
        self._x, self._b = self._A.createVecs()

        ksp = PETSc.KSP().create(self.comm)
        ksp.setOperators(self._A)
        ksp.setType(PETSc.KSP.Type.CG)
        ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
        ksp.setTolerances(rtol=self.rtol, atol=0.0, max_it=self.max_iterations)
        ksp.setInitialGuessNonzero(False)
        choice = self.preconditioner
        if choice == "auto":
            small = self.n_nodes <= AUTO_ICC_MAX_NODES
            choice = "icc" if self.comm.size == 1 and small else "gamg"
        if choice == "icc" and self.comm.size > 1:
            raise SolverSettingsError(
                f"preconditioner 'icc' is sequential; use 'auto' or 'gamg' on {self.comm.size} "
                "ranks")
        pc = ksp.getPC()
        pc.setType(choice)
        if choice == "icc":
            pc.setFactorLevels(self.factor_levels)
        self._ksp = ksp
        #: the preconditioner actually used ("icc" or "gamg"), "auto" resolved
        self.pc_type = choice

    # ------------------------------------------------------------------ solving
    def conductivity(self, y: Any, planes: tuple[int, int] | None = None) -> np.ndarray:
        """Cell-centred conductivity m(x; y) of SPEC 2.

        Parameters
        ----------
        y : array_like, shape (3,)
            (depth y1, size y2, angle y3); validated like :meth:`solve`.
        planes : (int, int), optional
            Only the cell planes [c0, c1) in x3 (default: all).

        Returns
        -------
        ndarray, shape (n1, n2, c1 - c0)
            Conductivity (dimensionless, between 1 and e^10) at the cell centres.
        """
        y1, y2, y3 = self.check_parameters(y)
        # SPEC 2: m = exp(10 exp(-(2 r1^2 + r2^2 + (x3 - y1)^2) / y2^2)),
        # (r1, r2) = Q(y3) (x1 - 1, x2 - 1), Q(t) = [[cos t, -sin t], [sin t, cos t]];
        # 10 = contrast, 2 = anisotropy, (1, 1) = body_center.
        c0, c1 = planes if planes is not None else (0, self.n_cells[2])
        x1, x2, x3 = ((np.arange(n) + 0.5) * h for n, h in zip(self.n_cells, self.h, strict=True))
        a, b = x1[:, None] - self.body_center[0], x2[None, :] - self.body_center[1]
        r1 = math.cos(y3) * a - math.sin(y3) * b
        r2 = math.sin(y3) * a + math.cos(y3) * b
        plane = self.anisotropy * r1**2 + r2**2
        dz2 = (x3[c0:c1] - y1) ** 2
        return np.exp(self.contrast * np.exp(-(plane[:, :, None] + dz2[None, None, :]) / y2**2))

    def _checked_cells(self, m_cells: Any) -> np.ndarray:
        """m_cells as float64 (n1, n2, n3), finite and positive, or ValueError."""
        m = np.asarray(m_cells, dtype=np.float64)
        if m.shape != self.n_cells:
            raise ValueError(f"m_cells must have shape {self.n_cells}, got {m.shape}")
        if not np.all(np.isfinite(m)) or np.any(m <= 0):
            raise ValueError("m_cells must be finite and > 0 everywhere")
        return m

    def operator_matrix(self, m_cells: np.ndarray) -> sp.csr_matrix:
        """The rows of A(m) = G^T M_e(m) G owned by this rank (all rows on one rank).

        Parameters
        ----------
        m_cells : ndarray, shape (n1, n2, n3)
            Positive cell conductivities.

        Returns
        -------
        scipy.sparse.csr_matrix, shape (row_end - row_start, n_nodes)
            Global node columns in the x1-fastest order; entries in conductivity x length.
        """
        c0, c1 = self._cell_planes
        values = self._operator_values(self._pad_cells(self._checked_cells(m_cells)[:, :, c0:c1]))
        return sp.csr_matrix((values, self._indices, self._indptr),
                             shape=(self.row_end - self.row_start, self.n_nodes))

    def _solve(self, m_pad: np.ndarray, rhs_local: np.ndarray, sample: int | None) -> np.ndarray:
        """Assemble A(m), solve A u = rhs (zero-mean u), return the owned part of u."""
        with np.errstate(over="ignore", invalid="ignore"):
            values = self._operator_values(m_pad)
        if not np.all(np.isfinite(values)):
            raise SolveError("the operator A(m) has non-finite entries (conductivity "
                             f"overflow; max m = {np.max(m_pad):.3g}); not solving",
                             sample=sample)
        self._A.setValuesCSR(self._indptr, self._indices, values)
        self._A.assemble()
        self._b.getArray()[:] = rhs_local
        self._nullspace.remove(self._b)
        self._ksp.setOperators(self._A)
        self._ksp.solve(self._b, self._x)
        reason = self._ksp.getConvergedReason()
        self.last_iterations = self._ksp.getIterationNumber()
        if reason < 0:
            raise SolveError(
                f"KSP {self._ksp.getType()}+{self.pc_type} did not converge: "
                f"{_reason_name(reason)} after {self.last_iterations} iterations "
                f"(rtol = {self.rtol:g})", sample=sample)
        self._nullspace.remove(self._x)
        return self._x.getArray(readonly=True).copy()

    def _dipole_local(self) -> np.ndarray:
        """Owned part of the SPEC 2 right-hand side: +1 / -1 at the electrode nodes."""
        q = np.zeros(self.row_end - self.row_start)
        for node, sign in self._electrode_nodes:
            if self.row_start <= node < self.row_end:
                q[node - self.row_start] += sign
        return q

    def _observe_local(self, u_local: np.ndarray) -> np.ndarray:
        """c = P u from the owned parts of u; identical on every rank (reduce + broadcast)."""
        partial = self._observation_local @ u_local
        if self.comm.size == 1:
            return partial
        total = np.empty_like(partial)
        self.comm.Reduce(partial, total, op=MPI.SUM, root=0)
        self.comm.Bcast(total, root=0)
        return total

    def _gather(self, u_local: np.ndarray) -> np.ndarray:
        """Full nodal array (n1+1, n2+1, n3+1) on every rank from the owned slabs."""
        full = np.concatenate(self.comm.allgather(u_local)) if self.comm.size > 1 else u_local
        return full.reshape(self.n_nodes_axis, order="F")

    def solve(self, y: Any, *, sample: int | None = None) -> np.ndarray:
        """Observables c(y) = [D1; D2] of SPEC 2.

        Parameters
        ----------
        y : array_like, shape (3,)
            (depth, size, angle); see :meth:`check_parameters`.
        sample : int, optional
            Dataset index, only used in error messages.

        Returns
        -------
        ndarray, shape (n_observables,), float64
            Potential differences (volts per unit current), identical on every rank; D1 then
            D2, each 21 x 21 with the x1 receiver index fastest.

        Raises
        ------
        ValueError
            Bad y. :class:`~solvers.errors.SolveError`: the Krylov solver did not converge.
        """
        m_planes = self.conductivity(y, self._cell_planes)
        u_local = self._solve(self._pad_cells(m_planes), self._dipole_local(), sample)
        return self._observe_local(u_local)

    def solve_and_plot(self, y: Any, *, plot: str | None = None, fields: str | None = None
                       ) -> tuple[np.ndarray, None]:
        """``solve-pde``'s hook: the observables of y and, if ``plot`` is given, the figure
        (:func:`~solvers.dcr_plot.plot_solution`); no fields file (collective).

        Returns
        -------
        c : numpy.ndarray, shape (n_observables,)
        note : None
        """
        from solvers.dcr_plot import plot_solution

        c = self.solve(y)
        if plot:
            plot_solution(self, y, c, plot)
        return c, None

    def solve_potential(self, m_cells: np.ndarray, rhs: np.ndarray | None = None) -> np.ndarray:
        """Solve A(m) u = rhs for any cell conductivity and nodal right-hand side.

        Parameters
        ----------
        m_cells : ndarray, shape (n1, n2, n3)
            Positive cell conductivities (same on every rank).
        rhs : ndarray, shape (n1+1, n2+1, n3+1), optional
            Nodal right-hand side (already integrated over the control volumes, see
            :meth:`node_volumes`); its mean is removed (compatibility with the Neumann
            problem). Default: the SPEC 2 dipole.

        Returns
        -------
        ndarray, shape (n1+1, n2+1, n3+1)
            Zero-mean nodal potential, gathered on every rank.
        """
        m = self._checked_cells(m_cells)
        if rhs is None:
            q = self._dipole_local()
        else:
            q = np.asarray(rhs, dtype=np.float64)
            if q.shape != self.n_nodes_axis:
                raise ValueError(f"rhs must have shape {self.n_nodes_axis}, got {q.shape}")
            q = q.ravel(order="F")[self.row_start:self.row_end]
        c0, c1 = self._cell_planes
        return self._gather(self._solve(self._pad_cells(m[:, :, c0:c1]), q, sample=None))

    def potential(self, y: Any) -> np.ndarray:
        """Zero-mean nodal potential u(y), shape (n1+1, n2+1, n3+1), on every rank."""
        return self.solve_potential(self.conductivity(y))

    def observe(self, u: np.ndarray) -> np.ndarray:
        """Observables c = P u of a full nodal potential u, shape (n1+1, n2+1, n3+1)."""
        return self.observation_matrix @ np.asarray(u).ravel(order="F")


def _reason_name(reason: int) -> str:
    """Name of a KSP converged/diverged reason code, e.g. 'DIVERGED_ITS'."""
    names = {v: k for k, v in vars(PETSc.KSP.ConvergedReason).items()
             if isinstance(v, int) and not k.startswith("_")}
    return f"{names.get(reason, 'UNKNOWN')} ({reason})"


__all__ = ["DEFAULTS", "DCRSolver", "trilinear_matrix"]
