"""Training data from any file ``datasets.open_dataset`` reads, split into train/validation/test.

The split stored in the file is used when there is one. Otherwise (foreign .npz/.mat files)
a seeded random permutation is cut into blocks with the SPEC section 3 fractions (50/25/25
for CDR-like data, 80/10/10 for DCR) or those of the configuration. Samples with non-finite
values are dropped.
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

SPLITS = ("train", "validation", "test")

#: (n_parameters, n_observables) -> problem, for files without a ``problem`` attribute
KNOWN_SHAPES = {(55, 72): "cdr", (3, 882): "dcr"}


@dataclass
class SplitData:
    """Parameters and observables per split.

    Attributes
    ----------
    y, c : dict split -> ndarray, shapes (n_split, n_in), (n_split, n_out), float64
    problem : "cdr", "dcr" or "unknown"
    split_source : "stored" or "seeded"
    provenance : dict (JSON-serialisable)
    """

    y: dict[str, np.ndarray]
    c: dict[str, np.ndarray]
    problem: str
    split_source: str
    provenance: dict = field(default_factory=dict)

    @property
    def n_in(self) -> int:
        return self.y["train"].shape[1]

    @property
    def n_out(self) -> int:
        return self.c["train"].shape[1]


def detect_problem(attrs: dict, n_in: int, n_out: int) -> str:
    """Problem from the file attributes, else from the shapes (55 -> 72 CDR, 3 -> 882 DCR)."""
    problem = str(attrs.get("problem", "")).lower()
    if problem in ("cdr", "dcr"):
        return problem
    return KNOWN_SHAPES.get((n_in, n_out), "unknown")


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
        For files without a stored split; default by problem (SPEC section 3).
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
    finite = np.isfinite(y).all(axis=1) & np.isfinite(c).all(axis=1)
    labels = None
    if "split" in ds:
        labels = np.asarray(ds["split"].values).astype(str)
        if not np.any(labels == "train"):
            labels = None
    source = "stored" if labels is not None else "seeded"
    if labels is None:
        if fractions is None:
            fractions = [0.8, 0.1, 0.1] if problem == "dcr" else [0.5, 0.25, 0.25]
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
    return SplitData(ys, cs, problem, source, provenance)
