"""Tests of the CDR finite-element solver (SPEC 1): convergence, conservation, reaction
functions, robustness, parallel consistency and input validation."""

import dataclasses
import json
import math

import dolfinx_solver  # noqa: F401
import numpy as np
import pytest
import ufl
from dolfinx import fem
from mpi4py import MPI

from solvers.cdr import DEFAULTS, CDRSolver
from solvers.cdr_reaction import (
    ReactionTable,
    default_parameters,
    reaction_functions,
    reaction_levels,
    reaction_sum,
)
from solvers.cdr_settings import CDRSettings
from solvers.errors import SolveError, SolverSettingsError

D = 0.5
VELOCITY = (4.5, 0.8, 5.5)


def _phi(x):
    return ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1])  # satisfies the Neumann condition


def _manufactured_source(u_exact, du_dt):
    """f = du/dt - D lap u + v . grad u for u = u_exact(x, t) (reaction off)."""
    def source(x, t):
        a, b, c = VELOCITY
        vel = ufl.as_vector((a * (1 + b * ufl.sin(2 * ufl.pi * x[0])), c * (0.5 - x[1])))
        u = u_exact(x, t)
        return du_dt(x, t) - D * ufl.div(ufl.grad(u)) + ufl.dot(vel, ufl.grad(u))
    return source


def _l2_error(solver: CDRSolver, u_exact, t_end: float) -> float:
    x = ufl.SpatialCoordinate(solver.mesh)
    t = fem.Constant(solver.mesh, t_end)
    err = (solver.u - u_exact(x, t)) ** 2 * ufl.dx(metadata={"quadrature_degree": 6})
    local = fem.assemble_scalar(fem.form(err))
    return math.sqrt(solver.comm.allreduce(local, op=MPI.SUM))


def _manufactured_error(n_cells: int, dt: float, u_exact, du_dt) -> float:
    solver = CDRSolver(MPI.COMM_SELF, n_cells=n_cells, dt=dt, final_time=0.5,
                       output_times=[0.5], reaction_amplitude=0.0,
                       source=_manufactured_source(u_exact, du_dt))
    solver.run(default_parameters())
    return _l2_error(solver, u_exact, 0.5)


def test_space_convergence_is_second_order():
    # u linear in t: backward Euler is exact in time, only the spatial error remains.
    def u_exact(x, t):
        return t * _phi(x)

    def du_dt(x, t):
        return _phi(x)

    errors = [_manufactured_error(n, 0.05, u_exact, du_dt) for n in (8, 16, 32)]
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.85), (errors, rates)
    assert np.all(rates < 2.3), (errors, rates)


def test_time_convergence_is_first_order():
    def u_exact(x, t):
        return ufl.sin(ufl.pi * t) * _phi(x)

    def du_dt(x, t):
        return ufl.pi * ufl.cos(ufl.pi * t) * _phi(x)

    errors = [_manufactured_error(64, dt, u_exact, du_dt) for dt in (0.1, 0.05, 0.025)]
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 0.85), (errors, rates)
    assert np.all(rates < 1.25), (errors, rates)


def test_mass_conservation_without_advection_and_reaction():
    """v = 0, no reaction: int u(T) dx equals dt sum_n int f(t_n) dx (Neumann, consistent mass,
    source at the new time level)."""
    dt, n_cells = 0.01, 24
    solver = CDRSolver(MPI.COMM_SELF, n_cells=n_cells, dt=dt, velocity=(0.0, 0.0, 0.0),
                       reaction_amplitude=0.0, output_times=[0.5])
    solver.run(default_parameters())
    mass = fem.assemble_scalar(fem.form(solver.u * ufl.dx(metadata={"quadrature_degree": 2})))
    # int f(t) dx with the solver's own quadrature: sum of the source load vectors
    totals = [vec.sum() for vec in solver._source_vectors]
    expected = dt * sum(np.dot(solver._source_amplitudes(dt * n), totals)
                        for n in range(1, solver.n_steps + 1))
    assert mass == pytest.approx(expected, rel=1e-9)
    # the source at the old time level would give a different total
    shifted = dt * sum(np.dot(solver._source_amplitudes(dt * n), totals)
                       for n in range(0, solver.n_steps))
    assert abs(shifted - expected) > 1e-4 * expected


def test_reaction_functions_reference_values():
    u_i = 5.0 + 6.0 * np.arange(11)
    r = reaction_functions(u_i)
    for k, (i, j, _, _) in enumerate(reaction_levels()):
        assert r[k, i - 1] == pytest.approx(1e-3, rel=1e-12)
        assert r[k, j - 1] == pytest.approx(0.999, rel=1e-12)
    assert len(reaction_levels()) == 55
    assert [lv[:2] for lv in reaction_levels()[:3]] == [(1, 2), (1, 3), (1, 4)]
    assert reaction_levels()[-1][:2] == (10, 11)
    extreme = reaction_functions(np.array([-1e5, -800.0, 800.0, 1e5]))
    assert np.all(np.isfinite(extreme))
    assert np.allclose(extreme[:, :2], 0.0) and np.allclose(extreme[:, 2:], 1.0)


def test_reaction_table_matches_direct_evaluation():
    y = default_parameters()
    table = ReactionTable(y, 5e-3, (-50.0, 600.0))
    u = np.random.default_rng(3).uniform(-60.0, 620.0, 20000)  # includes points outside
    s, ds = table(u)
    s_ref, ds_ref = reaction_sum(u, y)
    assert np.max(np.abs(s - s_ref)) < 1e-11 * np.max(np.abs(s_ref))
    assert np.max(np.abs(ds - ds_ref)) < 1e-8 * np.max(np.abs(ds_ref))
    # the derivative is that of the interpolant (consistent Newton Jacobian)
    h = 1e-6
    fd = (table(u + h)[0] - table(u - h)[0]) / (2 * h)
    assert np.max(np.abs(fd - ds)) < 1e-6


def test_tabulated_and_direct_reaction_give_same_observables():
    y = default_parameters()
    c_tab = CDRSolver(MPI.COMM_SELF, n_cells=24).solve(y)
    c_dir = CDRSolver(MPI.COMM_SELF, n_cells=24, reaction_table_step=0).solve(y)
    assert np.max(np.abs(c_tab - c_dir)) < 1e-9 * np.max(np.abs(c_dir))


def test_linear_solvers_agree():
    y = default_parameters()
    c_gmres = CDRSolver(MPI.COMM_SELF, n_cells=30).solve(y)
    c_lu = CDRSolver(MPI.COMM_SELF, n_cells=30, linear_solver="lu").solve(y)
    assert np.max(np.abs(c_gmres - c_lu)) < 1e-9 * np.max(np.abs(c_lu))


def test_observables_layout_and_magnitude():
    solver = CDRSolver(MPI.COMM_SELF, n_cells=50)
    result = solver.run(default_parameters(), keep_fields=True)
    c = result.observables
    assert c.shape == (72,)
    assert np.all(np.isfinite(c))
    assert 8.0 < c.min() and c.max() < 70.0  # SPEC 1: roughly 13 to 40 at the default mesh
    # time-major, point index fastest: c[6 k + p] = u(x_p, t_(39+k)); points are mesh nodes
    coords = solver.function_space.tabulate_dof_coordinates()[:, :2]
    for k in (0, 11):
        for p, xp in enumerate(solver.points):
            node = np.argmin(np.linalg.norm(coords - xp, axis=1))
            assert c[6 * k + p] == pytest.approx(result.fields[k][node], rel=1e-12)
    assert np.all(np.diff(c.reshape(12, 6), axis=0) > 0)  # u grows over [0.39, 0.5] here
    coords_ = solver.observable_coords()
    assert coords_["time"][6] == pytest.approx(0.40) and coords_["point"][7] == 1


def test_corner_of_simplex_is_solved_by_substepping():
    y = np.zeros(55)
    y[0] = 1.0
    solver = CDRSolver(MPI.COMM_SELF, n_cells=20)
    result = solver.run(y)
    assert result.substeps > solver.n_steps  # at least one step was halved
    assert np.all(np.isfinite(result.observables))
    # without halving allowed the same sample fails with a clear error
    strict = CDRSolver(MPI.COMM_SELF, n_cells=20, max_halvings=0)
    with pytest.raises(SolveError, match=r"sample 7, t = .*Newton"):
        strict.run(y, sample=7)


def test_settings_round_trip():
    solver = CDRSolver(MPI.COMM_SELF, n_cells=10, dt=0.005)
    again = CDRSolver(MPI.COMM_SELF, **solver.settings())
    assert again.settings() == solver.settings()
    y = default_parameters()
    assert np.array_equal(solver.solve(y), again.solve(y))


def test_sample_parameters_on_simplex():
    solver = CDRSolver(MPI.COMM_SELF, n_cells=4, dt=0.25, final_time=0.5,
                       output_times=[0.5])
    y = solver.sample_parameters(np.random.default_rng(5))
    assert y.shape == (55,) and np.all(y >= 0) and y.sum() == pytest.approx(1.0)
    assert np.array_equal(y, solver.sample_parameters(np.random.default_rng(5)))


@pytest.fixture(scope="module")
def small_solver():
    return CDRSolver(MPI.COMM_SELF, n_cells=4, dt=0.25, final_time=0.5, output_times=[0.5])


@pytest.mark.parametrize("y, match", [
    (np.ones(54), r"shape \(55,\)"),
    (np.r_[np.nan, np.ones(54)], r"y\[0\] = nan is not finite"),
    (np.r_[np.ones(54), np.inf], r"y\[54\] = inf is not finite"),
    (np.r_[np.ones(10), -0.5, np.ones(44)], r"y\[10\] = -0.5 is negative"),
    (np.zeros(55), "all zero"),
    ("abc", "numeric"),
])
def test_bad_parameters_are_rejected(small_solver, y, match):
    with pytest.raises(ValueError, match=match):
        small_solver.solve(y)


@pytest.mark.parametrize("settings, match", [
    ({"dt": 0.0}, "dt must be finite and > 0"),
    ({"dt": -0.01}, "dt must be finite and > 0"),
    ({"n_cells": 0}, "n_cells must be an integer >= 1"),
    ({"n_cells": 2.5}, "n_cells must be an integer >= 1"),
    ({"dt": 0.03}, "final_time / dt must be an integer"),
    ({"output_times": [0.395]}, "output time 0.395 is not a multiple"),
    ({"points": [[0.5, 1.5]]}, r"points must lie in \[0, 1\]\^2"),
    ({"mesh_size": 3}, "unknown CDR setting"),
    ({"linear_solver": "cg"}, "linear_solver must be"),
])
@pytest.mark.parametrize("build", [CDRSettings.from_dict,
                                   lambda s: CDRSolver(MPI.COMM_SELF, **s)],
                         ids=["settings", "solver"])
def test_bad_settings_are_rejected(settings, match, build):
    with pytest.raises(SolverSettingsError, match=match):
        build(settings)


def test_settings_dataclass_defaults_and_normalisation():
    """CDRSettings holds the SPEC 1 defaults (DEFAULTS is derived from it), normalises
    values to plain types, is frozen and round-trips through JSON."""
    spec = CDRSettings()
    assert list(DEFAULTS) == [f.name for f in dataclasses.fields(CDRSettings)]
    assert {k: getattr(spec, k) for k in ("n_cells", "dt", "final_time", "n_levels")} == \
        {"n_cells": 150, "dt": 0.01, "final_time": 0.5, "n_levels": 11}
    assert (spec.n_steps, spec.n_parameters, spec.n_observables) == (50, 55, 72)
    assert spec.parameter_names[:2] == ("r_1_2", "r_1_3") and len(spec.levels) == 55
    assert spec.output_steps.tolist() == list(range(39, 51))
    s = CDRSettings(n_cells=12.0, velocity=[1, 2, 3], points=[[0.5, 0.25]], predictor=1,
                    output_times=[0.5], reaction_table_range=[-1, 5])
    assert type(s.n_cells) is int and s.velocity == (1.0, 2.0, 3.0)
    assert s.points == ((0.5, 0.25),) and s.output_times == (0.5,)
    assert s.predictor is True and s.reaction_table_range == (-1.0, 5.0)
    assert CDRSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_cells = 3  # type: ignore[misc]
    with pytest.raises(SolverSettingsError, match="needs about .* of memory"):
        CDRSettings(n_cells=10**6).check_memory()


def test_solver_takes_a_settings_object():
    config = CDRSettings(n_cells=4, dt=0.25, output_times=[0.5])
    solver = CDRSolver(MPI.COMM_SELF, config=config)
    assert solver.config is config
    assert solver.settings() == config.to_dict() == \
        CDRSolver(MPI.COMM_SELF, n_cells=4, dt=0.25, output_times=[0.5]).settings()
    assert solver.points.shape == (6, 2) and solver.output_times.tolist() == [0.5]
    with pytest.raises(SolverSettingsError, match="either config or setting keywords"):
        CDRSolver(MPI.COMM_SELF, config=config, n_cells=5)
    with pytest.raises(SolverSettingsError, match="config must be a CDRSettings"):
        CDRSolver(MPI.COMM_SELF, config={"n_cells": 4})


@pytest.mark.mpi
def test_two_ranks_match_one_rank():
    """A distributed mesh on 2 ranks gives the 1-rank observables to 1e-10."""
    y = default_parameters()
    c_dist = CDRSolver(MPI.COMM_WORLD, n_cells=40).solve(y)
    c_self = CDRSolver(MPI.COMM_SELF, n_cells=40).solve(y)
    err = np.max(np.abs(c_dist - c_self)) / np.max(np.abs(c_self))
    errs = MPI.COMM_WORLD.allgather(err)
    assert max(errs) < 1e-10, errs
    # every rank returns the same observables
    gathered = MPI.COMM_WORLD.allgather(c_dist)
    assert np.array_equal(gathered[0], gathered[1])
