"""Tests of the DC-resistivity solver (SPEC section 2): operator, convergence, symmetries,
MPI consistency, input checks."""

import dataclasses
import json
import math

import dolfinx_solver  # noqa: F401  (before mpi4py/petsc4py)
import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from scipy.interpolate import RegularGridInterpolator

from solvers.dcr import DEFAULTS, DCRSolver
from solvers.dcr_plot import plot_solution
from solvers.dcr_settings import DCRSettings
from solvers.errors import SolveError, SolverSettingsError

COARSE = (24, 24, 12)
Y = np.array([0.45, 0.25, 0.6])


@pytest.fixture(scope="module")
def coarse():
    return DCRSolver(n_cells=COARSE)


def reference_operator(solver, m):
    """A = G^T M_e G built literally from SPEC 2 with Kronecker products (x1 fastest)."""
    (n1, n2, n3), h = solver.n_cells, solver.h

    def diff(n, hh):  # (n, n+1): edge differences / edge length
        return sp.diags([-np.ones(n), np.ones(n)], [0, 1], shape=(n, n + 1)) / hh

    def eye(n):
        return sp.identity(n)

    def nodes_to_cells(n):  # (n+1, n): a node line touches cells i-1 and i
        return sp.diags([np.ones(n), np.ones(n)], [0, -1], shape=(n + 1, n))

    G = sp.vstack([
        sp.kron(eye(n3 + 1), sp.kron(eye(n2 + 1), diff(n1, h[0]))),
        sp.kron(eye(n3 + 1), sp.kron(diff(n2, h[1]), eye(n1 + 1))),
        sp.kron(diff(n3, h[2]), sp.kron(eye(n2 + 1), eye(n1 + 1))),
    ])
    # edge-cell incidence: an x1-edge touches the (up to) 4 cells around it, and so on
    E = sp.vstack([
        sp.kron(nodes_to_cells(n3), sp.kron(nodes_to_cells(n2), eye(n1))),
        sp.kron(nodes_to_cells(n3), sp.kron(eye(n2), nodes_to_cells(n1))),
        sp.kron(eye(n3), sp.kron(nodes_to_cells(n2), nodes_to_cells(n1))),
    ]) * (math.prod(h) / 4)
    return (G.T @ sp.diags(E @ m.ravel(order="F")) @ G).tocsr()


def test_operator_is_gradient_edge_mass_gradient():
    solver = DCRSolver(n_cells=(6, 12, 4), domain=(2.0, 2.0, 1.0))
    m = np.random.default_rng(1).uniform(0.5, 3.0, solver.n_cells)
    A = solver.operator_matrix(m)
    ref = reference_operator(solver, m)
    assert abs(A - ref).max() <= 1e-13 * abs(ref).max()
    assert abs(A - A.T).max() == 0.0
    assert np.allclose(A @ np.ones(solver.n_nodes), 0.0, atol=1e-13)


def test_conductivity_formula(coarse):
    y1, y2, y3 = 0.35, 0.22, 0.8
    m = coarse.conductivity([y1, y2, y3])
    assert m.shape == COARSE
    x1, x2, x3 = np.meshgrid(*[(np.arange(n) + 0.5) * h
                               for n, h in zip(COARSE, coarse.h, strict=True)], indexing="ij")
    Q = np.array([[np.cos(y3), -np.sin(y3)], [np.sin(y3), np.cos(y3)]])
    r1, r2 = np.einsum("ab,bijk->aijk", Q, np.stack([x1 - 1, x2 - 1]))
    expected = np.exp(10 * np.exp(-(2 * r1**2 + r2**2 + (x3 - y1) ** 2) / y2**2))
    np.testing.assert_allclose(m, expected, rtol=1e-12)
    assert 1.0 <= m.min() and m.max() <= np.exp(10)


def test_manufactured_solution_second_order():
    errors = []
    for n in (12, 24, 48):
        solver = DCRSolver(n_cells=(n, n, n // 2))
        x1, x2, x3 = np.meshgrid(*solver.node_coords(), indexing="ij")
        u = np.cos(np.pi * x1 / 2) * np.cos(np.pi * x2 / 2) * np.cos(np.pi * x3)
        rhs = 1.5 * np.pi**2 * u * solver.node_volumes()   # -lap u = (1/4 + 1/4 + 1) pi^2 u
        uh = solver.solve_potential(np.ones(solver.n_cells), rhs)
        assert abs(uh.mean()) < 1e-12
        errors.append(np.abs(uh - (u - u.mean())).max())
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 2e-3
    assert np.all(rates > 1.8), rates


def test_homogeneous_dipole_observables_converge_second_order():
    # receivers and difference points on nodes of every level (no interpolation error),
    # keeping those farther than 0.5 from both electrodes
    grid = dict(receiver_start=1 / 3, receiver_spacing=1 / 6, n_receivers=9,
                difference_step=1 / 6)
    cs = []
    for n in (12, 24, 48):
        solver = DCRSolver(n_cells=(n, n, n // 2), **grid)
        cs.append(solver.observe(solver.solve_potential(np.ones(solver.n_cells))))
    coords = solver.observable_coords()
    x1, x2 = coords["receiver_x1"], coords["receiver_x2"]
    far = np.minimum(np.hypot(x1 - 1, x2 - 11 / 6), np.hypot(x1 - 1, x2 - 1 / 6)) > 0.5
    assert far.sum() > 100
    rate = np.log2(np.linalg.norm(cs[0][far] - cs[1][far]) /
                   np.linalg.norm(cs[1][far] - cs[2][far]))
    assert 1.7 < rate < 2.6, rate


def test_spec_receivers_converge_under_refinement():
    # SPEC receivers (not on nodes: trilinear interpolation adds an O(h^2) term whose constant
    # depends on where a point falls in its cell), farther than 0.5 from both electrodes
    cs = []
    for n in (24, 48, 96):
        solver = DCRSolver(n_cells=(n, n, n // 2), preconditioner="gamg")
        cs.append(solver.observe(solver.solve_potential(np.ones(solver.n_cells))))
    coords = solver.observable_coords()
    x1, x2 = coords["receiver_x1"], coords["receiver_x2"]
    far = np.minimum(np.hypot(x1 - 1, x2 - 11 / 6), np.hypot(x1 - 1, x2 - 1 / 6)) > 0.5
    diffs = [np.linalg.norm(cs[i][far] - cs[i + 1][far]) for i in range(2)]
    assert diffs[1] < 5e-3 * np.linalg.norm(cs[2][far])
    assert 1.6 < np.log2(diffs[0] / diffs[1]) < 2.6


def test_observables_are_interpolated_surface_differences(coarse):
    u = coarse.potential(Y)
    c = coarse.solve(Y)
    assert c.shape == (882,) and c.dtype == np.float64
    interp = RegularGridInterpolator(coarse.node_coords(), u)   # trilinear
    coords = coarse.observable_coords()
    x1, x2, d = coords["receiver_x1"], coords["receiver_x2"], coords["direction"]
    assert [len(v) for v in coords.values()] == [882, 882, 882]
    r = 0.1 + 0.09 * np.arange(21)
    assert np.array_equal(x1[:21], r) and np.all(x2[:21] == r[0])   # x1 index fastest
    assert np.array_equal(d, np.repeat([1, 2], 441))
    s = 0.045
    step = np.column_stack([(d == 1) * s, (d == 2) * s, np.zeros(882)])
    centre = np.column_stack([x1, x2, np.ones(882)])
    expected = interp(centre + step) - interp(centre - step)
    np.testing.assert_allclose(c, expected, rtol=0, atol=1e-10 * np.abs(c).max())


def test_point_reflection_flips_potential(coarse):
    for angle in (0.3, 2.0):
        y = np.array([0.5, 0.25, angle])
        m = coarse.conductivity(y)
        np.testing.assert_allclose(m[::-1, ::-1, :], m, rtol=1e-13)
        u = coarse.potential(y)
        assert u[12, 22, 12] > 0 > u[12, 2, 12]   # +1 electrode at (1, 11/6, 1)
        np.testing.assert_allclose(u[::-1, ::-1, :], -u, rtol=0, atol=1e-9 * np.abs(u).max())


def test_angle_is_pi_periodic():
    solver = DCRSolver(n_cells=COARSE, allow_extrapolation=True)
    y = np.array([0.4, 0.28, 0.9])
    c = solver.solve(y)
    c_pi = solver.solve(y + [0, 0, np.pi])
    c_half = solver.solve(y + [0, 0, np.pi / 2])
    assert np.linalg.norm(c_pi - c) <= 1e-9 * np.linalg.norm(c)
    assert np.linalg.norm(c_half - c) > 1e-4 * np.linalg.norm(c)   # the angle does matter


def test_reciprocity(coarse):
    y = np.array([0.6, 0.3, 1.2])
    m = coarse.conductivity(y)
    c = coarse.solve(y)
    u_plus, u_minus = (1.0, 11 / 6, 1.0), (1.0, 1 / 6, 1.0)
    idx = [tuple(round(x / h) for x, h in zip(p, coarse.h, strict=True))
           for p in (u_plus, u_minus)]
    for k in (0, 250, 441 + 100, 881):
        # source: the receiver pair of observable k (its trilinear weights), measured at the
        # electrodes; symmetry of A makes it equal to c[k]
        rhs = coarse.observation_matrix[k].toarray().reshape(coarse.n_nodes_axis, order="F")
        v = coarse.solve_potential(m, rhs)
        assert v[idx[0]] - v[idx[1]] == pytest.approx(c[k], rel=1e-8, abs=1e-10 * abs(c).max())


def test_default_mesh_sample():
    solver = DCRSolver()
    assert solver.n_nodes == 49 * 49 * 25
    y = solver.sample_parameters(np.random.default_rng(3))
    c = solver.solve(y)
    c_home = solver.observe(solver.solve_potential(np.ones(solver.n_cells)))
    assert np.all(np.isfinite(c)) and 5 < np.linalg.norm(c) < 50
    # SPEC 2: the y-dependent part is a small fraction of ||c||
    assert 1e-3 < np.linalg.norm(c - c_home) / np.linalg.norm(c) < 0.1
    assert solver.last_iterations < 200


def test_settings_round_trip_and_sampling(coarse):
    settings = json.loads(json.dumps(coarse.settings()))
    again = DCRSolver(MPI.COMM_SELF, **settings)
    assert again.settings() == coarse.settings()
    np.testing.assert_array_equal(again.solve(Y), coarse.solve(Y))
    rng, twin = np.random.default_rng(7), np.random.default_rng(7)
    y = coarse.sample_parameters(rng)
    u = twin.random(3)
    bounds = coarse.parameter_bounds
    assert bounds.shape == (3, 2)
    np.testing.assert_array_equal(y, bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * u)
    assert rng.random() == twin.random()   # exactly three draws were used


@pytest.mark.parametrize(("y", "match"), [
    ([0.5, 0.2], r"shape \(3,\)"),
    ([0.5, np.nan, 1.0], r"y\[1\] = nan is not finite"),
    ([0.8, 0.2, 1.0], r"y\[0\] \(depth\) = 0.8 is outside the range \[0.3, 0.7\]"),
    ([0.5, 0.2, -0.1], r"y\[2\] \(angle\) = -0.1 is outside"),
])
def test_bad_parameters(coarse, y, match):
    with pytest.raises(ValueError, match=match):
        coarse.solve(y)


def test_extrapolation_flag():
    solver = DCRSolver(n_cells=COARSE, allow_extrapolation=True)
    assert np.all(np.isfinite(solver.solve([0.8, 0.35, -0.5])))
    with pytest.raises(ValueError, match=r"y\[1\] \(size\) = 0.0 must be > 0"):
        solver.solve([0.5, 0.0, 1.0])


@pytest.mark.parametrize(("settings", "match"), [
    (dict(n_cells=(48, 50, 24)), r"source_plus = .* is not on a mesh node .*x2 / h2 = 45.8333"),
    (dict(n_cells=(47, 48, 24)), r"not on a mesh node .*x1 / h1 = 23.5"),
    (dict(n_cells=(48, 48, 0)), r"n_cells\[2\] must be an integer >= 1, got 0"),
    (dict(domain=(2.0, -2.0, 1.0)), r"domain\[1\] must be finite and > 0"),
    (dict(source_minus=(1.0, 1 / 6, 1.5)), r"source_minus = .* outside the domain"),
    (dict(source_minus=(1.0, 11 / 6, 1.0)), r"same node"),
    (dict(n_receivers=30), r"receiver points .* outside the domain"),
    (dict(size_range=(0.0, 0.3)), r"size_range must be > 0"),
    (dict(depth_range=(0.7, 0.3)), r"depth_range must be finite with low < high"),
    (dict(preconditioner="lu"), r"preconditioner must be one of"),
    (dict(mesh=3), r"unknown DCR setting\(s\) \['mesh'\]"),
])
@pytest.mark.parametrize("build", [DCRSettings.from_dict, lambda s: DCRSolver(**s)],
                         ids=["settings", "solver"])
def test_bad_settings(settings, match, build):
    with pytest.raises(SolverSettingsError, match=match):
        build(settings)


def test_settings_dataclass_defaults_and_geometry():
    """DCRSettings holds the SPEC 2 defaults (DEFAULTS is derived from it), normalises values,
    derives the mesh sizes and electrode nodes, is frozen and round-trips through JSON."""
    spec = DCRSettings()
    assert list(DEFAULTS) == [f.name for f in dataclasses.fields(DCRSettings)]
    assert spec.n_cells == (48, 48, 24) and spec.h == (2 / 48, 2 / 48, 1 / 24)
    assert spec.n_nodes_axis == (49, 49, 25) and spec.n_nodes == 49 * 49 * 25
    assert spec.n_observables == 882
    # +1 at node (24, 44, 24), -1 at node (24, 4, 24), x1 fastest
    assert spec.electrode_nodes == ((24 + 49 * (44 + 49 * 24), 1.0),
                                    (24 + 49 * (4 + 49 * 24), -1.0))
    s = DCRSettings(n_cells=[24, 24.0, 12], depth_range=[0.2, 0.8], allow_extrapolation=1)
    assert s.n_cells == (24, 24, 12) and all(type(n) is int for n in s.n_cells)
    assert s.depth_range == (0.2, 0.8) and s.allow_extrapolation is True
    assert DCRSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.rtol = 1e-3  # type: ignore[misc]
    with pytest.raises(SolverSettingsError, match="unknown DCR setting"):
        DCRSettings.from_dict({"mesh": 3})
    with pytest.raises(SolverSettingsError, match="needs about .* of memory"):
        DCRSettings(n_cells=(1000, 1000, 1000), source_plus=(1.0, 1.5, 1.0),
                    source_minus=(1.0, 0.5, 1.0)).check_memory()


def test_solver_takes_a_settings_object(coarse):
    config = DCRSettings(n_cells=COARSE)
    solver = DCRSolver(MPI.COMM_SELF, config=config)
    assert solver.config is config and solver.settings() == coarse.settings()
    np.testing.assert_array_equal(solver.solve(Y), coarse.solve(Y))
    with pytest.raises(SolverSettingsError, match="either config or setting keywords"):
        DCRSolver(config=config, rtol=1e-8)


def test_unconverged_solve_raises():
    solver = DCRSolver(n_cells=COARSE, max_iterations=3)
    message = r"sample 5: KSP cg\+icc did not converge: DIVERGED_MAX_IT"
    with pytest.raises(SolveError, match=message):
        solver.solve(Y, sample=5)


def test_plot_solution(tmp_path, coarse):
    path = tmp_path / "dcr.png"
    plot_solution(coarse, Y, coarse.solve(Y), path)
    assert path.stat().st_size > 10_000


@pytest.mark.mpi
def test_two_ranks_match_one_rank(comm_world):
    assert comm_world.size == 2
    for cells in (COARSE, (48, 48, 24)):
        dist = DCRSolver(comm_world, n_cells=cells)
        local = DCRSolver(MPI.COMM_SELF, n_cells=cells)
        assert dist.row_end - dist.row_start < dist.n_nodes   # the unknowns are distributed
        for y in (Y, np.array([0.3, 0.1, 3.0])):
            c_dist, c_local = dist.solve(y), local.solve(y)
            assert np.linalg.norm(c_dist - c_local) <= 1e-8 * np.linalg.norm(c_local)
            same = comm_world.allgather(c_dist)
            np.testing.assert_array_equal(same[0], same[1])
    u_dist, u_local = dist.potential(Y), local.potential(Y)
    np.testing.assert_allclose(u_dist, u_local, rtol=0, atol=1e-8 * np.abs(u_local).max())
    with pytest.raises(SolverSettingsError, match="'icc' is sequential"):
        DCRSolver(comm_world, n_cells=COARSE, preconditioner="icc")
