"""A training run of ``train-surrogate``: one method into a model folder, or several (compare).

:func:`run` reads the configuration and the data, checks every output folder and the memory
estimate before anything trains, trains each method with :func:`train_one` and prints the
GNvpro table 2 rows (:mod:`train.summary`). A model folder receives ``weights.npz`` +
``metadata.json`` (the surrogate, see :mod:`surrogate.artifact`), ``history.csv``,
``convergence.png``, ``summary.json`` and ``summary.txt`` (slimTrain also
``lambda_history.csv`` and ``lambda.png``); a comparison also writes ``compare.txt``,
``compare.json`` and ``convergence.png`` into its folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from datasets.reader import open_dataset
from datasets.split_data import SplitData, load_split_data
from solvers.common.atomic import write_text_atomic
from solvers.errors import UsageError
from surrogate.artifact import save_surrogate, state_to_npz_bytes
from surrogate.errors import NonFiniteModelError
from surrogate.metadata import io_metadata_from_dataset
from surrogate.metrics import ERROR_DEFINITION, SCALE_FREE_DEFINITION
from surrogate.separable import SeparableModel
from train.auto import selection_score
from train.base import Optimizer
from train.budget import apply_plan, time_plan
from train.checkpoint import (
    Checkpoint,
    fingerprint,
    has_checkpoint,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from train.config import AUTO, merge_config, read_toml, resolve_config, slimtrain_model_config
from train.factories import (
    build_model,
    level_budgets,
    make_optimizer,
    promote,
    training_config,
    warm_up,
)
from train.history import History, plot_convergence
from train.multilevel import Monitor, MultilevelTrainer
from train.outputs import CreatedFolders, check_output_folder, staged
from train.resources import check_memory
from train.slimtrain import SlimTrain, plot_lambda_history, write_lambda_history
from train.summary import LABELS, scale_free_summary, scale_free_table, split_errors, table
from train.varpro import WorkCounter

#: what selected the model (summary.json "selection"), by :func:`train.auto.selection_score`
SELECTION = {"relative": "mean relative error",
             "scale_free": "relative Frobenius error of the standardised outputs (the "
                           "per-sample relative error is ill-conditioned on this data)"}


@dataclass(frozen=True)
class RunOptions:
    """What to train, from where, into where (the checked command-line options).

    Attributes
    ----------
    data : str
        Dataset file (.h5 from generate-dataset, .npz, .mat).
    methods : tuple of str
        Methods to train, in :data:`train.config.METHODS` order for a comparison.
    compare : bool
        Train into ``out/<method>/`` and write the comparison files into ``out``.
    out : Path
        The model folder (one method) or the comparison folder.
    config : str or None
        TOML file overriding the defaults.
    preset : "default" or "paper"
    device : torch.device
    seed : int
        Seed of the initial weights, the mini-batches and (files without a stored split) the
        split.
    resume, restart, overwrite : bool
        What may happen to an interrupted run or another run's model in a model folder.
    stream : text stream or None
        Progress lines; None for ``--quiet``.
    time_budget : float or None
        ``--time-budget``: seconds of GNvpro training (``[gnvpro] time_budget``).
    """

    data: str
    methods: tuple[str, ...]
    out: Path
    compare: bool = False
    config: str | None = None
    preset: str = "default"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    resume: bool = False
    restart: bool = False
    overwrite: bool = False
    stream: TextIO | None = None
    ensemble: int = 0            # K >= 2: an ensemble of K members (train.ensemble)
    time_budget: float | None = None

    def target(self, method: str) -> Path:
        """The model folder of ``method``."""
        return self.out / method if self.compare else self.out


def package_version() -> str:
    """Installed version of varpro-surrogates ("unknown" when run from a source tree)."""
    try:
        return importlib_metadata.version("varpro-surrogates")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def run_fingerprint(method: str, cfg: dict, seed: int, data: SplitData) -> str:
    """Identity of a run (method, resolved configuration, seed, data and split)."""
    return fingerprint({"method": method, "config": cfg, "seed": seed,
                        "data": data.provenance["sha256"], "split": data.provenance["split"]})


def warm_run_id(run_id: str, init: SeparableModel | None) -> str:
    """The fingerprint of a run warm-started from ``init`` (``run_id`` itself without)."""
    if init is None:
        return run_id
    digest = hashlib.sha256(state_to_npz_bytes(init.state_dict())).hexdigest()
    return fingerprint({"run": run_id, "init": digest})


def io_metadata(data: SplitData) -> dict:
    """Contract 1: ``"inputs"`` (parameter names, training-split min/max box) and
    ``"outputs"`` (observable coordinates) for metadata.json, read from the data file."""
    return io_metadata_from_dataset(open_dataset(data.provenance["path"]), data.y["train"])


def check_finite_predictions(model: SeparableModel, data: SplitData) -> None:
    """Refuse a model whose physical-unit predictions on the training split are not finite
    (weights and normalisation are checked by ``save_surrogate``).

    Raises
    ------
    NonFiniteModelError
        Naming how many predictions are not finite, one of them and the target scale.
    """
    pred = model.predict(data.y["train"])
    bad = ~np.isfinite(pred)
    if bad.any():
        i, j = (int(k[0]) for k in np.nonzero(bad))
        scales = model.normalizer.c_scale.reshape(-1)         # one, or one per output
        raise NonFiniteModelError(
            f"not saving the model: its predictions on the training split are not finite "
            f"({int(bad.sum())} values, e.g. sample {i}, observable {j}: {pred[i, j]}; target "
            f"scale c_scale = {float(scales[min(j, scales.numel() - 1)])}): rescale the "
            "targets of the data file")


def write_slimtrain_outputs(opt: SlimTrain, out: Path, label: str) -> dict:
    """lambda_history.csv and lambda.png (slimTrain figure 6); returns summary entries."""
    if not hasattr(opt, "lambdas_"):
        return {}
    rows = opt.lambda_history()
    write_lambda_history(rows, out / "lambda_history.csv")
    plot_lambda_history({label: rows}, out / "lambda.png", title="slimTrain: sGCV Lambdas")
    lam = [r["Lambda"] for r in rows] or [float("nan")]
    return {"lambda_sum": opt.lambda_sum_, "lambda_median": float(sorted(lam)[len(lam) // 2]),
            "epochs": opt.epochs_done_, "iterations": len(rows)}


def _normalised(model: SeparableModel, data: SplitData, split: str, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded inputs (n, n_in') in the network's dtype and normalised targets (n, n_out)."""
    y = model.encode(torch.as_tensor(data.y[split], device=device)).to(model.W.dtype)
    c = model.normalizer.transform_c(torch.as_tensor(data.c[split], device=device))
    return y, c


def _checkpoint_hooks(opt: Optimizer, out: Path, run_id: str, monitor: Monitor,
                      counter: WorkCounter) -> Callable[[int, SeparableModel], None]:
    """The end-of-level checkpoint callback (and, for slimTrain, the end-of-epoch one)."""
    def on_level_end(level: int, m: SeparableModel) -> None:
        save_checkpoint(out, run_id, Checkpoint(
            completed_levels=level + 1, model=m, best_model=monitor.best_model,
            best_row=monitor.best_row, history=monitor.history.rows,
            work_units=counter.units, wall_time=monitor.wall_time()))

    if isinstance(opt, SlimTrain):                  # checkpoint after every epoch
        opt.epoch_hook = lambda o, m: save_checkpoint(out, run_id, Checkpoint(
            completed_levels=monitor.level, model=m, best_model=monitor.best_model,
            best_row=monitor.best_row, history=monitor.history.rows,
            work_units=counter.units, wall_time=monitor.wall_time(),
            optimizer_state=o.resume_state()))
    return on_level_end


def _metadata(method: str, cfg: dict, data: SplitData, seed: int, summary: dict,
              best_row: dict | None) -> dict:
    """The ``training`` entry of metadata.json."""
    return {"method": method, "problem": data.problem, "config": cfg, "seed": seed,
            "data": data.provenance, "selected": best_row,
            "work_units": summary["work_units"], "wall_time": summary["wall_time"],
            "device": summary["device"], "package": "varpro-surrogates",
            "package_version": package_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_id": summary["run_id"]}


def _save(out: Path, model: SeparableModel, meta: dict, data: SplitData, history: History,
          summary: dict) -> None:
    """Write the model folder, all or nothing: a full disk leaves ``out`` as it was."""
    label = LABELS[summary["method"]]
    with staged(out) as stage:
        save_surrogate(model, stage, meta, extra=io_metadata(data))
        history.to_csv(stage / "history.csv")
        plot_convergence({label: history}, stage / "convergence.png",
                         title=f"{label} on {data.problem}")
        write_text_atomic(stage / "summary.json", json.dumps(summary, indent=2) + "\n")
        write_text_atomic(stage / "summary.txt", table([summary]) + scale_free_table(summary))


def train_one(method: str, cfg: dict, data: SplitData, *, device: torch.device, seed: int,
              out: Path, resume: bool, stream: TextIO | None,
              init: SeparableModel | None = None) -> dict:
    """Train one method into ``out`` (an existing folder that :func:`run` has checked) and
    return its summary (the contents of ``summary.json``).

    Parameters
    ----------
    method : str
        One of :data:`train.config.METHODS`.
    cfg : dict
        The resolved configuration (:func:`train.config.resolve_config`).
    data : SplitData
    device : torch.device
    seed : int
    out : Path
        The model folder.
    resume : bool
        Continue from the checkpoint in ``out`` (it must belong to this run).
    stream : text stream or None
        Progress lines.
    init : SeparableModel, optional
        Warm start (adaptive refinement): train only the finest level, starting from a copy of
        this model (its weights and normalisation); part of the run's fingerprint.
    """
    run_id = warm_run_id(run_fingerprint(method, cfg, seed, data), init)  # as resolved
    if method == "slimtrain":
        cfg = slimtrain_model_config(cfg)
    plan, cpu_plan = None, time.process_time()
    if method == "gnvpro" and cfg["gnvpro"].get("time_budget", 0) > 0:
        plan = time_plan(cfg, data, seed=seed, device=device, out=out, resume=resume,
                         stream=stream)
        cfg = apply_plan(cfg, plan)
    cpu_plan = time.process_time() - cpu_plan
    opt, levels = make_optimizer(method, cfg, seed)
    model = build_model(training_config(method, cfg), data, levels, seed, device)
    counter, start_level, wall0 = WorkCounter(), 0, 0.0
    if init is not None:
        model, start_level = copy.deepcopy(init).to(device), len(levels) - 1
    ckpt = load_checkpoint(out, run_id, device=device) if resume else None
    if ckpt is not None:
        model, start_level = ckpt.model, ckpt.completed_levels
        counter.units, wall0 = ckpt.work_units, ckpt.wall_time
        if ckpt.optimizer_state is not None and isinstance(opt, SlimTrain):
            opt.restore(ckpt.optimizer_state)
        if stream is not None:
            print(f"{method}: resuming after level {start_level} of {len(levels)}", file=stream)

    Y, C = _normalised(model, data, "train", device)
    warm_up(model, Y)
    validation = _normalised(model, data, "validation", device) \
        if data.y["validation"].shape[0] else None
    shift = model.normalizer.c_shift.cpu().numpy() if model.normalizer.center_targets else None
    score = selection_score(data.c["train"], data.c["validation"], shift)
    if plan is not None and ckpt is None:
        wall0 = plan.probe_seconds                  # the probes count against the budget
    monitor = Monitor(method, Y, C, validation, counter=counter, stream=stream, wall_offset=wall0,
                      patience=cfg[method].get("patience") or None,
                      min_improvement=cfg[method].get("min_improvement", 0.0),
                      scale=model.normalizer.c_scale, score=score)
    if ckpt is not None:
        monitor.history = History(ckpt.history)
        monitor.best_model, monitor.best_row = ckpt.best_model, ckpt.best_row
    on_level_end = _checkpoint_hooks(opt, out, run_id, monitor, counter)

    cpu0 = time.process_time() - (cpu_plan if ckpt is None else 0.0)
    trainer = MultilevelTrainer(opt, levels, level_budgets(method, cfg),
                                time_budgets=None if plan is None else plan.level_seconds)
    if start_level < len(levels):
        trainer.fit(model, Y, C, monitor, start_level=start_level, on_level_end=on_level_end)
    selected = monitor.best_model if monitor.best_model is not None else model
    final_dtype = getattr(torch, cfg["model"]["dtype"])
    if selected.W.dtype != final_dtype:                 # trained with float32 features
        y64 = selected.encode(torch.as_tensor(data.y["train"], device=device))
        selected = promote(selected, final_dtype, y64, C, cfg["loss"]["alpha2"], counter)
    summary = {
        "method": method,
        "problem": data.problem,
        "errors": split_errors(selected, data),
        "error_definition": ERROR_DEFINITION,
        "targets_centered": model.normalizer.center_targets,
        "selected": monitor.best_row,
        "selection": SELECTION[score] + (" on the validation split" if validation is not None
                                         else " on the training split (no validation split)"),
        "work_units": counter.units,
        "wall_time": monitor.wall_time(),
        "cpu_time": time.process_time() - cpu0,     # this process, all threads (load-proof)
        "stop_reasons": getattr(trainer, "stop_reasons_", []),
        "device": str(device),
        "scale_free_definition": SCALE_FREE_DEFINITION,
        **scale_free_summary(selected, data),
    }
    if plan is not None:
        summary["time_budget"] = plan.as_dict()
    if isinstance(opt, SlimTrain):
        summary["slimtrain"] = write_slimtrain_outputs(opt, out, LABELS[method])
    summary["run_id"] = run_id
    meta = _metadata(method, cfg, data, seed, summary, monitor.best_row)
    check_finite_predictions(selected, data)
    _save(out, selected, meta, data, monitor.history, summary)
    remove_checkpoint(out)
    return summary


def load_run_data(opts: RunOptions) -> tuple[dict, SplitData]:
    """The resolved configuration and the split data of a run.

    Raises
    ------
    ConfigError, DataError, DatasetFileError
    """
    user = read_toml(opts.config) if opts.config else {}
    if opts.time_budget is not None:
        user.setdefault("gnvpro", {})["time_budget"] = float(opts.time_budget)
    cfg = merge_config(user, source=opts.config or "config")
    split_seed = opts.seed if cfg["split"]["seed"] == AUTO else cfg["split"]["seed"]
    fractions = None if cfg["split"]["fractions"] == AUTO else cfg["split"]["fractions"]
    data = load_split_data(opts.data, fractions=fractions, seed=split_seed)
    return resolve_config(cfg, data.problem, opts.seed, preset=opts.preset, data=data), data


def plan_outputs(opts: RunOptions, cfg: dict, data: SplitData) -> dict[str, str]:
    """Check every model folder and the memory estimate of every method before anything
    trains; returns method -> "train" or "finished" (:func:`train.outputs.check_output_folder`).

    Raises
    ------
    UsageError, OutputFolderError, MemoryEstimateError
    """
    if opts.compare and opts.out.exists() and not opts.out.is_dir():
        raise UsageError(f"--out {opts.out}: exists and is not a folder")
    plan = {}
    for method in opts.methods:
        plan[method] = check_output_folder(
            opts.target(method), run_fingerprint(method, cfg, opts.seed, data),
            overwrite=opts.overwrite, resume=opts.resume, restart=opts.restart)
        check_memory(cfg, method, data.y["train"].shape[0], data.n_in, data.n_out, opts.device)
    return plan


def run(opts: RunOptions) -> list[dict]:
    """Train ``opts.methods``, print the table rows (stdout) and, for a comparison, write
    ``compare.txt``, ``compare.json`` and ``convergence.png``; returns the summaries.

    Folders created by a run that fails are removed again (when empty).
    """
    cfg, data = load_run_data(opts)
    if opts.ensemble:
        from train.ensemble import run_ensemble

        return [run_ensemble(opts, cfg, data)]
    plan = plan_outputs(opts, cfg, data)
    folders = CreatedFolders()
    try:
        summaries = _train_all(opts, cfg, data, plan, folders)
    except BaseException:
        folders.clean_up()
        raise
    text = table(summaries)
    print(text, end="")
    if opts.compare:
        write_text_atomic(opts.out / "compare.txt", text)
        write_text_atomic(opts.out / "compare.json", json.dumps(summaries, indent=2) + "\n")
        plot_convergence({LABELS[m]: History.read_csv(opts.out / m / "history.csv")
                          for m in opts.methods},
                         opts.out / "convergence.png", title=f"{data.problem}: convergence")
    return summaries


def _train_all(opts: RunOptions, cfg: dict, data: SplitData, plan: dict[str, str],
               folders: CreatedFolders) -> list[dict]:
    """The training loop of :func:`run` (``plan``: "train" or "finished" per method)."""
    summaries = []
    notes = opts.stream or sys.stderr
    for method in opts.methods:
        target = opts.target(method)
        if plan[method] == "finished":
            print(f"{method}: {target} already holds the finished model of this run "
                  "(nothing to resume)", file=notes)
            summaries.append(json.loads((target / "summary.json").read_text()))
            continue
        if opts.restart:
            remove_checkpoint(target)
        folders.make(target)
        resume = opts.resume and has_checkpoint(target)
        if opts.resume and not resume:
            print(f"{method}: nothing to resume in {target}: training from the start",
                  file=notes)
        summaries.append(train_one(method, cfg, data, device=opts.device, seed=opts.seed,
                                   out=target, resume=resume, stream=opts.stream))
    return summaries
