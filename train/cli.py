"""``train-surrogate``: train a separable surrogate with GNvpro or a baseline.

    train-surrogate --data data.h5 --method {gnvpro,gn,adam,lbfgsvpro,slimtrain}
                    [--config train.toml] [--device cpu|cuda] [--seed S] [--resume] --out model_dir
    train-surrogate --compare --data data.h5 [...] --out compare_dir

Writes into ``model_dir``: ``weights.npz`` + ``metadata.json`` (the surrogate, see
:mod:`surrogate.artifact`), ``history.csv``, ``convergence.png``, ``summary.json`` and
``summary.txt`` (slimTrain also ``lambda_history.csv`` and ``lambda.png``). ``--compare`` trains
all five methods into ``compare_dir/<method>/`` and
prints GNvpro table 2 rows (also in ``compare.txt``/``compare.json``, plot ``convergence.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from solvers.common.atomic import write_text_atomic
from surrogate.artifact import save_surrogate
from surrogate.encoding import periodic_encoding
from surrogate.errors import NonFiniteModelError, SurrogateFormatError
from surrogate.normalization import NormalizationError, Normalizer
from surrogate.separable import SeparableModel, build_extractor
from train.adam import Adam
from train.base import Optimizer
from train.checkpoint import (
    Checkpoint,
    CheckpointError,
    fingerprint,
    has_checkpoint,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from train.config import (
    AUTO,
    METHODS,
    PRESETS,
    ConfigError,
    merge_config,
    read_toml,
    resolve_config,
    slimtrain_model_config,
)
from datasets.split_data import SPLITS, DataError, SplitData, load_split_data
from train.gauss_newton import GaussNewton
from train.gnvpro import GNvpro
from train.history import History, plot_convergence, relative_errors
from train.lbfgs_vpro import LBFGSvpro
from train.multilevel import Monitor, MultilevelTrainer, NonFiniteTrainingError
from train.outputs import (
    CreatedFolders,
    OutputFolderError,
    check_output_folder,
    os_error_message,
    staged,
)
from train.resources import MemoryEstimateError, check_memory
from train.slimtrain import SlimTrain, plot_lambda_history, write_lambda_history
from train.varpro import WorkCounter

PROG = "train-surrogate"
LABELS = {"gn": "Full GN", "adam": "ADAM", "lbfgsvpro": "L-BFGSvpro", "gnvpro": "GNvpro",
          "slimtrain": "slimTrain"}


class UsageError(ValueError):
    """Bad command-line input."""


def package_version() -> str:
    try:
        return importlib_metadata.version("varpro-surrogates")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; CUDA must be available."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine "
                             f"(torch {torch.__version__}); use --device cpu")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA "
                             "device(s) present")
        return dev
    raise UsageError(f"--device {name!r}: expected cpu, cuda or cuda:N")


def make_optimizer(method: str, cfg: dict, seed: int) -> tuple[Optimizer, list[int]]:
    """Optimiser for one level and the list of levels, from the resolved configuration."""
    if method == "slimtrain":
        return make_slimtrain(cfg, seed)
    loss = cfg["loss"]
    m = cfg[method]
    budgets = level_budgets(method, cfg)
    common = {"alpha1": loss["alpha1"], "alpha2": loss["alpha2"],
              "max_work_units": budgets[0] if budgets else m["work_units_per_level"]}
    if method == "gnvpro":
        opt = GNvpro(**common, r_max=m["r_max"], krylov_tol=m["krylov_tol"],
                     max_iter=m["max_iter"], grad_tol=m["grad_tol"], grad_rtol=m["grad_rtol"],
                     carry_radius=bool(m.get("carry_radius", False)))
        return opt, cfg["model"]["levels"]
    if method == "gn":
        opt = GaussNewton(**common, r_max=m["r_max"], krylov_tol=m["krylov_tol"],
                          max_iter=m["max_iter"], grad_tol=m["grad_tol"],
                          grad_rtol=m["grad_rtol"])
        return opt, cfg["model"]["levels"]
    if method == "lbfgsvpro":
        return LBFGSvpro(**common, memory=m["memory"], max_iter=m["max_iter"],
                         grad_tol=m["grad_tol"], grad_rtol=m["grad_rtol"]), cfg["model"]["levels"]
    return Adam(**common, lr=m["lr"], batch_size=m["batch_size"], seed=seed), m["levels"]


def make_slimtrain(cfg: dict, seed: int) -> tuple[SlimTrain, list[int]]:
    """slimTrain from the [slimtrain] section: one level of ``depth`` steps."""
    st = cfg["slimtrain"]
    opt = SlimTrain(alpha1=cfg["loss"]["alpha1"], alpha2=cfg["loss"]["alpha2"],
                    epochs=st["epochs"], lr=st["lr"], batch_size=st["batch_size"],
                    memory=st["memory"], lambda_min=st["lambda_min"],
                    lambda_max=st["lambda_max"], grid_points=st["grid_points"],
                    allow_negative=st["allow_negative"],
                    lambda_fixed=st["lambda_fixed"] if st["regularization"] == "fixed" else None,
                    seed=seed)
    return opt, [st["depth"]]


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


def level_budgets(method: str, cfg: dict) -> list[float] | None:
    """Work units of each level when ``work_units_per_level`` is a list, else None."""
    budget = cfg[method].get("work_units_per_level")
    return [float(b) for b in budget] if isinstance(budget, list) else None


def build_model(cfg: dict, data: SplitData, levels: list[int], seed: int,
                device: torch.device) -> SeparableModel:
    """Randomly initialised model on the first level, normalisation fitted on training data."""
    mc = cfg["model"]
    encoding = periodic_encoding(data.n_in, mc.get("periodic_inputs"))
    n_in = encoding.n_out if encoding is not None else data.n_in
    features = {"architecture": mc["architecture"], "n_in": n_in, "width": mc["width"],
                "n_steps": levels[0], "final_time": mc["final_time"]}
    if mc["architecture"] == "neural_ode":
        features["gamma"] = mc["gamma"]
        features["init_scale"] = mc["init_scale"]
        if mc.get("max_step_radius"):
            features["max_step_radius"] = mc["max_step_radius"]
    gen = torch.Generator().manual_seed(seed)
    extractor = build_extractor(features, generator=gen, dtype=getattr(torch, mc["dtype"]),
                                device=device)
    norm = Normalizer(n_in, data.n_out,
                      standardize_inputs=cfg["normalization"]["standardize_inputs"],
                      center_targets=cfg["normalization"]["center_targets"])
    y_train = torch.as_tensor(data.y["train"])
    norm.fit(encoding(y_train) if encoding is not None else y_train,
             torch.as_tensor(data.c["train"]))
    return SeparableModel(extractor, data.n_out, norm, encoding).to(device)


def warm_up(model: SeparableModel, Y: torch.Tensor) -> None:
    """Untimed forward, backward and double-backward pass on two samples, so that the one-time
    set-up of the autograd engine is not charged to the wall time of the first method."""
    x = Y[:2].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).square().sum(), x, create_graph=True)
    torch.autograd.grad(g.sum(), x)
    dummy = torch.zeros(1, requires_grad=True)      # the first torch.optim step imports
    dummy.grad = torch.zeros(1)                     # torch._dynamo (seconds; ADAM, slimTrain)
    torch.optim.Adam([dummy]).step()


def split_errors(model: SeparableModel, data: SplitData) -> dict:
    """Mean +- std of ||c_pred - c|| / ||c - c_shift|| per split, in physical units (DCR:
    centred targets, SPEC section 2)."""
    shift = model.normalizer.c_shift.cpu().numpy() if model.normalizer.center_targets else None
    out = {}
    for s in SPLITS:
        if data.y[s].shape[0] == 0:
            continue
        err = relative_errors(model.predict(data.y[s]), data.c[s], shift)
        out[s] = {"mean": float(err.mean()), "std": float(err.std()), "n": int(err.size)}
    return out


def io_metadata(data: SplitData) -> dict:
    """Contract 1: ``"inputs"`` (parameter names, training-split min/max box) and
    ``"outputs"`` (observable coordinates) for metadata.json, read from the data file."""
    from datasets import open_dataset
    from surrogate.metadata import io_metadata_from_dataset

    return io_metadata_from_dataset(open_dataset(data.provenance["path"]), data.y["train"])


def _fmt_err(e: dict | None) -> str:
    return "-" if e is None else f"{e['mean']:.4f} ± {e['std']:.4f}"


def run_fingerprint(method: str, cfg: dict, seed: int, data: SplitData) -> str:
    """Identity of a run (method, resolved configuration, seed, data and split)."""
    return fingerprint({"method": method, "config": cfg, "seed": seed,
                        "data": data.provenance["sha256"], "split": data.provenance["split"]})


def check_finite_predictions(model: SeparableModel, data: SplitData) -> None:
    """Refuse a model whose physical-unit predictions on the training split are not finite
    (weights and normalisation are checked by ``save_surrogate``)."""
    pred = model.predict(data.y["train"])
    bad = ~np.isfinite(pred)
    if bad.any():
        i, j = (int(k[0]) for k in np.nonzero(bad))
        raise NonFiniteModelError(
            f"not saving the model: its predictions on the training split are not finite "
            f"({int(bad.sum())} values, e.g. sample {i}, observable {j}: {pred[i, j]}; target "
            f"scale c_scale = {float(model.normalizer.c_scale)}): rescale the targets of the "
            "data file")


def train_one(method: str, cfg: dict, data: SplitData, *, device: torch.device, seed: int,
              out: Path, resume: bool, stream: TextIO | None) -> dict:
    """Train one method into ``out`` (an existing folder that :func:`run` has checked) and
    return its summary."""
    run_id = run_fingerprint(method, cfg, seed, data)     # of the configuration as resolved
    if method == "slimtrain":
        cfg = slimtrain_model_config(cfg)
    opt, levels = make_optimizer(method, cfg, seed)
    model = build_model(cfg, data, levels, seed, device)
    counter, start_level, wall0 = WorkCounter(), 0, 0.0
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out, run_id, device=device)
        model, start_level = ckpt.model, ckpt.completed_levels
        counter.units, wall0 = ckpt.work_units, ckpt.wall_time
        if ckpt.optimizer_state is not None and isinstance(opt, SlimTrain):
            opt.restore(ckpt.optimizer_state)
        if stream is not None:
            print(f"{method}: resuming after level {start_level} of {len(levels)}", file=stream)
    norm = model.normalizer
    dt = model.W.dtype

    def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        y = model.encode(torch.as_tensor(data.y[split], device=device)).to(dt)
        c = norm.transform_c(torch.as_tensor(data.c[split], device=device))
        return y, c

    Y, C = tensors("train")
    warm_up(model, Y)
    validation = tensors("validation") if data.y["validation"].shape[0] else None
    monitor = Monitor(method, Y, C, validation, counter=counter, stream=stream, wall_offset=wall0,
                      patience=cfg[method].get("patience") or None,
                      min_improvement=cfg[method].get("min_improvement", 0.0))
    if ckpt is not None:
        monitor.history = History(ckpt.history)
        monitor.best_model, monitor.best_row = ckpt.best_model, ckpt.best_row

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

    cpu0 = time.process_time()
    trainer = MultilevelTrainer(opt, levels, level_budgets(method, cfg))
    if start_level < len(levels):
        trainer.fit(model, Y, C, monitor, start_level=start_level, on_level_end=on_level_end)
    selected = monitor.best_model if monitor.best_model is not None else model
    errors = split_errors(selected, data)
    summary = {
        "method": method,
        "problem": data.problem,
        "errors": errors,
        "error_definition": "||c_pred - c|| / ||c - c_shift|| per sample, physical units; "
                            "c_shift = training mean if targets are centred, else 0",
        "targets_centered": norm.center_targets,
        "selected": monitor.best_row,
        "selection": "validation mean relative error" if validation is not None
                     else "training mean relative error (no validation split)",
        "work_units": counter.units,
        "wall_time": monitor.wall_time(),
        "cpu_time": time.process_time() - cpu0,     # this process, all threads (load-proof)
        "stop_reasons": getattr(trainer, "stop_reasons_", []),
        "device": str(device),
    }
    if isinstance(opt, SlimTrain):
        summary["slimtrain"] = write_slimtrain_outputs(opt, out, LABELS[method])
    meta = {"method": method, "problem": data.problem, "config": cfg, "seed": seed,
            "data": data.provenance, "selected": monitor.best_row,
            "work_units": counter.units, "wall_time": summary["wall_time"],
            "device": str(device), "package": "varpro-surrogates",
            "package_version": package_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    meta["run_id"] = summary["run_id"] = run_id
    check_finite_predictions(selected, data)
    with staged(out) as stage:          # all or nothing: a full disk leaves OUT as it was
        save_surrogate(selected, stage, meta, extra=io_metadata(data))
        monitor.history.to_csv(stage / "history.csv")
        plot_convergence({LABELS[method]: monitor.history}, stage / "convergence.png",
                         title=f"{LABELS[method]} on {data.problem}")
        write_text_atomic(stage / "summary.json", json.dumps(summary, indent=2) + "\n")
        write_text_atomic(stage / "summary.txt", table([summary]))
    remove_checkpoint(out)
    return summary


def table(summaries: list[dict]) -> str:
    """GNvpro table 2 style rows."""
    head = (f"{'method':<12} {'training':>17} {'validation':>17} {'test':>17} "
            f"{'work units':>10} {'wall [s]':>9}")
    lines = [head, "-" * len(head)]
    for s in summaries:
        e = s["errors"]
        lines.append(f"{LABELS[s['method']]:<12} {_fmt_err(e.get('train')):>17} "
                     f"{_fmt_err(e.get('validation')):>17} {_fmt_err(e.get('test')):>17} "
                     f"{s['work_units']:>10.1f} {s['wall_time']:>9.1f}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Train a separable surrogate c = W [F(y); 1] with GNvpro or "
        "a baseline (full GN, ADAM, L-BFGSvpro, slimTrain), multilevel in time (SPEC "
        "section 4).")
    p.add_argument("--data", required=True, help="dataset (.h5 from generate-dataset, .npz "
                   "with y, c (samples x features), or .mat with Y, C)")
    p.add_argument("--method", choices=METHODS, help="training method")
    p.add_argument("--compare", action="store_true",
                   help="train all five methods into OUT/<method>/ and print a comparison")
    p.add_argument("--methods", help="with --compare: comma-separated subset of the methods "
                   f"(default all: {','.join(METHODS)})")
    p.add_argument("--config", help="TOML file overriding the defaults (see train.config)")
    p.add_argument("--preset", choices=PRESETS, default="default",
                   help="default: the best surrogate (stable start, problem-declared input "
                   "encodings, radius continuation, budgets rebalanced across levels); paper: "
                   "GNvpro table 2 settings exactly (200/400 WU per level, T = 4, widths 8/16)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights, ADAM batches and (for files without a "
                   "stored split) the split")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in OUT from its last finished level")
    p.add_argument("--restart", action="store_true",
                   help="discard the checkpoint of an interrupted (or damaged) run in OUT and "
                   "train from the start")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model of a different run already in OUT (the same run "
                   "again replaces its own model without this option)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's "
                   "choice; 1 is often fastest for these small networks on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no per-iteration progress lines")
    return p


def compare_methods(text: str | None) -> tuple[str, ...]:
    """The methods of ``--compare`` from ``--methods a,b`` (all of METHODS if None)."""
    if text is None:
        return METHODS
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise UsageError(f"--methods {text!r}: unknown method(s) {bad}; choose from "
                         f"{', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in names)


def run(args: argparse.Namespace) -> int:
    if not args.compare and args.method is None:
        raise UsageError("one of --method or --compare is required")
    if args.compare and args.method is not None:
        raise UsageError("--method and --compare exclude each other")
    if args.resume and args.restart:
        raise UsageError("--resume and --restart exclude each other")
    methods = compare_methods(args.methods) if args.compare else (args.method,)
    if args.methods is not None and not args.compare:
        raise UsageError("--methods selects the methods of --compare; use --method for one")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be >= 0")
    device = resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    user = read_toml(args.config) if args.config else {}
    cfg = merge_config(user, source=args.config or "config")
    split_seed = args.seed if cfg["split"]["seed"] == AUTO else cfg["split"]["seed"]
    fractions = None if cfg["split"]["fractions"] == AUTO else cfg["split"]["fractions"]
    data = load_split_data(args.data, fractions=fractions, seed=split_seed)
    cfg = resolve_config(cfg, data.problem, args.seed, preset=args.preset)
    stream = None if args.quiet else sys.stdout
    out = Path(args.out)
    if args.compare and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    plan = {}                           # every folder is checked before anything is trained
    for method in methods:
        target = out / method if args.compare else out
        plan[method] = check_output_folder(
            target, run_fingerprint(method, cfg, args.seed, data), overwrite=args.overwrite,
            resume=args.resume, restart=args.restart)
        check_memory(cfg, method, data.y["train"].shape[0], data.n_in, data.n_out, device)
    folders = CreatedFolders()
    try:
        summaries = _train_all(args, cfg, data, device, out, methods, plan, folders, stream)
    except BaseException:
        folders.clean_up()
        raise
    text = table(summaries)
    print(text, end="")
    if args.compare:
        write_text_atomic(out / "compare.txt", text)
        write_text_atomic(out / "compare.json", json.dumps(summaries, indent=2) + "\n")
        plot_convergence({LABELS[m]: History.read_csv(out / m / "history.csv") for m in methods},
                         out / "convergence.png", title=f"{data.problem}: convergence")
    return 0


def _train_all(args, cfg, data, device, out, methods, plan, folders, stream) -> list[dict]:
    """The training loop of :func:`run` (``plan``: "train" or "finished" per method)."""
    summaries = []
    for method in methods:
        target = out / method if args.compare else out
        if plan[method] == "finished":
            print(f"{method}: {target} already holds the finished model of this run "
                  "(nothing to resume)", file=stream or sys.stderr)
            summaries.append(json.loads((target / "summary.json").read_text()))
            continue
        if args.restart:
            remove_checkpoint(target)
        folders.make(target)
        resume = args.resume and has_checkpoint(target)
        if args.resume and not resume:
            print(f"{method}: nothing to resume in {target}: training from the start",
                  file=stream or sys.stderr)
        summaries.append(train_one(method, cfg, data, device=device, seed=args.seed,
                                   out=target, resume=resume, stream=stream))
    return summaries


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:         # argparse has printed "train-surrogate: error: ..."
        return int(exc.code or 0)
    from datasets.errors import DatasetFileError

    try:
        return run(args)
    except (UsageError, ConfigError, DataError, DatasetFileError, CheckpointError,
            SurrogateFormatError, OutputFolderError, NormalizationError,
            MemoryEstimateError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (NonFiniteTrainingError, NonFiniteModelError) as exc:
        print(f"{PROG}: error: {exc} (nothing was saved; the checkpoint of the finished "
              "levels, if any, is kept: change the settings and run with --restart)",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{PROG}: error: {os_error_message(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
