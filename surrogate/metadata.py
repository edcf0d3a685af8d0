"""The one reader and writer of a model directory's ``metadata.json``.

Layout (format ``varpro-surrogates/separable``, :data:`FORMAT_VERSION`)::

    format, format_version        this format's name and version
    weights_file, weights_sha256  the weights file (same folder) and its SHA-256
    model                         architecture, normalisation and encoding (SeparableModel.config)
    torch_version                 torch that wrote the file
    training                      provenance: method, problem, config, seed, data (path,
                                  sha256, split, attrs of the training file), device, ...
    inputs                        parameter names and the training box (lower, upper; physical
                                  units), see :func:`parameter_box`
    outputs                       observable names and coordinates

An ensemble (``train-surrogate --ensemble K``, issue 19) is format version
:data:`ENSEMBLE_FORMAT_VERSION` (2): no weights of its own, ``model`` is the members' common
architecture, and ``ensemble`` lists the members (``path`` of a version-1 model directory
inside it, ``seed``, ``metadata_sha256``) with the calibration factor ``std_scale``; see
:mod:`surrogate.ensemble`. Single models stay version 1.

Everything that reads a field of it (the loader, evaluate-surrogate, the UQ models, the
PDE model) goes through the functions here, so that a field is looked up in one place;
files written before ``inputs``/``outputs`` moved to the top level (they were under
``training``) are still read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from solvers.common.atomic import sha256_file, write_text_atomic
from surrogate.errors import SurrogateFormatError

FORMAT_NAME = "varpro-surrogates/separable"
FORMAT_VERSION = 1
#: format version of an ensemble directory (members in sub-folders, see surrogate.ensemble)
ENSEMBLE_FORMAT_VERSION = 2
WEIGHTS_FILE = "weights.npz"
METADATA_FILE = "metadata.json"

#: keys every metadata.json has: dotted path -> type
_REQUIRED: dict[str, type] = {
    "weights_sha256": str, "model": dict, "model.features": dict, "model.n_out": int,
    "model.normalizer": dict, "model.dtype": str,
}
_JSON_TYPES = {dict: "object", str: "string", int: "integer"}


@dataclass(frozen=True)
class ParameterBox:
    """The training parameter box (physical units).

    Attributes
    ----------
    names : list of str (may be empty)
    lower, upper : numpy.ndarray, shape (n_in,)
    source : str
        Where the box comes from ("model metadata", "training split min/max ...").
    """

    names: list[str]
    lower: np.ndarray
    upper: np.ndarray
    source: str


@dataclass(frozen=True)
class SolverProvenance:
    """The solver that made a model's training data (``generate-dataset`` files only).

    Attributes
    ----------
    problem : str
        The problem's name.
    settings : dict
        The solver's resolved settings.
    seed, n_samples : int
        Dataset seed and number of samples of the training file.
    plugin : dict or None
        The problem's identity (:class:`solvers.plugins.ProblemIdentity` as JSON: spec, kind,
        import path, file SHA-256 or distribution version); None for data made before
        problems were plugins (a registered name).
    """

    problem: str
    settings: dict[str, Any]
    seed: int
    n_samples: int
    plugin: dict[str, Any] | None = None

    @property
    def spec(self) -> str:
        """The spec that resolves the recorded problem (:func:`solvers.plugins.recorded_spec`)."""
        from solvers.plugins import recorded_spec

        return recorded_spec(self.problem, self.plugin)

    def as_dict(self) -> dict[str, Any]:
        return {"problem": self.problem, "settings": self.settings, "seed": self.seed,
                "n_samples": self.n_samples, "plugin": self.plugin}


# ------------------------------------------------------------------------------ I/O
def new_metadata(model_config: dict, weights_sha256: str, training: dict | None = None,
                 inputs: dict | None = None, outputs: dict | None = None) -> dict[str, Any]:
    """A metadata dict in the current format (see the module docstring)."""
    import torch

    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": weights_sha256,
        "model": model_config,
        "training": training or {},
        "torch_version": torch.__version__,
    }
    return _with_io(meta, inputs, outputs)


def _with_io(meta: dict[str, Any], inputs: dict | None, outputs: dict | None
             ) -> dict[str, Any]:
    """``meta`` with the ``inputs`` / ``outputs`` entries that are given."""
    if inputs is not None:
        meta["inputs"] = inputs
    if outputs is not None:
        meta["outputs"] = outputs
    return meta


def new_ensemble_metadata(model_config: dict, members: list[dict[str, Any]], *,
                          std_scale: float, ddof: int = 1, calibration: dict | None = None,
                          training: dict | None = None, inputs: dict | None = None,
                          outputs: dict | None = None) -> dict[str, Any]:
    """A metadata dict of an ensemble directory (format version 2, see the module docstring).

    Parameters
    ----------
    model_config : dict
        The members' common architecture (``SeparableModel.config()`` of member 0).
    members : list of dict
        ``{"path": "members/k", "seed": int, "metadata_sha256": str}`` per member.
    std_scale : float
        Calibration factor of the members' spread (``std = std_scale * std_raw``).
    ddof : int
        Delta degrees of freedom of the spread (divisor K - ddof).
    calibration : dict, optional
        How ``std_scale`` was fitted (split, coverage before and after, ...).
    """
    import torch

    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": ENSEMBLE_FORMAT_VERSION,
        "model": model_config,
        "ensemble": {"size": len(members), "members": members, "std_scale": float(std_scale),
                     "ddof": int(ddof), "calibration": calibration or {}},
        "training": training or {},
        "torch_version": torch.__version__,
    }
    return _with_io(meta, inputs, outputs)


def write_metadata(directory: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``meta`` to ``directory/metadata.json`` atomically; returns the path."""
    path = Path(directory) / METADATA_FILE
    write_text_atomic(path, json.dumps(meta, indent=2) + "\n")
    return path


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """Metadata of a model directory after checking format name, version and required keys.

    Raises
    ------
    SurrogateFormatError
        Missing or unreadable file, not JSON, another format or version, a required key
        missing or of the wrong type, a weights file name that leaves the folder.
    """
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise SurrogateFormatError(f"{path}: no such file (not a surrogate model directory)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SurrogateFormatError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise SurrogateFormatError(f"{path}: cannot be read ({exc.strerror})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise SurrogateFormatError(f"{path}: not a {FORMAT_NAME} metadata file")
    version = meta.get("format_version")
    if version not in (FORMAT_VERSION, ENSEMBLE_FORMAT_VERSION) or isinstance(version, bool):
        raise SurrogateFormatError(
            f"{path}: unsupported format version {version!r} (this package reads versions "
            f"{FORMAT_VERSION} and {ENSEMBLE_FORMAT_VERSION})")
    if version == ENSEMBLE_FORMAT_VERSION:
        _check_ensemble_entry(path, meta)
    for key, kind in _REQUIRED.items():
        if key == "weights_sha256" and version == ENSEMBLE_FORMAT_VERSION:
            continue
        node: Any = meta
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            raise SurrogateFormatError(f"{path}: missing key {key!r}")
        if not isinstance(node, kind) or isinstance(node, bool):
            raise SurrogateFormatError(f"{path}: key {key!r} must be a JSON "
                                       f"{_JSON_TYPES[kind]}, got {str(node)[:60]!r}")
    name = meta.get("weights_file", WEIGHTS_FILE)
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise SurrogateFormatError(f"{path}: weights_file must be a file name in the model "
                                   f"directory, got {name!r}")
    return meta


def is_ensemble(meta: dict[str, Any]) -> bool:
    """Whether ``meta`` (read by :func:`read_metadata`) describes an ensemble directory."""
    return meta.get("format_version") == ENSEMBLE_FORMAT_VERSION


def ensemble_entry(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``ensemble`` entry of an ensemble's metadata ({} for a single model)."""
    entry = meta.get("ensemble") if is_ensemble(meta) else None
    return entry if isinstance(entry, dict) else {}


def _check_ensemble_entry(path: Path, meta: dict[str, Any]) -> None:
    """The ``ensemble`` entry: members with a relative ``path`` inside the folder and a
    ``metadata_sha256``, at least 2 of them, a positive finite ``std_scale``."""
    entry = meta.get("ensemble")
    if not isinstance(entry, dict):
        raise SurrogateFormatError(f"{path}: key 'ensemble' must be a JSON object")
    members = entry.get("members")
    if not isinstance(members, list) or len(members) < 2:
        raise SurrogateFormatError(f"{path}: key 'ensemble.members' must list at least 2 "
                                   "members")
    for k, m in enumerate(members):
        sub = m.get("path") if isinstance(m, dict) else None
        if not isinstance(sub, str) or not sub or Path(sub).is_absolute() \
                or ".." in Path(sub).parts or not isinstance(m.get("metadata_sha256"), str):
            raise SurrogateFormatError(f"{path}: ensemble member {k} needs a 'path' inside the "
                                       f"model directory and a 'metadata_sha256', got "
                                       f"{str(m)[:80]!r}")
    scale = entry.get("std_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not (
            0 < scale < float("inf")):
        raise SurrogateFormatError(f"{path}: key 'ensemble.std_scale' must be a positive "
                                   f"number, got {scale!r}")


def weights_path(directory: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """The weights file of a model directory (validated by :func:`read_metadata`)."""
    return Path(directory) / str(meta.get("weights_file", WEIGHTS_FILE))


# ------------------------------------------------------------------------ fields
def training(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``training`` provenance entry ({} if absent or malformed)."""
    entry = meta.get("training")
    return entry if isinstance(entry, dict) else {}


def io_entries(meta: dict[str, Any]) -> tuple[dict | None, dict | None]:
    """The ``inputs`` and ``outputs`` entries (top level; under ``training`` in older files)."""
    old = training(meta)
    inputs = meta.get("inputs") or old.get("inputs")
    outputs = meta.get("outputs") or old.get("outputs")
    return (inputs if isinstance(inputs, dict) else None,
            outputs if isinstance(outputs, dict) else None)


def recorded_box(meta: dict[str, Any]) -> ParameterBox | None:
    """The training box recorded in the metadata, or None."""
    inputs = io_entries(meta)[0]
    if not inputs or "lower" not in inputs or "upper" not in inputs:
        return None
    return ParameterBox(names=[str(n) for n in inputs.get("names") or []],
                        lower=np.asarray(inputs["lower"], dtype=np.float64),
                        upper=np.asarray(inputs["upper"], dtype=np.float64),
                        source="model metadata")


def training_data_record(meta: dict[str, Any]) -> dict[str, Any]:
    """``training.data``: path, sha256, split, split_fractions/split_seed, attrs ({})."""
    data = training(meta).get("data")
    return data if isinstance(data, dict) else {}


def training_file(meta: dict[str, Any]) -> Path | None:
    """The training data file if it still exists with the SHA-256 recorded at training."""
    data = training_data_record(meta)
    path = data.get("path")
    if not path or not Path(path).is_file():
        return None
    if data.get("sha256") and sha256_file(path) != data["sha256"]:
        return None
    return Path(path)


def load_training_split(meta: dict[str, Any]) -> Any | None:
    """The training file's split (:class:`datasets.split_data.SplitData`) if the file is
    still there unchanged, else None (imports :mod:`datasets`, which never loads dolfinx,
    PETSc or MPI)."""
    path = training_file(meta)
    if path is None:
        return None
    from datasets.split_data import load_split_data

    data = training_data_record(meta)
    return load_split_data(path, fractions=data.get("split_fractions"),
                           seed=int(data.get("split_seed", 0)))


def parameter_box(meta: dict[str, Any], split: Any | None = None) -> ParameterBox | None:
    """The training parameter box: the one recorded in the metadata, else the min/max of the
    training split (``split``, or read from the training file if it is still there
    unchanged), else None."""
    box = recorded_box(meta)
    if box is not None:
        return box
    if split is None:
        try:
            split = load_training_split(meta)
        except Exception:  # noqa: BLE001 - an unreadable file just means "no box known"
            split = None
    if split is None:
        return None
    y = split.y["train"]
    return ParameterBox(names=[], lower=y.min(axis=0), upper=y.max(axis=0),
                        source="training split min/max (computed from the training file)")


def solver_provenance(meta: dict[str, Any]) -> SolverProvenance | None:
    """The training data's solver provenance, or None for data without it (.npz/.mat files,
    or a file whose attributes are not those of ``generate-dataset``: no ``config``
    attribute, or one without solver settings).

    Raises
    ------
    SurrogateFormatError
        Provenance that is there but damaged (edited metadata.json): a ``config`` that is not
        a JSON object, a problem that is not a name, solver settings that are not a table, a
        seed that is not an integer >= 0, a sample count that is not an integer >= 1.
    """
    attrs = training_data_record(meta).get("attrs") or {}
    if not isinstance(attrs, dict) or "config" not in attrs:
        return None
    where = f"{METADATA_FILE}: training.data.attrs"
    try:
        config = json.loads(attrs["config"])
    except (TypeError, ValueError, RecursionError):
        raise SurrogateFormatError(f"{where}.config is not valid JSON ("
                                   f"{str(attrs['config'])[:60]!r}): the provenance was "
                                   "damaged") from None
    if not isinstance(config, dict):
        raise SurrogateFormatError(f"{where}.config must be a JSON object")
    if "solver" not in config:
        return None                               # not a generate-dataset file
    problem, settings = config.get("problem"), config["solver"]
    if not isinstance(problem, str) or not isinstance(settings, dict):
        raise SurrogateFormatError(f"{where}.config: problem must be a name and solver a "
                                   f"table, got {str(problem)[:40]!r} and "
                                   f"{type(settings).__name__}")
    seed, n_samples = _whole(attrs.get("seed")), _whole(attrs.get("n_samples"))
    if seed is None or not 0 <= seed < 2**63:
        raise SurrogateFormatError(f"{where}.seed must be an integer in [0, 2^63), got "
                                   f"{str(attrs.get('seed'))[:40]!r}")
    if n_samples is None or n_samples < 1:
        raise SurrogateFormatError(f"{where}.n_samples must be an integer >= 1, got "
                                   f"{str(attrs.get('n_samples'))[:40]!r}")
    plugin = config.get("plugin")
    return SolverProvenance(problem, settings, seed, n_samples,
                            plugin if isinstance(plugin, dict) else None)


def _whole(value: Any) -> int | None:
    """An integer attribute (an int, a whole float, or decimal digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 30:
        return int(value)
    return None


def io_metadata_from_dataset(ds: Any, y_train: np.ndarray) -> dict[str, dict]:
    """The ``inputs``/``outputs`` entries from a dataset and its training split.

    Parameters
    ----------
    ds : xarray.Dataset
        As returned by ``datasets.open_dataset`` (coordinate ``parameter`` with the names,
        observable coordinates along ``observable``).
    y_train : numpy.ndarray, shape (n_train, p)

    Returns
    -------
    dict with keys "inputs" and "outputs" (JSON-serialisable)
    """
    names = [str(v) for v in ds["parameter"].values] if "parameter" in ds.coords else None
    coords = {}
    for key, coord in ds.coords.items():
        if key != "observable" and coord.dims == ("observable",):
            coords[str(key)] = np.asarray(coord.values).tolist()
    return {
        "inputs": {"names": names or [f"y{k}" for k in range(y_train.shape[1])],
                   "lower": np.min(y_train, axis=0).astype(float).tolist(),
                   "upper": np.max(y_train, axis=0).astype(float).tolist(),
                   "box": "training split min/max, physical units"},
        "outputs": {"names": None, "coords": json.loads(json.dumps(coords))},
    }
