"""Unit tests: per-sample parameter streams, splits and --set parsing."""

from __future__ import annotations

from pathlib import Path

import dolfinx_solver  # noqa: F401  (before mpi4py)
import numpy as np
import pytest
from mpi4py import MPI

from datasets import open_dataset
from datasets.config import differences, parse_assignment
from datasets.errors import ConfigError
from datasets.sampling import draw_parameters
from datasets.splits import SplitSpec, make_splits, split_sizes
from solvers import make_solver


@pytest.fixture(scope="module")
def dcr():
    return make_solver("dcr", MPI.COMM_SELF, n_cells=(12, 12, 6))


def test_parameters_depend_only_on_seed_and_index(dcr) -> None:
    first = draw_parameters(dcr, 7, 5)
    for i in range(20):
        draw_parameters(dcr, 7, i)
    np.testing.assert_array_equal(draw_parameters(dcr, 7, 5), first)
    assert not np.array_equal(draw_parameters(dcr, 7, 6), first)
    assert not np.array_equal(draw_parameters(dcr, 8, 5), first)


def test_file_parameters_are_the_per_sample_draws(reference: Path) -> None:
    ds = open_dataset(reference)
    cdr = make_solver("cdr", MPI.COMM_SELF, n_cells=4)
    for i in (0, 7, ds.sizes["sample"] - 1):
        np.testing.assert_array_equal(ds["y"][i], draw_parameters(cdr, 3, i))


@pytest.mark.parametrize("problem, n, expected", [
    ("cdr", 800, (400, 200, 200)), ("dcr", 10000, (8000, 1000, 1000)),
    ("cdr", 7, (4, 2, 1)),
])
def test_default_split_sizes(problem: str, n: int, expected: tuple[int, int, int]) -> None:
    assert split_sizes(SplitSpec.default(problem), n) == expected
    splits = make_splits(np.ones(n, dtype=bool), SplitSpec.default(problem), seed=0)
    assert tuple(v.size for v in splits.values()) == expected
    joined = np.concatenate(list(splits.values()))
    assert np.unique(joined).size == n  # disjoint and covering


def test_splits_exclude_failed_samples() -> None:
    ok = np.ones(100, dtype=bool)
    ok[[3, 17, 42, 99]] = False
    spec = SplitSpec.parse("60,20,20")
    splits = make_splits(ok, spec, seed=11)
    joined = np.concatenate(list(splits.values()))
    assert np.unique(joined).size == joined.size == 96
    assert not set(joined) & {3, 17, 42, 99}
    assert [v.size for v in splits.values()] == [58, 19, 19]  # scaled down in proportion
    again = make_splits(ok, spec, seed=11)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    other = make_splits(ok, spec, seed=12)
    assert not np.array_equal(splits["test"], other["test"])


def test_split_spec_parsing() -> None:
    assert SplitSpec.parse("400,200,200") == SplitSpec((400, 200, 200), False)
    assert SplitSpec.parse("0.8,0.1,0.1").fractions
    for bad in ("1,2", "a,b,c", "0.9,0.2,0.1", "-1,2,3"):
        with pytest.raises(ConfigError):
            SplitSpec.parse(bad)
    with pytest.raises(ConfigError, match="more than the 10 samples"):
        SplitSpec.parse("5,5,5").check(10)


def test_set_values_are_toml() -> None:
    assert parse_assignment("n_cells=12") == ("n_cells", 12)
    assert parse_assignment("n_cells=[12,12,6]") == ("n_cells", [12, 12, 6])
    assert parse_assignment("dt = 0.005") == ("dt", 0.005)
    assert parse_assignment('linear_solver="lu"') == ("linear_solver", "lu")
    assert parse_assignment("linear_solver=lu") == ("linear_solver", "lu")
    for bad in ("n_cells", "=3", "n_cells=1 2"):
        with pytest.raises(ConfigError):
            parse_assignment(bad)


def test_differences_name_the_keys() -> None:
    stored = {"solver": {"n_cells": 12, "dt": 0.01}, "generation": {"seed": 1}}
    requested = {"solver": {"n_cells": 13, "dt": 0.01}, "generation": {"seed": 1, "x": 2}}
    assert differences(stored, requested) == [
        "generation.x: not in the file, requested 2",
        "solver.n_cells: file has 12, requested 13",
    ]
    assert differences(stored, stored) == []
