"""Training data from any file ``datasets.open_dataset`` reads, split into train/validation/test.

The split stored in the file is used when there is one. Otherwise (foreign .npz/.mat files)
a seeded random permutation is cut into blocks with the fractions of the configuration, else
the problem's declared ``default_split`` (SPEC section 3: 50/25/25 for CDR, 80/10/10 for
DCR), else :data:`FALLBACK_FRACTIONS`. Samples with non-finite values are dropped.

The problem's facts training needs (periodic parameters, default split, training hints) come
with the data (:attr:`SplitData.facts`): recorded in the file's configuration by
generate-dataset, else those of the registered problem the file names or whose sizes it has
(:mod:`solvers.facts`), else none.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets.errors import DataError
from datasets.reader import open_dataset
from solvers.common.atomic import sha256_file
from solvers.facts import problem_for_sizes, training_facts

SPLITS = ("train", "validation", "test")

#: split fractions of data whose problem declares none and whose file stores no split
FALLBACK_FRACTIONS: list[float] = [0.5, 0.25, 0.25]


@dataclass
class SplitData:
    """Parameters and observables per split.

    Attributes
    ----------
    y, c : dict split -> ndarray, shapes (n_split, n_in), (n_split, n_out), float64
    problem : str
        The problem's name, or "unknown".
    split_source : "stored" or "seeded"
    provenance : dict (JSON-serialisable)
    facts : dict
        The problem's training facts (:func:`data_facts`): ``periodic_parameters``
        ({"index": period}), ``default_split``, ``training_hints``; {} if unknown.
    """

    y: dict[str, np.ndarray]
    c: dict[str, np.ndarray]
    problem: str
    split_source: str
    provenance: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)

    @property
    def n_in(self) -> int:
        return self.y["train"].shape[1]

    @property
    def n_out(self) -> int:
        return self.c["train"].shape[1]


def detect_problem(attrs: dict, n_in: int, n_out: int) -> str:
    """Problem from the file attributes, else the registered problem whose default sizes the
    data has (:func:`solvers.facts.problem_for_sizes`: 55 -> 72 CDR, 3 -> 882 DCR), else
    "unknown"."""
    problem = str(attrs.get("problem", "") or "").strip()
    if problem and problem != "unknown":
        return problem
    return problem_for_sizes(n_in, n_out) or "unknown"


def data_facts(attrs: dict, problem: str) -> dict:
    """The problem's training facts: those recorded in the file's configuration
    (``config["facts"]``, generate-dataset), else the registered problem's
    (:func:`solvers.facts.training_facts`), else {}."""
    try:
        recorded = json.loads(attrs.get("config") or "{}").get("facts")
    except (TypeError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, dict):
        return recorded
    return training_facts(problem)


def seeded_split(n: int, fractions: list[float], seed: int) -> np.ndarray:
    """Labels "train"/"validation"/"test" ("" for left-out samples) from a seeded permutation.

    Parameters
    ----------
    n : int
        Number of samples.
    fractions : [f_train, f_val, f_test], sum <= 1
    seed : int

    Returns
    -------
    numpy.ndarray of str, shape (n,)
    """
    perm = np.random.default_rng(seed).permutation(n)
    counts = [int(math.floor(f * n + 0.5)) for f in fractions]
    if sum(counts) > n:
        counts[0] -= sum(counts) - n
    labels = np.full(n, "", dtype="<U10")
    start = 0
    for name, k in zip(SPLITS, counts, strict=True):
        labels[perm[start:start + k]] = name
        start += k
    return labels


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def load_split_data(path: str | Path, *, fractions: list[float] | None = None,
                    seed: int = 0) -> SplitData:
    """Read ``path`` with ``datasets.open_dataset`` and split it.

    Parameters
    ----------
    path : path
        HDF5 from generate-dataset, .npz or .mat.
    fractions : list of 3 floats, optional
        For files without a stored split; default: the problem's ``default_split`` (SPEC
        section 3), else :data:`FALLBACK_FRACTIONS`.
    seed : int
        Seed of the split for files without a stored split.

    Raises
    ------
    datasets.DatasetFileError, DataError
    """
    path = Path(path)
    ds = open_dataset(path)
    y = np.asarray(ds["y"].values, dtype=np.float64)
    c = np.asarray(ds["c"].values, dtype=np.float64)
    if y.ndim != 2 or c.ndim != 2 or y.shape[0] != c.shape[0]:
        raise DataError(f"{path}: y and c must be (samples x features) with the same number "
                        f"of samples, got {y.shape} and {c.shape}")
    for name, what, a in (("y", "input features", y), ("c", "observables", c)):
        if a.shape[1] == 0:
            raise DataError(f"{path}: no {what} ({name} has shape {a.shape}); a surrogate "
                            "needs at least one parameter and one observable per sample")
    attrs = dict(ds.attrs)
    problem = detect_problem(attrs, y.shape[1], c.shape[1])
    facts = data_facts(attrs, problem)
    finite = np.isfinite(y).all(axis=1) & np.isfinite(c).all(axis=1)
    labels = None
    if "split" in ds:
        labels = np.asarray(ds["split"].values).astype(str)
        if not np.any(labels == "train"):
            labels = None
    source = "stored" if labels is not None else "seeded"
    if labels is None:
        if fractions is None:
            declared = facts.get("default_split")
            fractions = list(declared) if declared else list(FALLBACK_FRACTIONS)
        labels = np.full(y.shape[0], "", dtype="<U10")
        labels[finite] = seeded_split(int(finite.sum()), fractions, seed)
    labels = np.where(finite, labels, "")
    ys = {s: y[labels == s] for s in SPLITS}
    cs = {s: c[labels == s] for s in SPLITS}
    if ys["train"].shape[0] == 0:
        dropped = int((~finite).sum())
        why = (f" ({dropped} of {y.shape[0]} samples have NaN or inf values and are left out)"
               if dropped else f" (the file has {y.shape[0]} samples)")
        raise DataError(f"{path}: no training samples{why}")
    provenance = {
        "path": str(path.resolve()),
        "sha256": sha256_file(path),
        "problem": problem,
        "split": source,
        "n_samples": {s: int(ys[s].shape[0]) for s in SPLITS},
        "n_dropped_nonfinite": int((~finite).sum()),
        "attrs": {k: _jsonable(v) for k, v in attrs.items()},
    }
    if source == "seeded" and fractions is not None:  # fractions is set when seeded
        provenance["split_fractions"] = list(fractions)
        provenance["split_seed"] = seed
    return SplitData(ys, cs, problem, source, provenance, facts)
