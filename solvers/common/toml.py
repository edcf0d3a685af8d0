"""The one TOML reader (config files) and the ``--set key=value`` parser (TOML literals)."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from solvers.errors import ConfigError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def read_toml(path: str | os.PathLike, error: type[ConfigError] = ConfigError
              ) -> dict[str, Any]:
    """The table of a TOML config file.

    Parameters
    ----------
    path : path
    error : ConfigError subclass
        Raised, naming the file and what is wrong with it (missing, a directory, not
        readable, not UTF-8, not TOML, nested too deeply).
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise error(f"config file {path} is a directory, not a TOML file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"config file {path}: no such file") from None
    except OSError as exc:
        raise error(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"config file {path} is not UTF-8 text (byte {exc.start}: "
                    f"{data[exc.start:exc.start + 1]!r}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise error(f"config file {path} is nested too deeply") from None


def parse_assignment(text: str, error: type[ConfigError] = ConfigError) -> tuple[str, Any]:
    """Split a command-line ``key=value`` setting and parse the value as a TOML literal.

    ``n_cells=12``, ``'n_cells=[12,12,6]'``, ``linear_solver="gmres"``; a bare word such as
    ``linear_solver=gmres`` is taken as a string. Raises ``error`` otherwise (also for a value
    that is not one TOML literal, e.g. one holding a line break).
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise error(f"--set expects key=value with a setting name as key, got {text!r}")
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
        raise error(f"--set {text!r}: {raw!r} is not a TOML value (numbers, \"strings\", "
                    "[lists], true/false)") from None


def parse_assignments(items: list[str], error: type[ConfigError] = ConfigError
                      ) -> dict[str, Any]:
    """``["key=value", ...]`` -> settings dict (values parsed as TOML literals)."""
    return dict(parse_assignment(item, error) for item in items)
