"""Solver settings from the command line and TOML files, and configuration comparison.

``--set key=value`` values are TOML literals (``n_cells=12``, ``'n_cells=[12,12,6]'``,
``linear_solver="gmres"``; a bare word such as ``linear_solver=gmres`` is taken as a string).
A ``--config`` TOML file holds the same keys at its top level; ``--set`` overrides the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets.errors import ConfigError
from solvers.base import SolverSettingsError, load_settings_file
from solvers.base import parse_assignment as solver_parse_assignment


def parse_assignment(text: str) -> tuple[str, Any]:
    """Split ``key=value`` and parse the value as a TOML literal (see
    :func:`solvers.base.parse_assignment`)."""
    try:
        return solver_parse_assignment(text)
    except SolverSettingsError as exc:
        raise ConfigError(str(exc)) from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Solver settings from a TOML file (top-level keys); ConfigError if the file is missing,
    a folder, not UTF-8 or not TOML (see :func:`solvers.base.load_settings_file`)."""
    try:
        return load_settings_file(path)
    except SolverSettingsError as exc:
        raise ConfigError(str(exc)) from None


def resolve_overrides(config_file: str | Path | None, assignments: list[str]) -> dict[str, Any]:
    """Solver-setting overrides: the config file's keys, then each ``--set`` in order."""
    settings = load_config_file(config_file) if config_file is not None else {}
    for text in assignments:
        key, value = parse_assignment(text)
        settings[key] = value
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
