"""Training configuration: SPEC section 4 defaults per problem, overridable by a TOML file.

A ``train.toml`` may contain any of the sections and keys below; unknown sections or keys and
values of the wrong type are refused. Keys whose default is ``"auto"`` (they also accept the
value ``"auto"``, so the template below can be copied as it is) are resolved from the preset
(widths and budgets per problem: :data:`PROBLEM_DEFAULTS`, :data:`DEFAULT_PRESET_PROBLEM`; any
other problem gets the "unknown" entries) and from the facts the problem declares, which come
with the data (:attr:`datasets.split_data.SplitData.facts`: recorded by generate-dataset, else
the registered problem's): its periodic parameters, its default split and its training hints
(``standardize_inputs``, ``center_targets``, ``periodic_inputs``; where it declares none,
:data:`TRAINER_DEFAULTS`)::

    [model]
    architecture = "auto"            # "neural_ode" or "resnet" (slimTrain appendix B); auto:
                                     # the paper preset's Neural ODE, the default preset's
                                     # network of the problem (DCR: ResNet, others Neural ODE)
    width = "auto"                   # paper: 8 CDR, 16 DCR; default: 10 CDR, 64 DCR, others
                                     # from the data (16 for a ResNet chosen here)
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
                                     # surrogate. Default preset: the problem's declared
                                     # periodic parameters (DCR {2 = pi}, the angle, SPEC 2),
                                     # unless its periodic_inputs hint is false; paper: none
    levels = "auto"                  # [2, 4, 8] (Neural ODE), [8] (ResNet)
    dtype = "float64"                # of the network; the inner solve is always float64

    [normalization]
    standardize_inputs = "auto"      # the problem's hint (CDR false: inputs on the simplex,
                                     # ~1/55 each, used as they are, as in the paper), else true
    center_targets = "auto"          # the problem's hint (DCR true, SPEC 2), else false
    scale_targets = "auto"           # "global" (one scale: SPEC problems, paper preset) or
                                     # "per_output" (each output by its training std); default
                                     # preset on other data: per_output when the outputs'
                                     # standard deviations differ by more than
                                     # train.auto.SCALE_RATIO (issue 18)

    [loss]
    alpha1 = 1e-10
    alpha2 = 1e-10

    [split]                          # used only when the data file has no stored split
    fractions = "auto"               # the problem's default_split (CDR [0.5, 0.25, 0.25], DCR
                                     # [0.8, 0.1, 0.1]), else [0.5, 0.25, 0.25]
    seed = "auto"                    # the --seed value

    [gnvpro]                         # and the same keys in [gn]
    work_units_per_level = "auto"    # paper preset: 200 CDR, 400 DCR; a number, or a list with
                                     # one budget per level (default preset: see
                                     # DEFAULT_PRESET_PROBLEM
    carry_radius = "auto"            # GNvpro: start each level with the trust-region radius
                                     # the previous one ended with (default preset true)
    output_basis_tol = "auto"        # GNvpro only: fit the principal-component coefficients
                                     # of the targets, leaving out at most this relative
                                     # Frobenius norm (0 = all outputs; paper preset 0,
                                     # default preset 1e-5; issue 18)
    float32_features = "auto"        # GNvpro only: the network runs in float32 while training
                                     # (the inner solve stays float64); the selected model is
                                     # cast to model.dtype and W re-solved in float64 (1 WU).
                                     # Paper preset false; default preset see
                                     # DEFAULT_PRESET_PROBLEM
    time_budget = 0.0                # GNvpro only: wall seconds of the training (the
                                     # --time-budget option); > 0 chooses the width and the
                                     # seconds per level itself (train.budget) and ignores
                                     # model.width and work_units_per_level. 0 = off
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

    [slimtrain]                      # slimTrain (its own model: slimTrain section 4.2)
    architecture = "resnet"          # or "neural_ode" (then gamma, init_scale from [model])
    width = 16
    depth = 8                        # layers / time steps; final_time and dtype from [model]
    epochs = "auto"                  # the work units of the other methods: 300 CDR, 600 DCR
    batch_size = 10
    lr = 1e-2                        # ADAM on theta
    memory = 0                       # memory depth r
    regularization = "sgcv"          # or "fixed": Lambda_k = lambda_fixed at every step
    lambda_fixed = 1e-2
    lambda_min = 1e-8                # bounds of the sGCV search over log10 |Lambda|
    lambda_max = 1e4
    allow_negative = true            # also Lambda in [-s/2, -lambda_min], s = sum so far
    grid_points = 25
"""

from __future__ import annotations

import copy
import math
from typing import Any

from datasets.split_data import FALLBACK_FRACTIONS
from solvers.common.toml import read_toml as read_toml  # the config file reader
from solvers.errors import ConfigError
from solvers.facts import periodic_from_record, training_facts

AUTO = "auto"

_TR = {"work_units_per_level": AUTO, "r_max": 20, "krylov_tol": 1e-2, "max_iter": 10_000,
       "grad_tol": 0.0, "grad_rtol": 1e-10, "carry_radius": AUTO, "patience": AUTO,
       "min_improvement": 0.0}

DEFAULTS: dict[str, dict] = {
    "model": {"architecture": AUTO, "width": AUTO, "final_time": 4.0, "gamma": 1e-4,
              "init_scale": 1.0, "max_step_radius": AUTO, "periodic_inputs": AUTO,
              "levels": AUTO, "dtype": "float64"},
    "normalization": {"standardize_inputs": AUTO, "center_targets": AUTO,
                      "scale_targets": AUTO},
    "loss": {"alpha1": 1e-10, "alpha2": 1e-10},
    "split": {"fractions": AUTO, "seed": AUTO},
    "gnvpro": dict(_TR, output_basis_tol=AUTO, float32_features=AUTO, time_budget=0.0),
    "gn": dict(_TR),
    "lbfgsvpro": {"work_units_per_level": AUTO, "memory": 10, "max_iter": 10_000,
                  "grad_tol": 0.0, "grad_rtol": 1e-10},
    "adam": {"work_units_per_level": AUTO, "levels": AUTO, "lr": 1e-3, "batch_size": 2},
    "slimtrain": {"architecture": "resnet", "width": 16, "depth": 8, "epochs": AUTO,
                  "batch_size": 10, "lr": 1e-2, "memory": 0, "regularization": "sgcv",
                  "lambda_fixed": 1e-2, "lambda_min": 1e-8, "lambda_max": 1e4,
                  "allow_negative": True, "grid_points": 25},
}

_TYPES: dict[str, type[Any]] = {
    "architecture": str, "dtype": str, "width": int, "levels": list, "fractions": list,
    "seed": int, "standardize_inputs": bool, "center_targets": bool, "r_max": int,
    "max_iter": int, "memory": int, "batch_size": int,
    "depth": int, "epochs": int, "grid_points": int, "regularization": str,
    "allow_negative": bool,
    "carry_radius": bool, "patience": int, "periodic_inputs": dict, "scale_targets": str,
    "float32_features": bool,
}
_CHOICES = {"architecture": ("neural_ode", "resnet"), "dtype": ("float32", "float64"),
            "regularization": ("sgcv", "fixed"), "scale_targets": ("global", "per_output")}

#: ``--preset paper``'s sizes per problem (GNvpro table 2: width, work units per level);
#: "unknown" for every other problem
PROBLEM_DEFAULTS: dict[str, dict[str, Any]] = {
    "cdr": {"width": 8, "budget": 200},
    "dcr": {"width": 16, "budget": 400},
    "unknown": {"width": 8, "budget": 200},
}

#: the trainer's own choices where the problem declares no training hint (standardised
#: inputs, raw targets) and where neither the file nor the problem gives split fractions
TRAINER_DEFAULTS: dict[str, Any] = {"standardize_inputs": True, "center_targets": False,
                                    "fractions": list(FALLBACK_FRACTIONS)}

METHODS = ("gnvpro", "gn", "adam", "lbfgsvpro", "slimtrain")

#: Valid ranges of the numeric settings, by key (the same key in any section, e.g. ``r_max``
#: in [gnvpro] and [gn]; a ``section.key`` entry overrides it for one section): (lower, upper,
#: lower bound included, upper bound included); None = unbounded. Every number must be
#: finite, listed here or not; sizes (width, levels, r_max, samples) are bounded by the memory
#: estimate of :mod:`train.resources` once the data is read.
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "width": (1, None, True, False),
    "final_time": (0.0, None, False, False),
    "gamma": (0.0, None, True, False),
    "init_scale": (0.0, None, True, False),
    "levels": (1, None, True, False),            # each entry; the list must also increase
    "alpha1": (0.0, None, True, False),
    "alpha2": (0.0, None, True, False),
    "seed": (0, None, True, False),
    "work_units_per_level": (0.0, None, False, False),
    "r_max": (1, None, True, False),
    "krylov_tol": (0.0, 1.0, True, True),
    "max_iter": (1, None, True, False),
    "grad_tol": (0.0, None, True, False),
    "grad_rtol": (0.0, None, True, False),
    "memory": (1, None, True, False),
    "lr": (0.0, None, False, False),
    "batch_size": (1, None, True, False),
    "slimtrain.memory": (0, None, True, False),   # slimTrain's r: 0 = the current batch only
    "output_basis_tol": (0.0, 1.0, True, False),
    "time_budget": (0.0, None, True, False),
}


def value_range(section: str, key: str) -> tuple[float | None, float | None, bool, bool]:
    """The :data:`RANGES` entry of ``section.key`` (unbounded if none)."""
    return RANGES.get(f"{section}.{key}", RANGES.get(key, (None, None, True, True)))


def _range_text(lo, hi, lo_in: bool, hi_in: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>=' if lo_in else '>'} {lo:g}")
    if hi is not None:
        parts.append(f"{'<=' if hi_in else '<'} {hi:g}")
    return " and ".join(parts) or "finite"


def check_range(where: str, section: str, key: str, value: Any) -> Any:
    """Refuse non-finite numbers and values outside :data:`RANGES` (lists: each entry).

    Raises
    ------
    ConfigError
        Naming ``where`` (``source: section.key``), the value and the valid range.
    """
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and any(isinstance(v, bool) for v in value):
        raise ConfigError(f"{where} = {value!r}: expected numbers, not true/false")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if not math.isfinite(v):
            raise ConfigError(f"{where} = {value!r}: must be a finite number")
        lo, hi, lo_in, hi_in = value_range(section, key)
        if (lo is not None and (v < lo or (v == lo and not lo_in))) or (
                hi is not None and (v > hi or (v == hi and not hi_in))):
            what = "each entry must be" if isinstance(value, list) else "must be"
            raise ConfigError(f"{where} = {value!r}: {what} "
                              f"{_range_text(lo, hi, lo_in, hi_in)}")
    if key == "levels" and any(b <= a for a, b in zip(value, value[1:], strict=False)):
        raise ConfigError(f"{where} = {value!r}: the numbers of time steps must increase from "
                          "level to level (shallow to deep, e.g. [2, 4, 8])")
    return value


#: ``--preset paper``: GNvpro table 2 exactly as published (SPEC section 4, the paper code's
#: budgets, no initial rescaling, no encoding, fresh radius per level, fixed budgets)
PAPER_PRESET: dict[str, Any] = {"max_step_radius": 0.0, "periodic_inputs": False,
                                "carry_radius": False, "patience": 0, "output_basis_tol": 0.0,
                                "float32_features": False}

#: The default preset (best surrogate, issue 12): settings that differ from the paper's
#: (the stable start, max_step_radius, is per problem below: on CDR 800 it measured worse
#: test errors, on the DCR subset better ones; docs/training-quality.md)
DEFAULT_PRESET: dict[str, Any] = {"max_step_radius": 0.0, "periodic_inputs": True,
                                  "carry_radius": True, "patience": 0,
                                  "output_basis_tol": 1e-5}
#: ... and its per-problem values (budgets per level for GNvpro / full GN / L-BFGSvpro):
#: more work units on the coarse levels, where one costs 1/4 (d = 2) and 1/2 (d = 4) of the
#: finest level's (bench/bench_quality.py, docs/training-quality.md). DCR (issue 18,
#: docs/peers.md): a ResNet (8 layers) of width 64 at 4000 work units on one level, float32
#: features and the output basis; the ResNet beat the Neural ODE of the same width (2000 work
#: units: 0.0023-0.0024 in 35 s against 0.0035-0.0044 in 65 s, 2 threads), which beat width
#: 24 at 800 (0.0132), 48 at 2400 (0.0041-0.0046) and 80 at 1600 (0.0046). An explicit Neural
#: ODE gets the same 4000 work units spread over its levels. CDR: width 10 (test 0.0036,
#: median of seeds 0-4 0.0039) beat 8 (0.0040, median 0.0053), 12, 14; other problems: twice
#: CDR's budgets (on the 15 -> 10 oscillator of docs/peers.md the scale-free test error went
#: 0.283 -> 0.223 in 7.6 -> 15.2 s, past the MLP's 0.268 and the GP's 0.241; the KL example
#: stayed at 0.024)
DEFAULT_PRESET_PROBLEM: dict[str, dict[str, Any]] = {
    "cdr": {"width": 10, "budgets": [800.0, 600.0, 400.0], "max_step_radius": 0.0},
    "dcr": {"architecture": "resnet", "width": 64, "budgets": [4000.0], "max_step_radius": 2.0,
            "float32_features": True},
    "unknown": {"width": "data", "budgets": [1600.0, 1200.0, 800.0], "max_step_radius": 0.0},
}
#: the default preset's width on other problems: chosen from the data (train.auto)
DATA_WIDTH = "data"


def n_in_encoded(data: Any, periodic_inputs: dict | None) -> int | None:
    """Network inputs of ``data`` after the periodic encoding (None without data)."""
    if data is None:
        return None
    return int(data.n_in) + len(periodic_inputs or {})
PRESETS = ("default", "paper")


def _check_value(where: str, section: str, key: str, value: Any) -> Any:
    expected = _TYPES.get(key, float)
    if value == AUTO:
        raise ConfigError(f"{where}: {AUTO!r} is not a value of this key (its default is not "
                          f"{AUTO!r}): write the value or leave the key out")
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
        return check_range(where, section, key, float(value))
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
    return check_range(where, section, key, value)


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
            if value == AUTO and DEFAULTS[section][key] == AUTO:
                cfg[section][key] = AUTO      # as shown in the template: the default
                continue
            cfg[section][key] = _check_value(f"{source}: {section}.{key}", section, key, value)
    _check_slimtrain(cfg["slimtrain"], source)
    return cfg


def _check_slimtrain(st: dict, source: str) -> None:
    """Ranges of the [slimtrain] settings."""
    positive = {"width": 1, "depth": 1, "batch_size": 1, "grid_points": 2}
    for key, low in positive.items():
        if st[key] < low:
            raise ConfigError(f"{source}: slimtrain.{key} must be >= {low}, got {st[key]!r}")
    if st["epochs"] != AUTO and st["epochs"] < 1:
        raise ConfigError(f"{source}: slimtrain.epochs must be >= 1 (0 would save an untrained "
                          f"model), got {st['epochs']!r}")
    if st["memory"] < 0:
        raise ConfigError(f"{source}: slimtrain.memory must be >= 0, got {st['memory']!r}")
    for key in ("lr",):
        if not st[key] >= 0:
            raise ConfigError(f"{source}: slimtrain.{key} must be >= 0, got {st[key]!r}")
    for key in ("lambda_fixed", "lambda_min", "lambda_max"):
        if not 0 < st[key] < float("inf"):
            raise ConfigError(f"{source}: slimtrain.{key} must be a positive finite number, "
                              f"got {st[key]!r}")
    if st["lambda_min"] > st["lambda_max"]:
        raise ConfigError(f"{source}: slimtrain.lambda_min ({st['lambda_min']!r}) must not "
                          f"exceed slimtrain.lambda_max ({st['lambda_max']!r})")


def problem_choices(facts: dict[str, Any]) -> dict[str, Any]:
    """``standardize_inputs``, ``center_targets`` and ``fractions`` from a problem's training
    facts (:attr:`datasets.split_data.SplitData.facts`), :data:`TRAINER_DEFAULTS` where it
    declares none; and its ``periodic_inputs`` ({"column": period}) and ``periodic_hint``."""
    hints = facts.get("training_hints") or {}
    out = {key: hints[key] if hints.get(key) is not None else TRAINER_DEFAULTS[key]
           for key in ("standardize_inputs", "center_targets")}
    split = facts.get("default_split")
    out["fractions"] = [float(f) for f in split] if split else list(TRAINER_DEFAULTS["fractions"])
    out["periodic_inputs"] = {str(k): float(p) for k, p in periodic_from_record(facts).items()}
    out["periodic_hint"] = hints.get("periodic_inputs")
    return out


def resolve_config(cfg: dict, problem: str, seed: int, preset: str = "default",
                   data: Any = None, facts: dict[str, Any] | None = None) -> dict:
    """Replace ``"auto"`` values by the defaults of ``problem``, its facts and ``preset``.

    Parameters
    ----------
    problem : str
        The data's problem name (presets per problem; any other name gets "unknown"'s).
    preset : "default" or "paper"
        ``"paper"``: GNvpro table 2 as published (SPEC section 4); ``"default"``: the best
        surrogate (stable initialisation, problem-declared encodings, radius continuation,
        budgets moved towards the cheaper coarse levels; issue 12).
    data : datasets.split_data.SplitData, optional
        The data, for the data-driven defaults of :mod:`train.auto` (the default preset on
        problems other than CDR and DCR: target scaling and width from the training split;
        without it ``scale_targets`` is ``"global"`` and the width the fixed default).
    facts : dict, optional
        The problem's training facts (periodic parameters, default split, training hints);
        default: those that come with ``data`` (:attr:`datasets.split_data.SplitData.facts`)
        if any, else the registered problem's (:func:`solvers.facts.training_facts`), none
        for another name.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    cfg = copy.deepcopy(cfg)
    key = problem if problem in PROBLEM_DEFAULTS else "unknown"
    pd = dict(PROBLEM_DEFAULTS[key])
    if facts is None:
        facts = getattr(data, "facts", None) or training_facts(problem)
    pd.update(problem_choices(facts))
    switches = dict(PAPER_PRESET if preset == "paper" else DEFAULT_PRESET)
    if pd["periodic_hint"] is not None and preset == "default":
        switches["periodic_inputs"] = bool(pd["periodic_hint"])
    if preset == "default":
        pd["width"] = DEFAULT_PRESET_PROBLEM[key]["width"]
        pd["budget"] = list(DEFAULT_PRESET_PROBLEM[key]["budgets"])
        switches["max_step_radius"] = DEFAULT_PRESET_PROBLEM[key]["max_step_radius"]
    model = cfg["model"]
    if model["architecture"] == AUTO:
        model["architecture"] = DEFAULT_PRESET_PROBLEM[key].get("architecture", "neural_ode") \
            if preset == "default" else "neural_ode"
    resnet = model["architecture"] == "resnet"
    # the 16 of an explicitly chosen ResNet, unless the preset's own network is a ResNet
    preset_resnet = preset == "default" and \
        DEFAULT_PRESET_PROBLEM[key].get("architecture") == "resnet"
    if model["max_step_radius"] == AUTO:
        model["max_step_radius"] = switches["max_step_radius"]
    if model["periodic_inputs"] == AUTO:
        model["periodic_inputs"] = dict(pd["periodic_inputs"]) if switches["periodic_inputs"] \
            else {}
    for method in ("gnvpro", "gn"):
        for k in ("carry_radius", "patience"):
            if cfg[method][k] == AUTO:
                cfg[method][k] = switches[k]
    if cfg["gnvpro"]["output_basis_tol"] == AUTO:
        cfg["gnvpro"]["output_basis_tol"] = switches["output_basis_tol"]
    if cfg["gnvpro"]["float32_features"] == AUTO:
        cfg["gnvpro"]["float32_features"] = bool(
            preset == "default" and DEFAULT_PRESET_PROBLEM[key].get("float32_features", False))
    if cfg["normalization"]["scale_targets"] == AUTO:
        from train.auto import target_scaling

        cfg["normalization"]["scale_targets"] = target_scaling(
            data.c["train"] if preset == "default" and key == "unknown" and data is not None
            else None)
    if model["levels"] == AUTO:
        model["levels"] = [8] if resnet else [2, 4, 8]
    if model["width"] == AUTO:
        model["width"] = 16 if resnet and not preset_resnet else pd["width"]
        if model["width"] == DATA_WIDTH:
            from train.auto import default_width

            model["width"] = default_width(data, cfg["normalization"]["scale_targets"],
                                           n_in_encoded(data, model["periodic_inputs"]),
                                           model["levels"][-1])
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
    if cfg["slimtrain"]["epochs"] == AUTO:          # 2 work units per epoch: the paper
        paper = PROBLEM_DEFAULTS.get(problem, PROBLEM_DEFAULTS["unknown"])["budget"]
        cfg["slimtrain"]["epochs"] = int(paper * len(model["levels"]) // 2)  # paper budget
    return cfg


def slimtrain_model_config(cfg: dict) -> dict:
    """The resolved configuration with [model] replaced by slimTrain's network (section 4.2):
    architecture, width and depth from [slimtrain], a single level of ``depth`` steps."""
    cfg = copy.deepcopy(cfg)
    st = cfg["slimtrain"]
    cfg["model"].update(architecture=st["architecture"], width=st["width"],
                        levels=[st["depth"]])
    return cfg
