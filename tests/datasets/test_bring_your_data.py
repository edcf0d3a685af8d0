"""Bringing data only: plain HDF5 / .npz files with y, c and an optional split; the problem
and its training facts come from the registry's declared sizes, else none."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets import load_split_data, open_dataset
from datasets.errors import DatasetFileError


def test_a_plain_hdf5_file_with_y_c_and_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y, c = rng.random((10, 3)), rng.random((10, 882))
    split = np.array([b"train"] * 6 + [b"validation"] * 2 + [b"test"] * 2)
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        f["y"], f["c"], f["split"] = y, c, split
    ds = open_dataset(tmp_path / "mine.h5")
    np.testing.assert_array_equal(ds["y"].values, y)
    np.testing.assert_array_equal(ds["c"].values, c)
    assert ds.attrs["problem"] == "dcr"  # the sizes DCR declares (3 -> 882)
    data = load_split_data(tmp_path / "mine.h5")
    assert data.split_source == "stored" and data.y["train"].shape == (6, 3)
    assert data.facts["periodic_parameters"] == {"2": math.pi}  # DCR's, from the registry
    assert data.facts["training_hints"]["center_targets"] is True


def test_unknown_sizes_have_no_facts_and_the_fallback_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        f["y"], f["c"] = rng.random((40, 4)), rng.random((40, 7))
    data = load_split_data(tmp_path / "mine.h5")
    assert data.problem == "unknown" and data.facts == {}
    assert data.split_source == "seeded" and data.provenance["split_fractions"] == [0.5, 0.25,
                                                                                     0.25]
    assert data.y["train"].shape == (20, 4)


def test_cdr_sizes_get_the_cdr_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "cdr_like.npz", y=rng.random((20, 55)), c=rng.random((20, 72)))
    data = load_split_data(tmp_path / "cdr_like.npz")
    assert data.problem == "cdr" and data.provenance["split_fractions"] == [0.5, 0.25, 0.25]
    assert data.facts["training_hints"]["standardize_inputs"] is False


@pytest.mark.parametrize("content, message", [
    ({"y": np.ones((3, 2))}, r"no variable\(s\) \['c'\]"),
    ({"y": np.ones((3, 2)), "c": np.ones((3, 2)), "split": np.array([b"x", b"y", b"z"])},
     "unknown labels"),
])
def test_a_plain_hdf5_file_that_is_not_usable(tmp_path: Path, content, message) -> None:
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        for k, v in content.items():
            f[k] = v
    with pytest.raises(DatasetFileError, match=message):
        open_dataset(tmp_path / "bad.h5")
