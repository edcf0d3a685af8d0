"""The generate engine with parameters chosen by the caller (refine-surrogate, issue 19)."""

from __future__ import annotations

import json

import dolfinx_solver  # noqa: F401
import numpy as np
import pytest
from mpi4py import MPI

from datasets import open_dataset
from datasets.errors import ConfigError, ConfigMismatchError
from datasets.generate import GenerationOptions, generate
from solvers import make_solver

SETTINGS = {"n_cells": [12, 12, 6]}


def params(n, seed):
    solver = make_solver("dcr", MPI.COMM_SELF, **SETTINGS)
    rng = np.random.default_rng(seed)
    return np.array([solver.sample_parameters(rng) for _ in range(n)]), solver


def test_given_parameters_are_solved_and_stored(tmp_path):
    y, solver = params(5, 0)
    out = tmp_path / "b.h5"
    summary = generate(GenerationOptions("dcr", out, 5, seed=4, settings=SETTINGS,
                                         progress=False, parameters=y), comm=MPI.COMM_SELF)
    assert summary.n_ok == 5
    ds = open_dataset(out)
    assert np.array_equal(ds["y"].values, y)
    np.testing.assert_allclose(ds["c"].values[3], solver.solve(y[3]), rtol=1e-9)
    config = json.loads(ds.attrs["config"])
    assert len(config["generation"]["parameters_sha256"]) == 64
    # the same call again: nothing left to solve; other parameters: refused
    assert generate(GenerationOptions("dcr", out, 5, seed=4, settings=SETTINGS,
                                      progress=False, parameters=y),
                    comm=MPI.COMM_SELF).n_solved == 0
    with pytest.raises(ConfigMismatchError, match="parameters_sha256"):
        generate(GenerationOptions("dcr", out, 5, seed=4, settings=SETTINGS, progress=False,
                                   parameters=y[::-1].copy()), comm=MPI.COMM_SELF)


@pytest.mark.parametrize("bad, text", [
    (np.ones((4, 3)), r"finite \(5, p\) array"),
    (np.full((5, 3), np.nan), r"finite \(5, p\) array"),
    (np.ones((5, 2)), "parameters have 2 columns")])
def test_bad_parameters_are_refused(tmp_path, bad, text):
    with pytest.raises(ConfigError, match=text):
        generate(GenerationOptions("dcr", tmp_path / "x.h5", 5, settings=SETTINGS,
                                   progress=False, parameters=bad), comm=MPI.COMM_SELF)
    assert not (tmp_path / "x.h5").exists()
