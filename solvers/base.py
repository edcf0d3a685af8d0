"""The interface every PDE solver implements and shared input checks.

The exceptions live in :mod:`solvers.errors`; :class:`SolveError` and
:class:`SolverSettingsError` stay importable from here.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from solvers.errors import SolveError, SolverSettingsError  # noqa: F401 re-exported


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


# ---------------------------------------------------------------------- memory guard
def available_memory() -> int:
    """Bytes of memory this process can still use: MemAvailable of /proc/meminfo, capped by
    the cgroup (v2 or v1) limit minus its usage; the physical memory if neither is known."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 1 << 60:
                candidates.append(int(limit) - int(Path(usage_file).read_text()))
        except (OSError, ValueError):
            continue
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError):
            return 1 << 62
    return max(min(candidates), 0)


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def check_memory(estimate: float, what: str, *, ranks_on_node: int = 1) -> None:
    """Refuse (SolverSettingsError) a set-up whose estimated memory cannot fit.

    Parameters
    ----------
    estimate : float
        Estimated bytes needed by one process.
    what : str
        The setting(s) responsible, e.g. ``"n_cells = 100000 (1e10 cells)"``.
    ranks_on_node : int
        Processes on this node that each need ``estimate``.
    """
    free = available_memory()
    if estimate * ranks_on_node > free:
        per = f" per rank x {ranks_on_node} ranks" if ranks_on_node > 1 else ""
        raise SolverSettingsError(
            f"{what} needs about {format_bytes(estimate)}{per}, but only {format_bytes(free)} "
            "of memory is available")


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def parse_assignment(text: str) -> tuple[str, Any]:
    """Split a command-line ``key=value`` setting and parse the value as a TOML literal.

    ``n_cells=12``, ``'n_cells=[12,12,6]'``, ``linear_solver="gmres"``; a bare word such as
    ``linear_solver=gmres`` is taken as a string. Raises SolverSettingsError otherwise (also
    for a value that is not one TOML literal, e.g. one holding a line break).
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise SolverSettingsError(
            f"--set expects key=value with a setting name as key, got {text!r}")
    raw = raw.strip()
    try:
        if "\n" in raw or "\r" in raw:
            raise tomllib.TOMLDecodeError("line break in the value")
        parsed = tomllib.loads(f"v = {raw}")
        if set(parsed) != {"v"}:
            raise tomllib.TOMLDecodeError("more than one value")
        return key, parsed["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        if _BARE_WORD.fullmatch(raw):
            return key, raw
        raise SolverSettingsError(f"--set {text!r}: {raw!r} is not a TOML value (numbers, "
                                  f"\"strings\", [lists], true/false)") from None


def load_settings_file(path: str | os.PathLike) -> dict[str, Any]:
    """Solver settings from a TOML file (top-level keys), or SolverSettingsError saying why
    the file cannot be used (missing, a directory, not UTF-8, not TOML)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise SolverSettingsError(f"config file {path} is a directory, not a TOML file")
        data = path.read_bytes()
    except OSError as exc:
        raise SolverSettingsError(f"cannot read config file {path}: "
                                  f"{exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SolverSettingsError(f"config file {path} is not UTF-8 text (byte {exc.start}: "
                                  f"{data[exc.start:exc.start + 1]!r}); TOML files are "
                                  "UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SolverSettingsError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise SolverSettingsError(f"config file {path} is nested too deeply") from None
