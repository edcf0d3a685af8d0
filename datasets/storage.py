"""HDF5 layout of a generated dataset, atomic writes and validated reads.

Layout (format ``varpro-surrogates-dataset``, version 1; n samples, p parameters,
m observables)::

    /y                (n, p) float64   parameters of every sample (drawn up front)
    /c                (n, m) float64   observables; NaN where status is not "ok"
    /status           (n,)   uint8 enum pending=0, ok=1, failed=2
    /solve_time       (n,)   float64   seconds spent on the sample (all attempts); NaN if pending
    /attempts         (n,)   uint8     solve attempts made (2 = failed, then retried)
    /solver_rank      (n,)   int32     world rank of the group leader that solved it; -1 if pending
    /failure_reason   (n,)   utf-8     why the last attempt failed; "" otherwise
    /parameter_names  (p,)   utf-8
    /observable_coords/<name> (m,)     extra coordinates along the observable dimension
    /splits/{train,validation,test}   int64 sorted sample indices (once the file is complete)

Root attributes hold the provenance (:data:`PROVENANCE_ATTRS`): ``problem``, ``config`` (JSON),
versions, seed, creation time, ranks, ``complete`` and the ``runs`` history (JSON).

A file is only ever written whole: :func:`write_atomic` writes a temporary file in the same
directory, fsyncs it and renames it over the target with :func:`os.replace`, so a reader (or a
job killed at any moment) sees either the previous version or the new one, never a partial
file. The file is built in memory and written into a temporary file with a unique random name,
created exclusively by :func:`tempfile.mkstemp` (``O_CREAT | O_EXCL``: it never follows a
symlink planted in the folder), written through that descriptor only
(:func:`solvers.common.atomic.write_atomic`).

Integrity: every numeric dataset is stored with HDF5's Fletcher-32 checksum filter (chunked),
so flipped bytes in ``/y``, ``/c``, ... are detected when they are read; the variable-length
strings (which HDF5 cannot filter) and the root attributes are covered by the root attribute
``content_sha256`` (SHA-256 of their JSON serialisation). A failed check is a
:class:`~datasets.errors.DatasetFileError` naming the file and the dataset (``/c``). Files
written before these checks existed have neither and are read unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from datasets.errors import DatasetFileError
from datasets.splits import SPLIT_NAMES
from solvers.common.atomic import write_atomic as write_file_atomic

FORMAT = "varpro-surrogates-dataset"
FORMAT_VERSION = 1

PENDING, OK, FAILED = 0, 1, 2
STATUS_NAMES: tuple[str, str, str] = ("pending", "ok", "failed")
STATUS_DTYPE = h5py.enum_dtype(dict(zip(STATUS_NAMES, range(3), strict=True)), basetype="u1")

#: root attributes every file carries, besides ``format`` and ``format_version``
PROVENANCE_ATTRS: tuple[str, ...] = (
    "problem", "config", "seed", "n_samples", "package_version", "git_commit",
    "dolfinx_version", "petsc_version", "mpi4py_version", "mpi_library", "h5py_version",
    "hdf5_version", "numpy_version", "created", "updated", "n_ranks", "ranks_per_sample",
    "complete", "runs",
)

_SAMPLE_ARRAYS = ("y", "c", "status", "solve_time", "attempts", "solver_rank", "failure_reason")

#: root attribute holding the SHA-256 of the attributes and string datasets
CONTENT_HASH = "content_sha256"


@dataclass
class DatasetState:
    """Everything a dataset file holds, in memory.

    Attributes
    ----------
    attrs : dict
        Provenance attributes (see :data:`PROVENANCE_ATTRS`); ``config`` and ``runs`` as JSON
        strings.
    parameter_names : list of str
        Length p.
    y, c : numpy.ndarray
        Shapes (n, p) and (n, m), float64.
    status, attempts : numpy.ndarray
        Shape (n,), uint8.
    solve_time : numpy.ndarray
        Shape (n,), float64, seconds.
    solver_rank : numpy.ndarray
        Shape (n,), int32: world rank of the leader of the group that solved the sample.
    failure_reason : numpy.ndarray
        Shape (n,), object array of str.
    observable_coords : dict of str to numpy.ndarray
        Each of shape (m,).
    splits : dict of str to numpy.ndarray, optional
        Sample indices of each split; None until the dataset is complete.
    """

    attrs: dict[str, Any]
    parameter_names: list[str]
    y: np.ndarray
    c: np.ndarray
    status: np.ndarray
    solve_time: np.ndarray
    attempts: np.ndarray
    solver_rank: np.ndarray
    failure_reason: np.ndarray
    observable_coords: dict[str, np.ndarray] = field(default_factory=dict)
    splits: dict[str, np.ndarray] | None = None

    @classmethod
    def empty(cls, attrs: dict[str, Any], parameter_names: list[str], y: np.ndarray,
              n_observables: int, observable_coords: dict[str, np.ndarray]) -> DatasetState:
        """A state with every sample pending; ``y`` has shape (n, p)."""
        n = y.shape[0]
        return cls(attrs=attrs, parameter_names=list(parameter_names), y=y,
                   c=np.full((n, n_observables), np.nan),
                   status=np.full(n, PENDING, dtype=np.uint8), solve_time=np.full(n, np.nan),
                   attempts=np.zeros(n, dtype=np.uint8),
                   solver_rank=np.full(n, -1, dtype=np.int32),
                   failure_reason=np.full(n, "", dtype=object),
                   observable_coords={k: np.asarray(v) for k, v in observable_coords.items()})

    @property
    def config(self) -> dict[str, Any]:
        """The resolved configuration (decoded ``config`` attribute)."""
        return json.loads(self.attrs["config"])


def write_atomic(path: str | os.PathLike, state: DatasetState) -> None:
    """Write ``state`` to ``path`` through a temporary file and an atomic rename.

    The temporary file ``.<name>.<random>.tmp`` is created exclusively in the same directory
    (same file system); it is fsynced before
    :func:`os.replace` and the directory is fsynced after it. On any failure (a full disk
    included) the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    image = file_image(state)
    write_file_atomic(path, lambda fh: fh.write(image), "dataset")
    _fsync(path.parent)


def file_image(state: DatasetState) -> bytes:
    """The bytes of the HDF5 file holding ``state``, built in memory (HDF5 core driver
    without backing store), so that HDF5 itself never writes to disk: a full disk is then a
    plain OSError of one write call, never a half-flushed HDF5 file."""
    with h5py.File(f"{id(state)}.h5", "w", driver="core", backing_store=False,
                   libver=("v108", "latest")) as f:
        _write(f, state)
        f.flush()
        return f.id.get_file_image()


#: suffix of the temporary files of :func:`write_atomic`
TEMP_SUFFIX = ".tmp"


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files that killed writers of ``path`` left behind (call while holding
    the file's lock, so that no live writer owns one). Covers the current names
    ``.<name>.<random>.tmp`` and the older ``.<name>.tmp<pid>``; links are removed, never
    followed."""
    prefix = f".{path.name}."
    for entry in path.parent.glob(f".{glob_escape(path.name)}.*"):
        rest = entry.name[len(prefix):]
        if rest.endswith(TEMP_SUFFIX) or (rest.startswith("tmp") and rest[3:].isdigit()):
            entry.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    """``name`` with the glob metacharacters ``*?[`` escaped."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in name)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _content_hash(attrs: dict[str, Any], strings: dict[str, list[str]]) -> str:
    """SHA-256 of the attributes and string datasets (what Fletcher-32 cannot cover)."""
    text = json.dumps({"attrs": {k: v for k, v in attrs.items() if k != CONTENT_HASH},
                       "strings": strings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _string_datasets(state: DatasetState) -> dict[str, list[str]]:
    out = {"parameter_names": [str(v) for v in state.parameter_names],
           "failure_reason": [str(v) for v in state.failure_reason]}
    for key, value in state.observable_coords.items():
        value = np.asarray(value)
        if value.dtype.kind in "UO":
            out[f"observable_coords/{key}"] = [str(v) for v in value]
    return out


def _write(f: h5py.File, state: DatasetState) -> None:
    attrs = {k: v for k, v in state.attrs.items() if k != CONTENT_HASH}
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    for key, value in attrs.items():
        f.attrs[key] = value
    text = h5py.string_dtype()
    labels = {"y": ("sample", "parameter"), "c": ("sample", "observable")}
    for name in _SAMPLE_ARRAYS:
        data = getattr(state, name)
        if name == "failure_reason":
            dset = f.create_dataset(name, data=data, dtype=text)
        else:
            dtype = STATUS_DTYPE if name == "status" else data.dtype
            dset = f.create_dataset(name, data=data, dtype=dtype, fletcher32=True)
        for axis, label in enumerate(labels.get(name, ("sample",))):
            dset.dims[axis].label = label
    f.create_dataset("parameter_names", data=state.parameter_names, dtype=text)
    coords = f.create_group("observable_coords")
    for key, value in state.observable_coords.items():
        value = np.asarray(value)
        if value.dtype.kind in "UO":
            coords.create_dataset(key, data=value.astype(object), dtype=text)
        else:
            coords.create_dataset(key, data=value, fletcher32=True)
    if state.splits is not None:
        group = f.create_group("splits")
        for name in SPLIT_NAMES:
            group.create_dataset(name, data=np.asarray(state.splits[name], dtype=np.int64),
                                 fletcher32=True)
    # the hash of the attributes as they read back (numpy scalars -> Python values)
    stored = {k: _python(f.attrs[k]) for k in attrs}
    f.attrs[CONTENT_HASH] = _content_hash(stored, _string_datasets(state))


def read_state(path: str | os.PathLike) -> DatasetState:
    """Read and validate a dataset file written by :func:`write_atomic`.

    Raises
    ------
    DatasetFileError
        If the file is missing, not HDF5, truncated or corrupt, not a varpro-surrogates
        dataset, or its arrays are missing or inconsistent. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            _check_header(path, f)
            state = _read(path, f)
            stored_hash = _python(f.attrs.get(CONTENT_HASH, ""))
    except DatasetFileError:
        raise
    except Exception as exc:  # any h5py/HDF5 failure on a damaged file
        raise DatasetFileError(f"{path}: cannot be read as an HDF5 dataset (truncated or "
                               f"corrupt?): {_first_line(exc)}") from None
    if stored_hash and stored_hash != _content_hash(state.attrs, _string_datasets(state)):
        raise DatasetFileError(
            f"{path}: checksum mismatch in the attributes or string datasets (/parameter_names, "
            "/failure_reason, /observable_coords): the file is corrupt")
    _check_shapes(path, state)
    return state


def _dataset(path: Path, f: h5py.File, name: str, strings: bool = False) -> np.ndarray:
    """Read the dataset ``name`` whole; a failed checksum or read names it."""
    try:
        dset = f[name]
        return np.asarray(dset.asstr()[()], dtype=object) if strings else dset[()]
    except KeyError:
        raise DatasetFileError(f"{path}: dataset /{name} is missing") from None
    except Exception as exc:  # checksum failure ("filter returned failure") or damage
        check = " (Fletcher-32 checksum failed: the stored bytes were changed)" \
            if "filter" in str(exc) else ""
        raise DatasetFileError(f"{path}: dataset /{name} cannot be read{check}: "
                               f"{_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_header(path: Path, f: h5py.File) -> None:
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        raise DatasetFileError(
            f"{path}: HDF5 file but not a varpro-surrogates dataset (attribute 'format' is "
            f"{fmt!r}, expected {FORMAT!r}); top-level entries: {sorted(f.keys())[:10]}")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise DatasetFileError(f"{path}: format version {version} is not supported "
                               f"(this code reads version {FORMAT_VERSION})")
    missing = [k for k in (*_SAMPLE_ARRAYS, "parameter_names") if k not in f]
    missing += [f"attribute {k!r}" for k in PROVENANCE_ATTRS if k not in f.attrs]
    if missing:
        raise DatasetFileError(f"{path}: incomplete dataset file, missing {', '.join(missing)}")


def _read(path: Path, f: h5py.File) -> DatasetState:
    attrs = {k: _python(f.attrs[k]) for k in f.attrs
             if k not in ("format", "format_version", CONTENT_HASH)}
    try:
        json.loads(attrs["config"])
    except (TypeError, json.JSONDecodeError):
        raise DatasetFileError(f"{path}: attribute 'config' is not valid JSON") from None
    coords = {}
    for key, dset in f.get("observable_coords", {}).items():
        strings = h5py.check_string_dtype(dset.dtype) is not None
        value = _dataset(path, f, f"observable_coords/{key}", strings)
        coords[key] = value.astype(str) if strings else value
    splits = None
    if "splits" in f:
        splits = {name: _dataset(path, f, f"splits/{name}").astype(np.int64)
                  for name in SPLIT_NAMES}
    return DatasetState(
        attrs=attrs,
        parameter_names=[str(v) for v in _dataset(path, f, "parameter_names", True)],
        y=_dataset(path, f, "y").astype(np.float64), c=_dataset(path, f, "c").astype(np.float64),
        status=_dataset(path, f, "status").astype(np.uint8),
        solve_time=_dataset(path, f, "solve_time").astype(float),
        attempts=_dataset(path, f, "attempts").astype(np.uint8),
        solver_rank=_dataset(path, f, "solver_rank").astype(np.int32),
        failure_reason=_dataset(path, f, "failure_reason", True),
        observable_coords=coords, splits=splits)


def _python(value: Any) -> Any:
    """HDF5 attribute value as a plain Python object."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_shapes(path: Path, s: DatasetState) -> None:
    n, p = s.y.shape if s.y.ndim == 2 else (-1, -1)
    problems = []
    if s.y.ndim != 2 or s.c.ndim != 2 or s.c.shape[0] != n:
        problems.append(f"y {s.y.shape} and c {s.c.shape} must be 2-D with equal rows")
    for name in ("status", "solve_time", "attempts", "solver_rank", "failure_reason"):
        if getattr(s, name).shape != (n,):
            problems.append(f"{name} has shape {getattr(s, name).shape}, expected ({n},)")
    if len(s.parameter_names) != p:
        problems.append(f"{len(s.parameter_names)} parameter names for {p} parameters")
    if np.any(s.status > FAILED):
        problems.append("status holds unknown codes")
    if s.y.ndim == 2 and not np.all(np.isfinite(s.y)):
        problems.append("/y holds non-finite parameters")
    if s.c.ndim == 2 and s.c.shape[0] == n and s.status.shape == (n,) and \
            not np.all(np.isfinite(s.c[s.status == OK])):
        problems.append("/c holds non-finite observables of samples marked ok")
    m = s.c.shape[-1]
    problems += [f"observable coordinate {k!r} has shape {v.shape}, expected ({m},)"
                 for k, v in s.observable_coords.items() if v.shape != (m,)]
    if s.splits is not None:
        for name, idx in s.splits.items():
            if idx.size and (idx.min() < 0 or idx.max() >= n or np.any(s.status[idx] != OK)):
                problems.append(f"split {name!r} holds indices that are not successful samples")
    if problems:
        raise DatasetFileError(f"{path}: inconsistent dataset file: {'; '.join(problems)}")
