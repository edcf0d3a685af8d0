"""Solver settings from the command line and TOML files, and configuration comparison.

``--set key=value`` values are TOML literals (``n_cells=12``, ``'n_cells=[12,12,6]'``,
``linear_solver="gmres"``; a bare word such as ``linear_solver=gmres`` is taken as a string).
A ``--config`` TOML file holds the same keys at its top level; ``--set`` overrides the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from solvers.common.toml import parse_assignment, parse_assignments, read_toml

__all__ = ["differences", "parse_assignment", "resolve_overrides"]


def resolve_overrides(config_file: str | Path | None, assignments: list[str]) -> dict[str, Any]:
    """Solver-setting overrides: the config file's keys (:func:`solvers.common.toml.read_toml`),
    then each ``--set`` in order; ConfigError naming the bad file or value."""
    settings = read_toml(config_file) if config_file is not None else {}
    settings.update(parse_assignments(assignments))
    return settings


def differences(stored: Any, requested: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON-like configurations.

    Returns
    -------
    list of str
        One line per differing leaf, e.g. ``"solver.n_cells: file has 12, requested 13"``.
    """
    if isinstance(stored, dict) and isinstance(requested, dict):
        out = []
        for key in sorted(set(stored) | set(requested)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in stored:
                out.append(f"{name}: not in the file, requested {requested[key]!r}")
            elif key not in requested:
                out.append(f"{name}: file has {stored[key]!r}, not in the request")
            else:
                out += differences(stored[key], requested[key], name)
        return out
    if stored != requested:
        return [f"{prefix or 'configuration'}: file has {stored!r}, requested {requested!r}"]
    return []
