"""Evaluation of a trained surrogate against fresh PDE solves (``evaluate-surrogate``).

The fresh parameters come from the training data's own sampler and solver settings, read from
the provenance in the model's ``metadata.json`` (``training.data.attrs``: ``problem``, the
resolved ``config`` JSON with the solver settings, ``seed``, ``n_samples``). Sample ``i`` of a
dataset with seed ``s`` has the parameters ``solver.sample_parameters(default_rng([s, i]))``
(:mod:`datasets.sampling`), so

* the training seed would reproduce the training samples and is refused, and
* the training parameters can be re-drawn from the provenance alone (or read from the training
  file, for data without provenance) and the fresh ones are checked to be disjoint from them
  before anything is written.

The fresh solves run through the ``generate-dataset`` engine (:func:`datasets.generate.generate`:
MPI, dynamic balancing, atomic checkpoints, resume) into ``REPORT_DIR/fresh.h5``. With ``--data``
an existing dataset is evaluated instead. Only world rank 0 loads the surrogate and writes the
report.

Error definition (SPEC section 4, as in the training summary,
:func:`train.history.relative_errors`): per sample ``||c_pred - c|| / ||c - c_shift||`` in
physical units, ``c_shift`` the training mean when the model centres its
targets (DCR, SPEC section 2), else 0.

This module imports solvers, datasets and mpi4py only inside functions, so that
``import surrogate`` stays free of dolfinx, PETSc and MPI.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from surrogate.artifact import read_metadata, sha256_file, write_text_atomic

FRESH_FILE = "fresh.h5"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
#: number of worst samples listed in the report
N_WORST = 5
#: repetitions of the surrogate timing (the median is reported)
TIMING_REPEATS = 20
ERROR_DEFINITION = ("||c_pred - c|| / ||c - c_shift|| per sample, physical units; c_shift = "
                    "training mean if the model centres its targets (DCR), else 0")


class EvaluationError(ValueError):
    """Bad input to the evaluation (the message says what and why); nothing was written."""


@dataclass(frozen=True)
class EvaluationRequest:
    """What to evaluate and how.

    Attributes
    ----------
    model_dir : Path
        Directory written by ``train-surrogate``.
    out : Path
        Report directory (created; holds ``fresh.h5``, ``report.json``, ``report.md`` and
        the figures).
    samples : int
        Fresh samples to solve.
    seed : int or None
        Seed of the fresh samples; required when solving, must differ from the training seed.
    ranks_per_sample : int
        Ranks per fresh solve.
    data : Path, optional
        Evaluate against this existing dataset instead of solving.
    problem : str, optional
        "cdr" or "dcr", for models trained on data without solver provenance.
    settings : dict
        Solver-setting overrides (with ``problem``; models without provenance only).
    device : str, optional
        Device of the surrogate timing and predictions; default the training device when it
        is available, else "cpu".
    checkpoint_interval : float
        Minimum seconds between checkpoints of ``fresh.h5``.
    progress : bool
        Progress bar on rank 0.
    """

    model_dir: Path
    out: Path
    samples: int = 200
    seed: int | None = None
    ranks_per_sample: int = 1
    data: Path | None = None
    problem: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    checkpoint_interval: float = 10.0
    progress: bool = True


@dataclass
class Plan:
    """Resolved evaluation plan (picklable; decided on rank 0 and broadcast)."""

    problem: str
    solve: bool
    settings: dict[str, Any] | None
    fresh_path: Path
    notes: list[str]


# ------------------------------------------------------------------------- provenance
def solver_provenance(meta: dict) -> dict[str, Any] | None:
    """The training data's solver provenance recorded in a model's metadata.

    Returns
    -------
    dict or None
        ``{"problem", "settings", "seed", "n_samples"}`` when the training data was written by
        ``generate-dataset`` (its file attributes carry a ``config`` with solver settings),
        else None (external .npz/.mat data).
    """
    attrs = meta.get("training", {}).get("data", {}).get("attrs", {})
    try:
        config = json.loads(attrs["config"])
        problem, settings = config["problem"], config["solver"]
        seed, n_samples = int(attrs["seed"]), int(attrs["n_samples"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None
    if problem not in ("cdr", "dcr") or not isinstance(settings, dict):
        return None
    return {"problem": problem, "settings": settings, "seed": seed, "n_samples": n_samples}


def training_file(meta: dict) -> Path | None:
    """The training data file if it still exists with the SHA-256 recorded at training."""
    data = meta.get("training", {}).get("data", {})
    path = data.get("path")
    if not path or not Path(path).is_file():
        return None
    if data.get("sha256") and sha256_file(path) != data["sha256"]:
        return None
    return Path(path)


def _solver(problem: str, settings: dict[str, Any]) -> Any:
    """A solver on COMM_SELF (only for drawing parameters); bad settings -> EvaluationError."""
    import dolfinx_solver  # noqa: F401  (orders MPI ahead of petsc4py / dolfinx)
    from mpi4py import MPI

    from solvers import make_solver

    try:
        return make_solver(problem, MPI.COMM_SELF, **settings)
    except (ValueError, TypeError) as exc:
        raise EvaluationError(f"invalid {problem} settings: {exc}") from None


def training_parameters(meta: dict, solver: Any | None) -> np.ndarray | None:
    """Parameters of every training-file sample, shape (n, p), or None if unknown.

    Re-drawn from the provenance (seed, sample count, sampler of ``solver``) when the model
    has solver provenance, else read from the training file if it is still there unchanged.
    """
    prov = solver_provenance(meta)
    if prov is not None and solver is not None:
        from datasets.sampling import draw_all_parameters

        return draw_all_parameters(solver, prov["seed"], prov["n_samples"])
    path = training_file(meta)
    if path is None:
        return None
    from datasets import open_dataset

    return np.asarray(open_dataset(path, include_failed=True)["y"].values, dtype=np.float64)


def overlap(fresh: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Indices of rows of ``fresh`` (n, p) equal to some row of ``train`` (k, p)."""
    seen = {np.ascontiguousarray(row).tobytes() for row in np.asarray(train, np.float64)}
    return np.array([i for i, row in enumerate(np.asarray(fresh, np.float64))
                     if np.ascontiguousarray(row).tobytes() in seen], dtype=np.int64)


# ------------------------------------------------------------------------- planning
def plan(request: EvaluationRequest) -> Plan:
    """Check the request against the model and decide what to solve; writes nothing.

    Raises
    ------
    EvaluationError
        Training seed, overlap with the training parameters, a model without solver
        provenance and neither ``data`` nor ``problem``, shape mismatches, bad options.
    """
    from surrogate.errors import SurrogateFormatError

    try:
        meta = read_metadata(request.model_dir)
    except SurrogateFormatError as exc:
        raise EvaluationError(str(exc)) from None
    encoding = meta["model"].get("encoding")        # raw parameters, before any encoding
    n_in = encoding["n_in"] if encoding else meta["model"]["features"]["n_in"]
    n_out = meta["model"]["n_out"]
    prov = solver_provenance(meta)
    notes: list[str] = []
    if request.data is not None:
        return _plan_data(request, meta, prov, n_in, n_out, notes)
    if prov is not None and request.problem is not None:
        raise EvaluationError(
            f"--problem/--set are for models without solver provenance; {request.model_dir} "
            f"was trained on {prov['problem']} data whose solver settings it records")
    if prov is None and request.problem is None:
        raise EvaluationError(
            f"{request.model_dir} was trained on data without solver provenance (an external "
            ".npz/.mat file), so its samples cannot be re-solved: pass --data FILE to evaluate "
            "on an existing dataset, or --problem cdr|dcr (with --set KEY=VALUE settings) to "
            "solve fresh samples")
    if request.seed is None:
        raise EvaluationError("--seed is required when solving fresh samples")
    if request.samples < 1:
        raise EvaluationError(f"--samples must be >= 1, got {request.samples}")
    if prov is not None:
        problem, settings = prov["problem"], dict(prov["settings"])
        if request.seed == prov["seed"]:
            raise EvaluationError(
                f"--seed {request.seed} is the training data's seed: it would re-draw the "
                f"training samples; choose another seed")
    else:
        problem, settings = request.problem, dict(request.settings)
    solver = _solver(problem, settings)
    settings = solver.settings()
    if (solver.n_parameters, solver.n_observables) != (n_in, n_out):
        raise EvaluationError(
            f"{problem} with these settings maps {solver.n_parameters} parameters to "
            f"{solver.n_observables} observables, but the surrogate maps {n_in} to {n_out}")
    from datasets.sampling import check_seed, draw_all_parameters

    try:
        check_seed(request.seed)
    except ValueError as exc:
        raise EvaluationError(f"--seed: {exc}") from None
    fresh = draw_all_parameters(solver, request.seed, request.samples)
    train = training_parameters(meta, solver)
    if train is None:
        notes.append("training parameters unknown (no provenance, file gone): overlap with "
                     "the training samples not checked")
    else:
        _refuse_overlap(fresh, train, f"--seed {request.seed}")
    return Plan(problem, True, settings, request.out / FRESH_FILE, notes)


def _refuse_overlap(fresh: np.ndarray, train: np.ndarray, what: str) -> None:
    common = overlap(fresh, train)
    if common.size:
        raise EvaluationError(
            f"{what}: {common.size} of {len(fresh)} evaluation samples (first: sample "
            f"{common[0]}) have the same parameters as training-data samples; an evaluation "
            f"must use samples the surrogate has not seen")


def _plan_data(request: EvaluationRequest, meta: dict, prov: dict | None, n_in: int,
               n_out: int, notes: list[str]) -> Plan:
    from datasets import DatasetFileError, open_dataset

    try:
        ds = open_dataset(request.data, include_failed=True)
    except DatasetFileError as exc:
        raise EvaluationError(str(exc)) from None
    y = np.asarray(ds["y"].values, dtype=np.float64)
    m = ds.sizes["observable"]
    if (y.shape[1], m) != (n_in, n_out):
        raise EvaluationError(f"{request.data}: {y.shape[1]} parameters and {m} observables, "
                              f"but the surrogate maps {n_in} to {n_out}")
    solver = None
    if prov is not None:
        solver = _solver(prov["problem"], prov["settings"])
    train = training_parameters(meta, solver)
    if train is None:
        notes.append("training parameters unknown (no provenance, file gone): overlap with "
                     "the training samples not checked")
    else:
        _refuse_overlap(y, train, f"--data {request.data}")
    problem = str(ds.attrs.get("problem", prov["problem"] if prov else "unknown"))
    return Plan(problem, False, None, Path(request.data), notes)


# ------------------------------------------------------------------------- running
def evaluate(request: EvaluationRequest, comm: Any = None) -> dict | None:
    """Plan, solve the fresh samples (collective) and write the report (rank 0).

    Returns
    -------
    dict or None
        The report (the contents of ``report.json``) on world rank 0, None elsewhere.

    Raises
    ------
    EvaluationError, datasets.ConfigError, datasets.ConfigMismatchError,
    datasets.DatasetFileError
        User errors, raised on every rank alike.
    """
    import dolfinx_solver  # noqa: F401
    from mpi4py import MPI

    world = comm if comm is not None else MPI.COMM_WORLD
    result: Plan | None = None
    error: Exception | None = None
    if world.rank == 0:
        try:
            result = plan(request)
        except EvaluationError as exc:
            error = exc
    result, error = world.bcast((result, error))
    if error is not None:
        raise error
    if result.solve:
        from datasets.generate import GenerationOptions, generate

        generate(GenerationOptions(
            problem=result.problem, out=result.fresh_path, samples=request.samples,
            seed=int(request.seed), settings=result.settings,
            ranks_per_sample=request.ranks_per_sample,
            checkpoint_interval=request.checkpoint_interval, progress=request.progress),
            comm=world)
    report = None
    if world.rank == 0:
        try:
            report = write_report(request, result)
        except EvaluationError as exc:
            error = exc
    _idle_wait(world)
    error = world.bcast(error)
    if error is not None:
        raise error
    return report


def _idle_wait(comm: Any, poll_seconds: float = 0.01) -> None:
    """Barrier in which the ranks other than 0 sleep instead of spinning, so that they do not
    take CPU time from rank 0's surrogate timings."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll_seconds)


def _device(requested: str | None, meta: dict) -> torch.device:
    if requested is not None:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise EvaluationError(f"--device {requested}: CUDA is not available on this "
                                  "machine; use --device cpu")
        return torch.device(requested)
    trained = str(meta.get("training", {}).get("device", "cpu"))
    if trained.startswith("cuda") and torch.cuda.is_available():
        return torch.device(trained)
    return torch.device("cpu")


def error_stats(err: np.ndarray) -> dict[str, float]:
    """mean, std, median, p95 and max of per-sample errors (NaN for none)."""
    if err.size == 0:
        return {k: float("nan") for k in ("mean", "std", "median", "p95", "max")}
    return {"mean": float(err.mean()), "std": float(err.std()),
            "median": float(np.median(err)), "p95": float(np.percentile(err, 95)),
            "max": float(err.max())}


def per_observable(pred: np.ndarray, c: np.ndarray, shift: np.ndarray | None
                   ) -> dict[str, np.ndarray]:
    """Per-observable RMSE and relative error over the samples.

    Returns
    -------
    dict
        ``rmse`` (m,), physical units, sqrt(mean_i (pred_ij - c_ij)^2); ``relative`` (m,),
        ||pred_:j - c_:j|| / ||c_:j - shift_j|| over the samples.
    """
    diff = pred - c
    ref = c if shift is None else c - shift
    return {"rmse": np.sqrt(np.mean(diff ** 2, axis=0)),
            "relative": np.linalg.norm(diff, axis=0) / np.linalg.norm(ref, axis=0)}


def time_surrogate(model: Any, y: np.ndarray, device: torch.device,
                   repeats: int = TIMING_REPEATS) -> tuple[float, float]:
    """Median seconds of one single-sample prediction and per sample of a batched one.

    Parameters
    ----------
    y : numpy.ndarray, shape (n, p)
        Inputs; the single-sample timing cycles through its rows.
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


def _split_errors(meta: dict, model: Any, shift: np.ndarray | None
                  ) -> tuple[dict, dict[str, np.ndarray], Any]:
    """Per-split errors of the training data if it is readable and unchanged."""
    path = training_file(meta)
    if path is None:
        return {}, {}, None
    from train.data import load_split_data

    from train.history import relative_errors

    prov = meta["training"]["data"]
    data = load_split_data(path, fractions=prov.get("split_fractions"),
                           seed=int(prov.get("split_seed", 0)))
    stats, errs = {}, {}
    for s in ("train", "validation", "test"):
        if data.y[s].shape[0] == 0:
            continue
        err = relative_errors(model.predict(data.y[s]), data.c[s], shift)
        errs[s] = err
        stats[s] = {"mean": float(err.mean()), "std": float(err.std()), "n": int(err.size)}
    return stats, errs, data


def _box(meta: dict, data: Any) -> dict | None:
    """Training parameter box: metadata ``inputs`` (contracts item 1), else the training split's
    min/max, else None."""
    inputs = meta.get("training", {}).get("inputs")
    if isinstance(inputs, dict) and "lower" in inputs and "upper" in inputs:
        return {"names": list(inputs.get("names") or []),
                "lower": np.asarray(inputs["lower"], dtype=np.float64),
                "upper": np.asarray(inputs["upper"], dtype=np.float64),
                "source": "model metadata"}
    if data is not None:
        y = data.y["train"]
        return {"names": [], "lower": y.min(axis=0), "upper": y.max(axis=0),
                "source": "training split min/max (computed from the training file)"}
    return None


def write_report(request: EvaluationRequest, plan_: Plan) -> dict:
    """Evaluate the surrogate on the fresh file and write the report (rank 0 only)."""
    from datasets import DatasetFileError, open_dataset
    from surrogate.evaluation_plots import write_figures
    from surrogate.predict import load_surrogate
    from train.history import relative_errors

    meta = read_metadata(request.model_dir)
    device = _device(request.device, meta)
    sur = load_surrogate(request.model_dir, device=device)
    model = sur.model
    norm = model.normalizer
    shift = norm.c_shift.cpu().numpy().astype(np.float64) if norm.center_targets else None
    try:
        ds = open_dataset(plan_.fresh_path, include_failed=True)
    except DatasetFileError as exc:
        raise EvaluationError(str(exc)) from None
    status = ds["status"].values if "status" in ds else np.full(ds.sizes["sample"], "ok")
    y_all = np.asarray(ds["y"].values, dtype=np.float64)
    c_all = np.asarray(ds["c"].values, dtype=np.float64)
    finite = np.isfinite(c_all).all(axis=1)
    ok = (status == "ok") & finite
    n_failed = int(np.count_nonzero(status == "failed"))
    n_pending = int(np.count_nonzero(status == "pending"))
    idx = np.flatnonzero(ok)
    y, c = y_all[idx], c_all[idx]
    if idx.size == 0:
        raise EvaluationError(f"{plan_.fresh_path}: no successfully solved sample to evaluate")
    pred = model.predict(y)    # no out-of-box warning: the report counts those per parameter
    err = relative_errors(pred, c, shift)
    obs = per_observable(pred, c, shift)
    split_stats, split_errs, data = _split_errors(meta, model, shift)
    box = _box(meta, data)
    names = [str(n) for n in ds["parameter"].values]

    order = np.argsort(err)[::-1][:N_WORST]
    worst = [{"sample": int(idx[k]), "error": float(err[k]),
              "parameters": {n: float(v) for n, v in zip(names, y[k], strict=True)}}
             for k in order]
    outside = None
    if box is not None:
        below, above = y < box["lower"], y > box["upper"]
        out_any = (below | above).any(axis=1)
        outside = {
            "box_source": box["source"],
            "n_samples_outside": int(out_any.sum()),
            "per_parameter": {n: {"lower": float(box["lower"][j]), "upper": float(box["upper"][j]),
                                  "n_below": int(below[:, j].sum()),
                                  "n_above": int(above[:, j].sum())}
                              for j, n in enumerate(names)},
            "error_inside": error_stats(err[~out_any]),
            "error_outside": error_stats(err[out_any]),
        }
    single, batched = time_surrogate(model, y, device)
    solve_time = (np.asarray(ds["solve_time"].values, dtype=np.float64)[idx]
                  if "solve_time" in ds else np.array([]))
    pde = float(np.median(solve_time)) if solve_time.size and np.all(np.isfinite(solve_time)) \
        else float("nan")
    cost = {"pde_seconds_per_solve": pde, "surrogate_seconds_single": single,
            "surrogate_seconds_per_sample_batched": batched,
            "speedup_single": pde / single, "speedup_batched": pde / batched,
            "pde_seconds_per_solve_training_data": _training_solve_time(meta),
            "device": str(device), "batch_size": int(len(y)),
            "ranks_per_solve": int(ds.attrs.get("ranks_per_sample", 1))
            if "ranks_per_sample" in ds.attrs else None}

    request.out.mkdir(parents=True, exist_ok=True)
    coords = {k: np.asarray(ds[k].values) for k in ds.coords
              if k not in ("sample", "parameter", "observable")}
    figures = write_figures(request.out, problem=plan_.problem, c=c, pred=pred, err=err,
                            split_errors=split_errs, coords=coords, sample_ids=idx,
                            shift=shift)
    report = {
        "model": str(request.model_dir),
        "problem": plan_.problem,
        "fresh_data": str(plan_.fresh_path),
        "mode": "solved" if plan_.solve else "data",
        "seed": request.seed if plan_.solve else _int_or_none(ds.attrs.get("seed")),
        "n_fresh": int(idx.size),
        "n_failed": n_failed,
        "n_pending": n_pending,
        "error_definition": ERROR_DEFINITION,
        "fresh": error_stats(err),
        "splits": split_stats,
        "per_sample": {"sample": idx.tolist(), "error": err.tolist()},
        "per_observable": {"rmse": obs["rmse"].tolist(), "relative": obs["relative"].tolist(),
                           "coords": {k: v.tolist() for k, v in coords.items()}},
        "worst": worst,
        "outside_training_box": outside,
        "cost": cost,
        "figures": figures,
        "notes": plan_.notes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text_atomic(request.out / REPORT_JSON, json.dumps(_finite(report), indent=2) + "\n")
    write_text_atomic(request.out / REPORT_MD, markdown(report))
    return report


def _training_solve_time(meta: dict) -> float | None:
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


# ------------------------------------------------------------------------- text output
def _fmt_stats(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "-"
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def summary_table(report: dict) -> str:
    """The printed summary: errors per split and fresh, and the cost."""
    f, cost = report["fresh"], report["cost"]
    lines = [f"evaluate-surrogate: {report['model']} ({report['problem']}) on "
             f"{report['n_fresh']} fresh samples ({report['n_failed']} failed solves, not "
             f"evaluated)",
             f"{'data':<11} {'n':>6} {'mean ± std':>19} {'median':>8} {'p95':>8} {'max':>8}"]
    for s in ("train", "validation", "test"):
        e = report["splits"].get(s)
        if e:
            lines.append(f"{s:<11} {e['n']:>6} {_fmt_stats(e):>19} {'':>8} {'':>8} {'':>8}")
    lines.append(f"{'fresh':<11} {report['n_fresh']:>6} {_fmt_stats(f):>19} "
                 f"{f['median']:>8.4f} {f['p95']:>8.4f} {f['max']:>8.4f}")
    pde = cost["pde_seconds_per_solve"]
    pde_txt = "unknown" if pde is None or not np.isfinite(pde) else f"{pde:.4g} s"

    def speed(v: float | None) -> str:
        return "-" if v is None or not np.isfinite(v) else f"{v:.3g}x"

    ref = cost.get("pde_seconds_per_solve_training_data")
    if ref is not None and np.isfinite(ref):
        pde_txt += f", training data {ref:.4g} s"
    lines.append(f"cost: PDE solve {pde_txt} (median); surrogate {cost['device']}: "
                 f"{cost['surrogate_seconds_single']:.3g} s single "
                 f"(speed-up {speed(cost['speedup_single'])}), "
                 f"{cost['surrogate_seconds_per_sample_batched']:.3g} s/sample batched "
                 f"(speed-up {speed(cost['speedup_batched'])})")
    out = report.get("outside_training_box")
    if out is not None:
        lines.append(f"outside the training box: {out['n_samples_outside']} of "
                     f"{report['n_fresh']} fresh samples")
    return "\n".join(lines) + "\n"


def markdown(report: dict) -> str:
    """Short report.md."""
    lines = [f"# Evaluation of `{report['model']}`", "",
             f"Problem **{report['problem']}**, fresh data `{report['fresh_data']}` "
             f"({report['mode']}): {report['n_fresh']} samples evaluated, "
             f"{report['n_failed']} solver failures (counted, not evaluated).", "",
             f"Error: {report['error_definition']}.", "",
             "| data | n | mean | std | median | p95 | max |", "|---|---|---|---|---|---|---|"]
    for s, e in report["splits"].items():
        lines.append(f"| {s} | {e['n']} | {e['mean']:.4g} | {e['std']:.4g} | | | |")
    f = report["fresh"]
    lines.append(f"| **fresh** | {report['n_fresh']} | {f['mean']:.4g} | {f['std']:.4g} | "
                 f"{f['median']:.4g} | {f['p95']:.4g} | {f['max']:.4g} |")
    cost = report["cost"]
    lines += ["", "## Cost", "",
              "| | seconds | speed-up |", "|---|---|---|",
              f"| PDE solve (median) | {_g(cost['pde_seconds_per_solve'])} | 1 |",
              f"| PDE solve (median over the training data) | "
              f"{_g(cost.get('pde_seconds_per_solve_training_data'))} | |",
              f"| surrogate, single sample ({cost['device']}) | "
              f"{_g(cost['surrogate_seconds_single'])} | {_g(cost['speedup_single'])} |",
              f"| surrogate, per sample in a batch of {cost['batch_size']} | "
              f"{_g(cost['surrogate_seconds_per_sample_batched'])} | "
              f"{_g(cost['speedup_batched'])} |",
              "", "## Worst samples", "", "| sample | error | parameters |", "|---|---|---|"]
    for w in report["worst"]:
        params = ", ".join(f"{k}={v:.4g}" for k, v in list(w["parameters"].items())[:6])
        more = " ..." if len(w["parameters"]) > 6 else ""
        lines.append(f"| {w['sample']} | {w['error']:.4g} | {params}{more} |")
    out = report.get("outside_training_box")
    if out is not None:
        lines += ["", "## Training box", "",
                  f"{out['n_samples_outside']} fresh samples lie outside the training "
                  f"parameter box ({out['box_source']}).", ""]
        flagged = {k: v for k, v in out["per_parameter"].items() if v["n_below"] or v["n_above"]}
        if flagged:
            lines += ["| parameter | lower | upper | below | above |", "|---|---|---|---|---|"]
            lines += [f"| {k} | {v['lower']:.4g} | {v['upper']:.4g} | {v['n_below']} | "
                      f"{v['n_above']} |" for k, v in flagged.items()]
    if report["figures"]:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({path})" for name, path in report["figures"].items()]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _g(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3g}"


__all__ = ["EvaluationError", "EvaluationRequest", "error_stats", "evaluate", "overlap",
           "per_observable", "plan", "solver_provenance", "summary_table", "time_surrogate",
           "training_parameters", "write_report"]
