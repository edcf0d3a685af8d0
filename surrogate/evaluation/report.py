"""The evaluation report (rank 0): errors of the surrogate on the fresh data and on the
training splits, the training-box check, the cost, figures, ``report.json`` and ``report.md``.

Error definition (SPEC section 4, as in the training summary, :mod:`surrogate.metrics`): per
sample ``||c_pred - c|| / ||c - c_shift||`` in physical units, ``c_shift`` the training mean
when the model centres its targets (DCR, SPEC section 2), else 0.

datasets is imported inside the functions, so that importing this module stays free of it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from solvers.common.atomic import write_text_atomic
from solvers.common.cli import DISK_FULL
from surrogate import load
from surrogate.errors import EvaluationError, ReportWriteError
from surrogate.evaluation.plots import write_figures
from surrogate.evaluation.request import EvaluationRequest, Plan
from surrogate.evaluation.text import markdown
from surrogate.evaluation.uncertainty import FIGURE as CALIBRATION_FIGURE
from surrogate.evaluation.uncertainty import plot_calibration, uncertainty_report
from surrogate.metadata import (
    ParameterBox,
    load_training_split,
    parameter_box,
    read_metadata,
    training_file,
)
from surrogate.metrics import (
    SCALE_FREE_DEFINITION,
    SPLITS,
    conditioning,
    conditioning_note,
    error_stats,
    mean_std,
    output_statistics,
    per_observable,
    relative_errors,
    scale_free_errors,
)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
#: number of worst samples listed in the report
N_WORST = 5
#: repetitions of the surrogate timing (the median is reported)
TIMING_REPEATS = 20
#: the report's ``error_definition`` (worded for evaluation reports)
ERROR_DEFINITION = ("||c_pred - c|| / ||c - c_shift|| per sample, physical units; c_shift = "
                    "training mean if the model centres its targets (DCR), else 0")


def write_report(request: EvaluationRequest, plan_: Plan) -> dict[str, Any]:
    """Evaluate the surrogate on ``plan_.fresh_path`` and write the report (rank 0 only).

    Returns
    -------
    dict
        The contents of ``report.json`` (before NaN/inf become null).

    Raises
    ------
    EvaluationError
        The fresh file is unreadable or holds no successfully solved sample.
    """
    meta = read_metadata(request.model_dir)
    device = torch.device(plan_.device)
    surrogate = load(request.model_dir, device=device)
    model = surrogate.torch_model       # an ensemble's: predict() is the members' mean
    norm = model.normalizer
    shift = norm.c_shift.cpu().numpy().astype(np.float64) if norm.center_targets else None
    ds, fresh = _fresh_samples(plan_)
    idx, y, c = fresh["idx"], fresh["y"], fresh["c"]
    pred = model.predict(y)    # no out-of-box warning: the report counts those per parameter
    err = relative_errors(pred, c, shift)
    obs = per_observable(pred, c, shift)
    split = load_training_split(meta)
    split_stats, split_errs = _split_errors(split, model, shift)
    names = [str(n) for n in ds["parameter"].values]
    cost = _cost(model, y, device, ds, idx, meta)  # timed before any file is written
    coords = {k: np.asarray(ds[k].values) for k in ds.coords
              if k not in ("sample", "parameter", "observable")}
    with _report_files(request, plan_):
        request.out.mkdir(parents=True, exist_ok=True)
        figures = write_figures(request.out, problem=plan_.problem, c=c, pred=pred, err=err,
                                split_errors=split_errs, coords=coords, sample_ids=idx,
                                shift=shift)
        if surrogate.has_std:           # ensembles: coverage, rank correlation, reliability
            unc, unc_arrays = uncertainty_report(surrogate, y, c, shift, split)
            plot_calibration(unc, unc_arrays, request.out / CALIBRATION_FIGURE,
                             title=f"{plan_.problem}: calibration on {len(y)} fresh samples")
            figures["calibration"] = CALIBRATION_FIGURE
    report = {
        "model": str(request.model_dir),
        "problem": plan_.problem,
        "fresh_data": str(plan_.fresh_path),
        "mode": "solved" if plan_.solve else "data",
        "seed": request.seed if plan_.solve else _int_or_none(ds.attrs.get("seed")),
        "n_fresh": int(idx.size),
        "n_failed": fresh["n_failed"],
        "n_pending": fresh["n_pending"],
        "error_definition": ERROR_DEFINITION,
        "fresh": error_stats(err),
        "splits": split_stats,
        "per_sample": {"sample": idx.tolist(), "error": err.tolist()},
        "per_observable": {"rmse": obs["rmse"].tolist(), "relative": obs["relative"].tolist(),
                           "coords": {k: v.tolist() for k, v in coords.items()}},
        "worst": worst_samples(err, idx, y, names),
        "outside_training_box": outside_box(parameter_box(meta, split), y, err, names),
        "cost": cost,
        "figures": figures,
        "scale_free": _scale_free(split, model, pred, c),
        "conditioning": conditioning(c, shift),
        "notes": plan_.notes + [n for n in [conditioning_note("fresh", conditioning(c, shift))]
                                if n],
        **({"uncertainty": unc} if surrogate.has_std else {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with _report_files(request, plan_):
        write_text_atomic(request.out / REPORT_JSON,
                          json.dumps(_finite(report), indent=2) + "\n")
        write_text_atomic(request.out / REPORT_MD, markdown(report))
    return report


@contextlib.contextmanager
def _report_files(request: EvaluationRequest, plan_: Plan) -> Iterator[None]:
    """Turn a failed write of the report or a figure (disk full, ``ulimit -f``, permissions)
    into a :class:`~surrogate.errors.ReportWriteError` saying what is kept."""
    try:
        yield
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else f"{request.out}: "
        kept = (f"the fresh solves in {plan_.fresh_path} are kept, so the same command "
                "solves nothing again" if plan_.solve else "nothing was solved")
        hint = "free some space and run the same command again" if exc.errno in DISK_FULL \
            else "fix the folder and run the same command again"
        raise ReportWriteError(f"cannot write the report: {where}{exc.strerror or exc} (files "
                               f"are written atomically: none is torn); {kept}: "
                               f"{hint}") from None


def _fresh_samples(plan_: Plan) -> tuple[Any, dict[str, Any]]:
    """The fresh dataset and its successfully solved samples.

    Returns
    -------
    ds : xarray.Dataset
    fresh : dict
        ``idx`` (n,) indices in the file, ``y`` (n, p), ``c`` (n, m) float64, ``n_failed``
        and ``n_pending`` counts.
    """
    from datasets import DatasetFileError, open_dataset

    try:
        ds = open_dataset(plan_.fresh_path, include_failed=True)
    except DatasetFileError as exc:
        raise EvaluationError(str(exc)) from None
    status = ds["status"].values if "status" in ds else np.full(ds.sizes["sample"], "ok")
    y_all = np.asarray(ds["y"].values, dtype=np.float64)
    c_all = np.asarray(ds["c"].values, dtype=np.float64)
    ok = (status == "ok") & np.isfinite(c_all).all(axis=1)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        raise EvaluationError(f"{plan_.fresh_path}: no successfully solved sample to evaluate")
    return ds, {"idx": idx, "y": y_all[idx], "c": c_all[idx],
                "n_failed": int(np.count_nonzero(status == "failed")),
                "n_pending": int(np.count_nonzero(status == "pending"))}


def _split_errors(split: Any | None, model: Any, shift: np.ndarray | None
                  ) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Per-split error statistics ({split: mean, std, n}) and per-sample errors of the
    training data (:class:`datasets.split_data.SplitData`, or None when the file is gone)."""
    stats: dict[str, dict] = {}
    errs: dict[str, np.ndarray] = {}
    if split is None:
        return stats, errs
    for s in SPLITS:
        if split.y[s].shape[0] == 0:
            continue
        err = relative_errors(model.predict(split.y[s]), split.c[s], shift)
        errs[s] = err
        stats[s] = mean_std(err)
    return stats, errs


def _scale_free(split: Any | None, model: Any, pred: np.ndarray, c: np.ndarray
                ) -> dict[str, Any]:
    """Scale-free figures (:data:`surrogate.metrics.SCALE_FREE_DEFINITION`) of the fresh data
    (pred, c: (n, m)) and of the training splits, standardised by the training split's
    statistics (by the fresh data's own when the training file is gone)."""
    stats = output_statistics(split.c["train"] if split is not None else c)
    out: dict[str, Any] = {"definition": SCALE_FREE_DEFINITION,
                           "standardisation": "training split" if split is not None
                           else "fresh data (training file not found)",
                           "fresh": scale_free_errors(pred, c, *stats)}
    if split is not None:
        for s in SPLITS:
            if split.y[s].shape[0]:
                out[s] = scale_free_errors(model.predict(split.y[s]), split.c[s], *stats)
    return out


def worst_samples(err: np.ndarray, idx: np.ndarray, y: np.ndarray, names: list[str],
                  n: int = N_WORST) -> list[dict[str, Any]]:
    """The ``n`` largest errors (n,) with their sample index (in the file) and parameters
    (y: (n, p), physical units), largest first."""
    order = np.argsort(err)[::-1][:n]
    return [{"sample": int(idx[k]), "error": float(err[k]),
             "parameters": {name: float(v) for name, v in zip(names, y[k], strict=True)}}
            for k in order]


def outside_box(box: ParameterBox | None, y: np.ndarray, err: np.ndarray, names: list[str]
                ) -> dict[str, Any] | None:
    """Fresh samples (y: (n, p)) outside the training box, per parameter, and the errors
    (n,) inside vs outside; None when the box is unknown."""
    if box is None:
        return None
    below, above = y < box.lower, y > box.upper
    out_any = (below | above).any(axis=1)
    return {
        "box_source": box.source,
        "n_samples_outside": int(out_any.sum()),
        "per_parameter": {name: {"lower": float(box.lower[j]), "upper": float(box.upper[j]),
                                 "n_below": int(below[:, j].sum()),
                                 "n_above": int(above[:, j].sum())}
                          for j, name in enumerate(names)},
        "error_inside": error_stats(err[~out_any]),
        "error_outside": error_stats(err[out_any]),
    }


# ------------------------------------------------------------------------- cost
def time_surrogate(model: Any, y: np.ndarray, device: torch.device,
                   repeats: int = TIMING_REPEATS) -> tuple[float, float]:
    """Median seconds of one single-sample prediction and per sample of a batched one.

    Parameters
    ----------
    model : SeparableModel
        Anything with ``predict(y) -> c``.
    y : numpy.ndarray, shape (n, p)
        Inputs; the single-sample timing cycles through its rows.
    device : torch.device
        The model's device (CUDA timings synchronise).
    """
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model.predict(y[:1])
    model.predict(y)  # warm-up (allocations, CUDA kernels)
    single, batched = [], []
    for r in range(repeats):
        row = y[r % len(y)][None, :]
        sync()
        t0 = time.perf_counter()
        model.predict(row)
        sync()
        single.append(time.perf_counter() - t0)
    for _ in range(max(3, repeats // 4)):
        sync()
        t0 = time.perf_counter()
        model.predict(y)
        sync()
        batched.append((time.perf_counter() - t0) / len(y))
    return float(np.median(single)), float(np.median(batched))


def _cost(model: Any, y: np.ndarray, device: torch.device, ds: Any, idx: np.ndarray,
          meta: dict[str, Any]) -> dict[str, Any]:
    """The report's ``cost`` entry: median PDE solve time (seconds) of the fresh samples
    ``idx`` and of the training file, surrogate timings and speed-ups."""
    single, batched = time_surrogate(model, y, device)
    solve_time = (np.asarray(ds["solve_time"].values, dtype=np.float64)[idx]
                  if "solve_time" in ds else np.array([]))
    pde = float(np.median(solve_time)) if solve_time.size and np.all(np.isfinite(solve_time)) \
        else float("nan")
    return {"pde_seconds_per_solve": pde, "surrogate_seconds_single": single,
            "surrogate_seconds_per_sample_batched": batched,
            "speedup_single": pde / single, "speedup_batched": pde / batched,
            "pde_seconds_per_solve_training_data": _training_solve_time(meta),
            "device": str(device), "batch_size": int(len(y)),
            "ranks_per_solve": int(ds.attrs.get("ranks_per_sample", 1))
            if "ranks_per_sample" in ds.attrs else None}


def _training_solve_time(meta: dict[str, Any]) -> float | None:
    """Median seconds per solve recorded in the training file (a reference for the fresh
    solves' timing, which depends on the machine's load), or None."""
    path = training_file(meta)
    if path is None:
        return None
    from datasets import open_dataset

    ds = open_dataset(path)
    if "solve_time" not in ds or ds.sizes["sample"] == 0:
        return None
    return float(np.median(ds["solve_time"].values))


# ------------------------------------------------------------------------- JSON
def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf floats become None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
