"""The interface every PDE solver implements and shared input checks.

The exceptions live in :mod:`solvers.errors`; :class:`SolveError` and
:class:`SolverSettingsError` stay importable from here.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from solvers.common.validation import check_vector
from solvers.errors import SolveError, SolverSettingsError  # noqa: F401 re-exported


@runtime_checkable
class PDESolver(Protocol):
    """A parameter-to-observable map c = P u(y) built once and called per sample.

    Implementations take an MPI communicator first (COMM_SELF: one rank per sample;
    a larger one distributes the mesh) and every setting as a keyword with the SPEC default.
    """

    #: short problem name (the registry's key for the package's own problems)
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
    """Return ``y`` as a float64 vector of length ``n`` or raise an InputError (a ValueError)
    naming the problem (:func:`solvers.common.validation.check_vector`)."""
    return check_vector(y, n, name)


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
    return check_int(value, name, 1)


def check_int(value: Any, name: str, low: int = 0, high: int | None = None) -> int:
    """Return ``value`` as an int in [low, high] (high None: no upper bound), else raise
    SolverSettingsError naming the setting, the value and the range."""
    try:
        ok = (not isinstance(value, bool | str) and float(value).is_integer()
              and low <= int(value) and (high is None or int(value) <= high))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise SolverSettingsError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_finite(value: Any, name: str, low: float = -math.inf,
                 high: float = math.inf) -> float:
    """Return ``value`` as a finite float in [low, high], else raise SolverSettingsError."""
    try:
        if isinstance(value, bool | str):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SolverSettingsError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or not low <= v <= high:
        where = "" if (low, high) == (-math.inf, math.inf) else f" in [{low:g}, {high:g}]"
        raise SolverSettingsError(f"{name} must be a finite number{where}, got {value!r}")
    return v


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` if it is a bool (TOML true/false), else raise SolverSettingsError."""
    if not isinstance(value, bool | int) or value not in (0, 1):
        raise SolverSettingsError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_numbers(value: Any, n: int, name: str) -> tuple[float, ...]:
    """Return ``value`` as ``n`` finite floats, else raise SolverSettingsError (also for a
    scalar or a string where a list is expected)."""
    if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
        raise SolverSettingsError(f"{name} must be a list of {n} numbers, got {value!r}")
    items = list(value)
    if len(items) != n:
        raise SolverSettingsError(f"{name} must be a list of {n} numbers, got {value!r}")
    return tuple(check_finite(v, f"{name}[{k}]") for k, v in enumerate(items))


def to_plain(value: Any) -> Any:
    """A setting value as JSON types: tuples become lists, recursively (also in dicts)."""
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value
