"""The interface every PDE solver implements, its exceptions and shared input checks."""

from __future__ import annotations

import re
import tomllib
from typing import Any, Protocol, runtime_checkable

import numpy as np


class SolveError(RuntimeError):
    """A sample could not be solved (Newton or Krylov failure); never returned as numbers.

    Attributes
    ----------
    sample : int or None
        Index of the sample in the dataset, if known.
    time : float or None
        Model time at which the failure happened (time-dependent problems), else None.
    reason : str
        Human-readable cause, e.g. "Newton diverged after 4 halvings of dt".
    """

    def __init__(self, reason: str, *, sample: int | None = None, time: float | None = None):
        self.reason = reason
        self.sample = sample
        self.time = time
        where = []
        if sample is not None:
            where.append(f"sample {sample}")
        if time is not None:
            where.append(f"t = {time:.6g}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + reason)


class SolverSettingsError(ValueError):
    """A solver setting (mesh size, time step, ...) is invalid."""


@runtime_checkable
class PDESolver(Protocol):
    """A parameter-to-observable map c = P u(y) built once and called per sample.

    Implementations take an MPI communicator first (COMM_SELF: one rank per sample;
    a larger one distributes the mesh) and every setting as a keyword with the SPEC default.
    """

    #: short problem name, "cdr" or "dcr"
    name: str
    #: length of y
    n_parameters: int
    #: length of c
    n_observables: int

    def solve(self, y: np.ndarray, *, sample: int | None = None) -> np.ndarray:
        """Observables c, shape (n_observables,), float64, identical on every rank."""
        ...

    def settings(self) -> dict[str, Any]:
        """The resolved configuration (JSON-serialisable) that determines the observables."""
        ...


def check_parameter_vector(y: Any, n: int, name: str = "y") -> np.ndarray:
    """Return ``y`` as a float64 vector of length ``n`` or raise ValueError naming the problem."""
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric vector, got {y!r}") from exc
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {arr[bad[0]]} is not finite "
                         f"({bad.size} such entries)")
    return arr


def check_positive(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise SolverSettingsError."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise SolverSettingsError(f"{name} must be a number, got {value!r}") from exc
    if not np.isfinite(v) or v <= 0:
        raise SolverSettingsError(f"{name} must be finite and > 0, got {value!r}")
    return v


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise SolverSettingsError."""
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and int(value) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise SolverSettingsError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def parse_assignment(text: str) -> tuple[str, Any]:
    """Split a command-line ``key=value`` setting and parse the value as a TOML literal.

    ``n_cells=12``, ``'n_cells=[12,12,6]'``, ``linear_solver="gmres"``; a bare word such as
    ``linear_solver=gmres`` is taken as a string. Raises SolverSettingsError otherwise.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise SolverSettingsError(
            f"--set expects key=value with a setting name as key, got {text!r}")
    try:
        return key, tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        if _BARE_WORD.fullmatch(raw.strip()):
            return key, raw.strip()
        raise SolverSettingsError(f"--set {text!r}: {raw!r} is not a TOML value (numbers, "
                                  f"\"strings\", [lists], true/false)") from None
