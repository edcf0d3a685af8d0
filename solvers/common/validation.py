"""The one input validator: parameter vectors and batches of them.

Used by the solvers (one vector y), the prediction API and the UQ models (batches), so that
every entry point refuses the same inputs with the same message, naming the first bad entry.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from solvers.errors import InputError


def check_vector(y: Any, n: int, name: str = "y") -> np.ndarray:
    """Return ``y`` as a float64 vector of shape (n,).

    Raises
    ------
    InputError
        Not numeric, wrong shape, or NaN/inf (naming the first such entry and the count).
    """
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a numeric vector, got {y!r}") from exc
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},), got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(f"{name}[{bad[0]}] = {arr[bad[0]]} is not finite "
                         f"({bad.size} such entries)")
    return arr


def check_batch(y: Any, d: int, name: str = "y") -> np.ndarray:
    """Return ``y`` as a float64 batch of shape (n, d); a vector (d,) becomes (1, d).

    Parameters
    ----------
    y : array_like, shape (n, d) or (d,)
        Real numbers (integer or floating dtypes; not bool, complex or object).

    Raises
    ------
    InputError
        Non-numeric, complex or boolean dtype; wrong shape; NaN or inf (naming the first
        offending entry).
    """
    arr = np.asarray(y)
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name} must be real numbers (integer or float dtype), got dtype "
                         f"{arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != d:
        raise InputError(f"{name} must have shape (n, {d}) or ({d},), got {np.shape(y)}")
    if arr.dtype != np.float64:
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        i, k = np.argwhere(~np.isfinite(arr))[0]
        raise InputError(f"{name}[{i}, {k}] = {arr[i, k]} is not finite")
    return arr
