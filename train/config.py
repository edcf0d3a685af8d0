"""Training configuration: SPEC section 4 defaults per problem, overridable by a TOML file.

A ``train.toml`` may contain any of the sections and keys below; unknown sections or keys and
values of the wrong type are refused. Keys whose default is ``"auto"`` are resolved from the
detected problem (``cdr``, ``dcr``; anything else gets the CDR sizes with standardised
inputs)::

    [model]
    architecture = "neural_ode"      # or "resnet" (slimTrain appendix B)
    width = "auto"                   # 8 CDR, 16 DCR (16 for the ResNet)
    final_time = 4.0
    gamma = 1e-4                     # anti-symmetric layer shift
    init_scale = 1.0                 # Neural ODE: K starts as N(0, init_scale^2 / width). With
                                     # 1.0, K - K^T has |eigenvalues| ~ 2, so the 2-step level
                                     # (h = 2) is outside RK4's stability region and the loss
                                     # jumps at each prolongation; 0.1 makes the levels continue
                                     # smoothly, but generalised worse on the CDR data
    max_step_radius = "auto"         # Neural ODE: scale the initial K down so that
                                     # h * max rho(K - K^T) <= this on the first level (RK4 is
                                     # stable on the imaginary axis up to 2.83); 0 = off.
                                     # Default preset: DCR 2.0, CDR 0 (measured); paper 0
    periodic_inputs = "auto"         # {column index = period}: encode y_k as
                                     # (cos 2 pi y_k / P, sin 2 pi y_k / P) inside the saved
                                     # surrogate. Default preset: DCR {2 = pi} (the angle,
                                     # SPEC 2), none otherwise; paper preset: none
    levels = "auto"                  # [2, 4, 8] (Neural ODE), [8] (ResNet)
    dtype = "float64"                # of the network; the inner solve is always float64

    [normalization]
    standardize_inputs = "auto"      # false for CDR (inputs on the simplex, ~1/55 each, used
                                     # as they are, as in the paper), true otherwise
    center_targets = "auto"          # true for DCR (SPEC section 2), false otherwise

    [loss]
    alpha1 = 1e-10
    alpha2 = 1e-10

    [split]                          # used only when the data file has no stored split
    fractions = "auto"               # [0.5, 0.25, 0.25]; DCR [0.8, 0.1, 0.1]
    seed = "auto"                    # the --seed value

    [gnvpro]                         # and the same keys in [gn]
    work_units_per_level = "auto"    # paper preset: 200 CDR, 400 DCR; a number, or a list with
                                     # one budget per level (default preset: see
                                     # DEFAULT_PRESET_PROBLEM)
    carry_radius = "auto"            # GNvpro: start each level with the trust-region radius
                                     # the previous one ended with (default preset true)
    patience = "auto"                # GNvpro: stop a level after this many iterates without
                                     # validation improvement (0 = off; default preset 0)
    min_improvement = 0.0            # relative improvement that resets the patience count
    r_max = 20
    krylov_tol = 1e-2
    max_iter = 10000
    grad_tol = 0.0
    grad_rtol = 1e-10

    [lbfgsvpro]
    work_units_per_level = "auto"
    memory = 10
    max_iter = 10000
    grad_tol = 0.0
    grad_rtol = 1e-10

    [adam]
    work_units_per_level = "auto"    # the total of the other methods (3 levels x budget)
    levels = "auto"                  # the finest level only, as in the paper
    lr = 1e-3
    batch_size = 2
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

AUTO = "auto"

_TR = {"work_units_per_level": AUTO, "r_max": 20, "krylov_tol": 1e-2, "max_iter": 10_000,
       "grad_tol": 0.0, "grad_rtol": 1e-10, "carry_radius": AUTO, "patience": AUTO,
       "min_improvement": 0.0}

DEFAULTS: dict[str, dict] = {
    "model": {"architecture": "neural_ode", "width": AUTO, "final_time": 4.0, "gamma": 1e-4,
              "init_scale": 1.0, "max_step_radius": AUTO, "periodic_inputs": AUTO,
              "levels": AUTO, "dtype": "float64"},
    "normalization": {"standardize_inputs": AUTO, "center_targets": AUTO},
    "loss": {"alpha1": 1e-10, "alpha2": 1e-10},
    "split": {"fractions": AUTO, "seed": AUTO},
    "gnvpro": dict(_TR),
    "gn": dict(_TR),
    "lbfgsvpro": {"work_units_per_level": AUTO, "memory": 10, "max_iter": 10_000,
                  "grad_tol": 0.0, "grad_rtol": 1e-10},
    "adam": {"work_units_per_level": AUTO, "levels": AUTO, "lr": 1e-3, "batch_size": 2},
}

_TYPES: dict[str, type | tuple[type, ...]] = {
    "architecture": str, "dtype": str, "width": int, "levels": list, "fractions": list,
    "seed": int, "standardize_inputs": bool, "center_targets": bool, "r_max": int,
    "max_iter": int, "memory": int, "batch_size": int,
    "carry_radius": bool, "patience": int, "periodic_inputs": dict,
}
_CHOICES = {"architecture": ("neural_ode", "resnet"), "dtype": ("float32", "float64")}

PROBLEM_DEFAULTS = {
    "cdr": {"width": 8, "standardize_inputs": False, "center_targets": False, "budget": 200,
            "fractions": [0.5, 0.25, 0.25]},
    "dcr": {"width": 16, "standardize_inputs": True, "center_targets": True, "budget": 400,
            "fractions": [0.8, 0.1, 0.1]},
    "unknown": {"width": 8, "standardize_inputs": True, "center_targets": False, "budget": 200,
                "fractions": [0.5, 0.25, 0.25]},
}

#: Problem-declared periodic inputs {column: period}: the DCR orientation angle y3 (column 2),
#: the conductivity is pi-periodic in it (SPEC section 2)
PERIODIC_INPUTS = {"cdr": {}, "dcr": {"2": 3.141592653589793}, "unknown": {}}

#: ``--preset paper``: GNvpro table 2 exactly as published (SPEC section 4, the paper code's
#: budgets, no initial rescaling, no encoding, fresh radius per level, fixed budgets)
PAPER_PRESET = {"max_step_radius": 0.0, "periodic_inputs": False, "carry_radius": False,
                "patience": 0}

#: The default preset (best surrogate, issue 12): settings that differ from the paper's
#: (the stable start, max_step_radius, is per problem below: on CDR 800 it measured worse
#: test errors, on the DCR subset better ones; README.quality.md)
DEFAULT_PRESET = {"max_step_radius": 0.0, "periodic_inputs": True, "carry_radius": True,
                  "patience": 0}
#: ... and its per-problem values (budgets per level for GNvpro / full GN / L-BFGSvpro):
#: more work units on the coarse levels, where one costs 1/4 (d = 2) and 1/2 (d = 4) of the
#: finest level's (bench/bench_quality.py, README.quality.md)
DEFAULT_PRESET_PROBLEM = {
    "cdr": {"width": 8, "budgets": [800.0, 600.0, 400.0], "max_step_radius": 0.0},
    "dcr": {"width": 16, "budgets": [600.0, 400.0, 300.0], "max_step_radius": 2.0},
    "unknown": {"width": 8, "budgets": [800.0, 600.0, 400.0], "max_step_radius": 0.0},
}
PRESETS = ("default", "paper")

METHODS = ("gnvpro", "gn", "adam", "lbfgsvpro")


class ConfigError(ValueError):
    """Invalid training configuration (unknown key, wrong type or value)."""


def read_toml(path: str | Path) -> dict:
    """Parse a TOML file, with errors as :class:`ConfigError`."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def _check_value(where: str, key: str, value):
    expected = _TYPES.get(key, float)
    if value == AUTO:
        raise ConfigError(f"{where}: write the value instead of {AUTO!r} or leave the key out")
    if key == "work_units_per_level" and isinstance(value, list):
        if not value or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                and v > 0 for v in value):
            raise ConfigError(f"{where}: expected a positive number or a list of them")
        return [float(v) for v in value]
    if key in ("patience", "max_step_radius", "min_improvement") and not isinstance(
            value, bool) and isinstance(value, int | float) and value < 0:
        raise ConfigError(f"{where}: must be >= 0, got {value!r}")
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{where}: expected {expected.__name__}, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{where}: must be one of {list(_CHOICES[key])}, got {value!r}")
    if key == "periodic_inputs":
        return _check_periods(where, value)
    if key == "levels" and (not value or not all(isinstance(v, int) and v > 0 for v in value)):
        raise ConfigError(f"{where}: expected a non-empty list of positive integers")
    if key == "fractions" and (len(value) != 3 or not all(
            isinstance(v, int | float) and v >= 0 for v in value) or sum(value) > 1 + 1e-12):
        raise ConfigError(f"{where}: expected 3 non-negative fractions with sum <= 1")
    return value


def _check_periods(where: str, value: dict) -> dict:
    out = {}
    for k, p in value.items():
        if not str(k).isdigit():
            raise ConfigError(f"{where}: keys are 0-based input column indices, got {k!r}")
        if isinstance(p, bool) or not isinstance(p, int | float) or not p > 0:
            raise ConfigError(f"{where}: the period of input {k} must be a positive number, "
                              f"got {p!r}")
        out[str(int(k))] = float(p)
    return out


def merge_config(user: dict, source: str = "config") -> dict:
    """Defaults overridden by ``user`` (nested dict as read from TOML), validated."""
    cfg = copy.deepcopy(DEFAULTS)
    for section, values in user.items():
        if section not in cfg:
            raise ConfigError(f"{source}: unknown section [{section}] (known: "
                              f"{', '.join(cfg)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in values.items():
            if key not in cfg[section]:
                raise ConfigError(f"{source}: unknown key {section}.{key} (known: "
                                  f"{', '.join(cfg[section])})")
            cfg[section][key] = _check_value(f"{source}: {section}.{key}", key, value)
    return cfg


def resolve_config(cfg: dict, problem: str, seed: int, preset: str = "default") -> dict:
    """Replace ``"auto"`` values by the defaults of ``problem`` and ``preset``.

    Parameters
    ----------
    preset : "default" or "paper"
        ``"paper"``: GNvpro table 2 as published (SPEC section 4); ``"default"``: the best
        surrogate (stable initialisation, problem-declared encodings, radius continuation,
        budgets rebalanced towards the finest level; issue 12).
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    cfg = copy.deepcopy(cfg)
    key = problem if problem in PROBLEM_DEFAULTS else "unknown"
    pd = dict(PROBLEM_DEFAULTS[key])
    switches = dict(PAPER_PRESET if preset == "paper" else DEFAULT_PRESET)
    if preset == "default":
        pd["width"] = DEFAULT_PRESET_PROBLEM[key]["width"]
        pd["budget"] = list(DEFAULT_PRESET_PROBLEM[key]["budgets"])
        switches["max_step_radius"] = DEFAULT_PRESET_PROBLEM[key]["max_step_radius"]
    resnet = cfg["model"]["architecture"] == "resnet"
    model = cfg["model"]
    if model["max_step_radius"] == AUTO:
        model["max_step_radius"] = switches["max_step_radius"]
    if model["periodic_inputs"] == AUTO:
        model["periodic_inputs"] = dict(PERIODIC_INPUTS[key]) if switches["periodic_inputs"] \
            else {}
    for method in ("gnvpro", "gn"):
        for k in ("carry_radius", "patience"):
            if cfg[method][k] == AUTO:
                cfg[method][k] = switches[k]
    if model["width"] == AUTO:
        model["width"] = 16 if resnet else pd["width"]
    if model["levels"] == AUTO:
        model["levels"] = [8] if resnet else [2, 4, 8]
    for key in ("standardize_inputs", "center_targets"):
        if cfg["normalization"][key] == AUTO:
            cfg["normalization"][key] = pd[key]
    if cfg["split"]["fractions"] == AUTO:
        cfg["split"]["fractions"] = list(pd["fractions"])
    if cfg["split"]["seed"] == AUTO:
        cfg["split"]["seed"] = seed
    budget = pd["budget"]
    if isinstance(budget, list) and len(budget) != len(model["levels"]):
        budget = sum(budget) / len(model["levels"])      # custom levels: same total
    for method in ("gnvpro", "gn", "lbfgsvpro"):
        if cfg[method]["work_units_per_level"] == AUTO:
            cfg[method]["work_units_per_level"] = list(budget) if isinstance(budget, list) \
                else float(budget)
    adam = cfg["adam"]
    if adam["levels"] == AUTO:
        adam["levels"] = [model["levels"][-1]]
    if adam["work_units_per_level"] == AUTO:
        total = sum(budget) if isinstance(budget, list) else budget * len(model["levels"])
        adam["work_units_per_level"] = float(total / len(adam["levels"]))
    for method in ("gnvpro", "gn", "lbfgsvpro", "adam"):
        wu, lv = cfg[method]["work_units_per_level"], cfg[method].get("levels", model["levels"])
        if isinstance(wu, list) and len(wu) != len(lv):
            raise ConfigError(f"{method}.work_units_per_level: {len(wu)} budgets for "
                              f"{len(lv)} levels {lv}")
    return cfg
