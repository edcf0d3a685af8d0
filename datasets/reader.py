"""Read a dataset as an :class:`xarray.Dataset`: our HDF5 files, ``.npz`` and MATLAB ``.mat``.

Whatever the source, the result has dimensions ``sample``, ``parameter`` and ``observable``;
data variables ``y`` (sample, parameter) and ``c`` (sample, observable), float64, plus ``split``
("train" / "validation" / "test", "" for a sample in none), ``status``, ``solve_time``,
``attempts``, ``solver_rank`` and ``failure_reason`` where the file records them; coordinates
``sample`` (index in the file), ``parameter`` (names), ``observable`` (0..m-1) and the solver's
observable coordinates; and the provenance in ``.attrs`` (always ``problem`` and ``config``, a
JSON string).

Foreign files: ``.npz``, or a plain HDF5 file (no ``format`` attribute), with arrays ``y`` and
``c`` (samples x features) and optionally ``split`` (one label per sample); ``.mat`` with
variables ``Y`` and ``C`` stored features x samples, as in the GNvpro paper's published data
(MATLAB v5 via :func:`scipy.io.loadmat`, v7.3 via h5py). Their ``problem`` is the registered
problem whose declared default sizes they have (:func:`solvers.facts.problem_for_sizes`:
55 -> 72 CDR, 3 -> 882 DCR), else "unknown".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from datasets.errors import DatasetFileError
from datasets.splits import SPLIT_NAMES
from datasets.storage import OK, STATUS_NAMES, read_state
from solvers.facts import problem_for_sizes

#: Largest |value| accepted in a foreign file: squares of larger numbers overflow float64
#: (1.3e154), so no error norm, mean or normalisation of them is meaningful; such entries are
#: the signature of a damaged or mis-scaled file (a damaged .mat read as doubles gave 1e183).
MAX_MAGNITUDE = 1e100

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def open_dataset(path: str | Path, split: str | None = None,
                 include_failed: bool = False) -> xr.Dataset:
    """Load a dataset file into memory.

    Parameters
    ----------
    path : str or Path
        ``.h5``/``.hdf5`` (written by ``generate-dataset``), ``.npz`` or ``.mat``.
    split : {"train", "validation", "test"}, optional
        Keep only this split's samples.
    include_failed : bool
        Keep samples that failed or are still pending (their ``c`` is NaN). By default only
        successful samples are kept.

    Returns
    -------
    xarray.Dataset
        See the module docstring.

    Raises
    ------
    DatasetFileError
        The file is missing, corrupt, truncated or not a dataset; the message names it.
    ValueError
        ``split`` is unknown, or the file has no split information.
    """
    path = Path(path)
    if split is not None and split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES} or None, got {split!r}")
    if not path.is_file():
        raise DatasetFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in _HDF5_SUFFIXES:
        ds = _from_hdf5(path)
    elif suffix == ".npz":
        ds = _from_npz(path)
    elif suffix == ".mat":
        ds = _from_mat(path)
    else:
        raise DatasetFileError(f"{path}: unknown file type {suffix!r}; expected .h5, .hdf5, "
                               ".npz or .mat")
    if not include_failed and "status" in ds:
        ds = ds.isel(sample=np.flatnonzero(ds["status"].values == STATUS_NAMES[OK]))
    if split is not None:
        if "split" not in ds:
            raise ValueError(f"{path} has no train/validation/test split")
        ds = ds.isel(sample=np.flatnonzero(ds["split"].values == split))
    return ds


def _from_hdf5(path: Path) -> xr.Dataset:
    plain = _plain_hdf5(path)
    if plain is not None:
        return _from_arrays(path, plain)
    s = read_state(path)
    data: dict[str, Any] = {
        "status": ("sample", np.asarray(STATUS_NAMES)[s.status]),
        "solve_time": ("sample", s.solve_time, {"units": "s"}),
        "attempts": ("sample", s.attempts),
        "solver_rank": ("sample", s.solver_rank),
        "failure_reason": ("sample", s.failure_reason.astype(str)),
    }
    if s.splits is not None:
        labels = np.full(s.y.shape[0], "", dtype=object)
        for name, idx in s.splits.items():
            labels[idx] = name
        data["split"] = ("sample", labels.astype(str))
    attrs = {k: v for k, v in s.attrs.items()}
    attrs["source"] = str(path)
    return _build(s.y, s.c, s.parameter_names, s.observable_coords, data, attrs)


def _plain_hdf5(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays ``y``, ``c`` (and ``split``) of an HDF5 file that is not a generate-dataset
    file (no ``format`` attribute) but holds a dataset ``y`` or ``c``; else None (then it is
    read, or refused, as a generate-dataset file)."""
    try:
        with h5py.File(path, "r") as f:
            if "format" in f.attrs or not any(isinstance(f.get(k), h5py.Dataset)
                                               for k in ("y", "c")):
                return None
            arrays = {k: f[k][()] for k in ("y", "c", "split") if isinstance(f.get(k),
                                                                            h5py.Dataset)}
    except Exception:  # not HDF5 or damaged: read_state says what is wrong
        return None
    if "split" in arrays and arrays["split"].dtype.kind in "SO":
        arrays["split"] = np.array([v.decode() if isinstance(v, bytes) else str(v)
                                    for v in arrays["split"]])
    return arrays


def _from_npz(path: Path) -> xr.Dataset:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # any parser failure on an untrusted file
        raise DatasetFileError(f"{path}: cannot be read as a .npz file (truncated or "
                               f"corrupt?): {exc}") from None
    return _from_arrays(path, arrays)


def _from_arrays(path: Path, arrays: dict[str, np.ndarray]) -> xr.Dataset:
    """A foreign dataset from arrays ``y``, ``c`` and optionally ``split``."""
    y, c = _require(path, arrays, ("y", "c"))
    data = {}
    if "split" in arrays:
        labels = np.asarray(arrays["split"]).astype(str)
        if labels.shape != (y.shape[0],):
            raise DatasetFileError(f"{path}: 'split' has shape {labels.shape}, expected "
                                   f"({y.shape[0]},)")
        unknown = set(np.unique(labels)) - {*SPLIT_NAMES, ""}
        if unknown:
            raise DatasetFileError(f"{path}: 'split' holds unknown labels {sorted(unknown)}; "
                                   f"expected {SPLIT_NAMES}")
        data["split"] = ("sample", labels)
    return _foreign(path, y, c, data)


def _from_mat(path: Path) -> xr.Dataset:
    if h5py.is_hdf5(path):  # MATLAB v7.3: HDF5 with transposed (column-major) arrays
        try:
            with h5py.File(path, "r") as f:
                arrays = {k: np.asarray(f[k]).T for k in f if isinstance(f[k], h5py.Dataset)}
        except Exception as exc:  # any parser failure on an untrusted file
            raise DatasetFileError(f"{path}: cannot read this MATLAB v7.3 file: "
                                   f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    else:
        from scipy.io import loadmat

        try:
            arrays = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        except Exception as exc:  # any parser failure on an untrusted file
            raise DatasetFileError(f"{path}: cannot be read as a MATLAB .mat file: "
                                   f"{exc}") from None
    names = ("Y", "C") if "Y" in arrays or "C" in arrays else ("y", "c")
    y, c = _require(path, arrays, names)
    return _foreign(path, y.T, c.T, {})


def _require(path: Path, arrays: dict[str, np.ndarray], names: tuple[str, str]
             ) -> tuple[np.ndarray, np.ndarray]:
    """The parameter and observable arrays ``names``, checked to be 2-D, numeric, matching."""
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DatasetFileError(f"{path}: no variable(s) {missing}; it holds "
                               f"{sorted(arrays)[:10]} (expected {list(names)})")
    out = []
    for name in names:
        a = np.asarray(arrays[name])
        if a.ndim != 2 or a.dtype.kind not in "iuf" or a.dtype.names is not None:
            raise DatasetFileError(f"{path}: {name!r} must be a 2-D numeric array, got shape "
                                   f"{a.shape} and dtype {a.dtype}")
        out.append(_plausible(path, name, a.astype(np.float64)))
    return out[0], out[1]


def _plausible(path: Path, name: str, a: np.ndarray) -> np.ndarray:
    """``a`` if every entry is finite and of plausible magnitude, else DatasetFileError
    saying which entry is wrong and how."""
    if a.size == 0:
        raise DatasetFileError(f"{path}: {name!r} is empty (shape {a.shape})")
    bad = ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DatasetFileError(f"{path}: {name!r} holds {int(bad.sum())} non-finite value(s) "
                               f"(first {name}{list(idx)} = {a[idx]}); the file is damaged or "
                               "holds failed samples")
    big = np.abs(a) > MAX_MAGNITUDE
    if big.any():
        idx = tuple(int(i) for i in np.argwhere(big)[0])
        raise DatasetFileError(f"{path}: {name!r} holds {int(big.sum())} value(s) of magnitude "
                               f"above {MAX_MAGNITUDE:g} (first {name}{list(idx)} = {a[idx]:.3g}); "
                               "the file is damaged or mis-scaled")
    return a


def _foreign(path: Path, y: np.ndarray, c: np.ndarray, data: dict[str, Any]) -> xr.Dataset:
    """Dataset of samples x features arrays from a file not written by generate-dataset."""
    if y.shape[0] != c.shape[0]:
        raise DatasetFileError(f"{path}: parameters have {y.shape[0]} samples but observables "
                               f"{c.shape[0]} (shapes {y.shape} and {c.shape})")
    problem = problem_for_sizes(y.shape[1], c.shape[1]) or "unknown"
    names = [f"y{k}" for k in range(y.shape[1])]
    attrs = {"problem": problem, "config": json.dumps({"problem": problem}),
             "source": str(path)}
    return _build(y, c, names, {}, data, attrs)


def _build(y: np.ndarray, c: np.ndarray, parameter_names: list[str],
           observable_coords: dict[str, np.ndarray], data: dict[str, Any],
           attrs: dict[str, Any]) -> xr.Dataset:
    coords = {"sample": np.arange(y.shape[0]), "parameter": list(parameter_names),
              "observable": np.arange(c.shape[1])}
    coords.update({k: ("observable", v) for k, v in observable_coords.items()})
    return xr.Dataset({"y": (("sample", "parameter"), y), "c": (("sample", "observable"), c),
                       **data}, coords=coords, attrs=attrs)
