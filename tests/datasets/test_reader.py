"""open_dataset on .npz and MATLAB files, and its errors for corrupt or foreign files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from datasets import DatasetFileError, open_dataset


@pytest.fixture
def arrays() -> tuple[np.ndarray, np.ndarray]:
    """CDR-shaped data: y (10, 55), c (10, 72)."""
    rng = np.random.default_rng(0)
    return rng.random((10, 55)), 10 + 30 * rng.random((10, 72))


def test_npz_round_trip(arrays, tmp_path: Path) -> None:
    y, c = arrays
    split = np.array(["train"] * 6 + ["validation"] * 2 + ["test"] * 2)
    np.savez(tmp_path / "d.npz", y=y, c=c, split=split)
    ds = open_dataset(tmp_path / "d.npz")
    assert ds.sizes == {"sample": 10, "parameter": 55, "observable": 72}
    np.testing.assert_array_equal(ds["y"], y)
    np.testing.assert_array_equal(ds["c"], c)
    assert ds.attrs["problem"] == "cdr" and "config" in ds.attrs
    test = open_dataset(tmp_path / "d.npz", split="test")
    np.testing.assert_array_equal(test["sample"], [8, 9])
    np.testing.assert_array_equal(test["c"], c[8:])


def test_npz_without_split_and_unknown_problem(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", y=np.ones((4, 2)), c=np.zeros((4, 5)))
    ds = open_dataset(tmp_path / "d.npz")
    assert ds.attrs["problem"] == "unknown" and "split" not in ds
    with pytest.raises(ValueError, match="no train/validation/test split"):
        open_dataset(tmp_path / "d.npz", split="train")


def test_mat_v5_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y, c = rng.random((12, 3)), rng.standard_normal((12, 882))
    scipy.io.savemat(tmp_path / "d.mat", {"Y": y.T, "C": c.T})  # features x samples
    ds = open_dataset(tmp_path / "d.mat")
    assert ds.sizes == {"sample": 12, "parameter": 3, "observable": 882}
    np.testing.assert_array_equal(ds["y"], y)
    np.testing.assert_array_equal(ds["c"], c)
    assert ds.attrs["problem"] == "dcr"


def test_mat_v73_round_trip(arrays, tmp_path: Path) -> None:
    """A v7.3 file is HDF5 (512-byte user block) with MATLAB's column-major arrays, so a
    features x samples variable appears as samples x features to h5py."""
    y, c = arrays
    with h5py.File(tmp_path / "d.mat", "w", userblock_size=512) as f:
        f["Y"], f["C"] = y, c
    ds = open_dataset(tmp_path / "d.mat")
    np.testing.assert_array_equal(ds["y"], y)
    np.testing.assert_array_equal(ds["c"], c)


@pytest.mark.parametrize("name, content, message", [
    ("garbage.h5", b"not an hdf5 file at all" * 10, "cannot be read as an HDF5"),
    ("garbage.npz", b"PK\x03\x04 truncated", "cannot be read as a .npz"),
    ("garbage.mat", b"MATLAB 5.0 MAT-file, truncated", "cannot be read as a MATLAB"),
    ("data.csv", b"1,2,3", "unknown file type"),
])
def test_corrupt_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DatasetFileError, match=message) as info:
        open_dataset(tmp_path / name)
    assert str(tmp_path / name) in str(info.value)


def test_foreign_and_inconsistent_files(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["temperature"] = np.zeros(3)
    with pytest.raises(DatasetFileError, match="not a varpro-surrogates dataset"):
        open_dataset(tmp_path / "other.h5")
    np.savez(tmp_path / "wrong.npz", y=np.ones((4, 2)), c=np.zeros((5, 3)))
    with pytest.raises(DatasetFileError, match="4 samples but observables 5"):
        open_dataset(tmp_path / "wrong.npz")
    np.savez(tmp_path / "named.npz", params=np.ones((4, 2)))
    with pytest.raises(DatasetFileError, match=r"no variable\(s\) \['y', 'c'\]"):
        open_dataset(tmp_path / "named.npz")
    with pytest.raises(DatasetFileError, match="no such file"):
        open_dataset(tmp_path / "missing.h5")


def test_truncated_dataset_file(reference: Path, tmp_path: Path) -> None:
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(reference.read_bytes()[:-4000])
    with pytest.raises(DatasetFileError, match="truncated.h5"):
        open_dataset(bad)
    with pytest.raises(ValueError, match="split must be one of"):
        open_dataset(reference, split="training")
