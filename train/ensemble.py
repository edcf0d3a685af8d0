"""``train-surrogate --ensemble K``: K independently seeded members, one model directory.

The members are trained one after the other by :func:`train.run.train_one` on the same data
and split, with seeds derived from ``--seed`` (:func:`member_seed`), into
``OUT/members/k/`` (each a complete single-model directory). Then the spread of their
predictions is calibrated on the validation split (one factor, :func:`surrogate.uncertainty.
fit_std_scale`) and ``OUT/metadata.json`` (format version 2, :mod:`surrogate.ensemble`),
``OUT/summary.json`` and ``OUT/summary.txt`` are written, metadata last.

Resume: a run killed while training member k leaves members 0..k-1 finished and member k's
checkpoint; the same command with ``--resume`` keeps the finished members (same fingerprint)
and continues member k from its last finished level. Without ``--resume`` a folder holding an
interrupted ensemble is refused (as for one model), and ``--restart`` trains every member
again.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from datasets.split_data import SplitData
from solvers.common.atomic import sha256_file, write_text_atomic
from surrogate.artifact import load_model
from surrogate.ensemble import MEMBERS_DIR, SeparableEnsemble, member_spread
from surrogate.metadata import (
    METADATA_FILE,
    new_ensemble_metadata,
    write_metadata,
)
from surrogate.metrics import ERROR_DEFINITION, SPLITS, format_mean_std, mean_std, relative_errors
from surrogate.separable import SeparableModel
from surrogate.uncertainty import (
    calibration_summary,
    confidence_word,
    fit_std_scale,
    spearman_ceiling,
)
from train.checkpoint import fingerprint, has_checkpoint, remove_checkpoint
from train.errors import OutputFolderError, UsageError
from train.outputs import OUTPUT_FILES, CreatedFolders, check_output_folder, model_run_id
from train.run import (
    RunOptions,
    _metadata,
    io_metadata,
    run_fingerprint,
    train_one,
    warm_run_id,
)
from train.summary import LABELS

#: spawn key that separates the members' seed streams from every other use of ``--seed``
ENSEMBLE_STREAM = 0x656E73
#: the split the spread is calibrated on (the training split when it is empty)
CALIBRATION_SPLIT = "validation"
#: files of a single model that an ensemble written over it (``--overwrite``) removes
_SINGLE_MODEL_FILES = tuple(f for f in OUTPUT_FILES if f not in (METADATA_FILE, "summary.json",
                                                                   "summary.txt"))


def member_seed(seed: int, k: int) -> int:
    """Seed of member ``k`` of an ensemble trained with ``--seed seed``: a 32-bit integer from
    ``numpy.random.SeedSequence([seed, ENSEMBLE_STREAM, k])`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), ENSEMBLE_STREAM, int(k)])
               .generate_state(1, np.uint32)[0])


def ensemble_run_id(method: str, cfg: dict, seed: int, data: SplitData, size: int,
                    init_ids: list[str] | None = None) -> str:
    """Fingerprint of an ensemble run (method, configuration, seed, data, split, size, and
    the members' warm-start models if any)."""
    return fingerprint({"ensemble": size, "run": run_fingerprint(method, cfg, seed, data),
                        "init": init_ids})


def run_ensemble(opts: RunOptions, cfg: dict, data: SplitData) -> dict:
    """The ``--ensemble K`` run of ``train-surrogate`` (after :func:`train.run.load_run_data`);
    prints the table and returns the ensemble's summary.

    Raises
    ------
    UsageError, OutputFolderError, CheckpointError
        Bad options or an output folder this run may not use.
    """
    if opts.compare or len(opts.methods) != 1:
        raise UsageError("--ensemble trains one method: use --method, not --compare")
    method = opts.methods[0]
    seconds = cfg.get("gnvpro", {}).get("time_budget", 0.0) if method == "gnvpro" else 0.0
    if seconds > 0:             # --time-budget is the whole ensemble's: each member its share
        cfg = copy.deepcopy(cfg)
        cfg["gnvpro"]["time_budget"] = seconds / opts.ensemble
    run_id = ensemble_run_id(method, cfg, opts.seed, data, opts.ensemble)
    plan = check_ensemble_folder(opts.out, run_id, opts)
    notes = opts.stream or sys.stderr
    if plan == "finished":
        print(f"ensemble: {opts.out} already holds the finished ensemble of this run (nothing "
              "to resume)", file=notes)
        summary = json.loads((opts.out / "summary.json").read_text())
    else:
        folders = CreatedFolders()
        try:
            folders.make(opts.out)
            summary = train_ensemble(method, cfg, data, device=opts.device, seed=opts.seed,
                                     size=opts.ensemble, out=opts.out, resume=opts.resume,
                                     restart=opts.restart, overwrite=opts.overwrite,
                                     stream=opts.stream, folders=folders)
        except BaseException:
            folders.clean_up()
            raise
    print(ensemble_table(summary), end="")
    return summary


def check_ensemble_folder(out: Path, run_id: str, opts: RunOptions) -> str:
    """"train" or "finished" for the ensemble folder ``out`` (the rules of
    :func:`train.outputs.check_output_folder`, and an interrupted ensemble, members but no
    ensemble metadata, needs ``--resume`` or ``--restart``)."""
    plan = check_output_folder(out, run_id, overwrite=opts.overwrite, resume=opts.resume,
                               restart=opts.restart)
    members = out / MEMBERS_DIR
    if plan == "train" and members.is_dir() and any(members.iterdir()) \
            and model_run_id(out) != run_id and not (opts.resume or opts.restart
                                                      or opts.overwrite):
        raise OutputFolderError(
            f"{out} holds an interrupted ensemble ({members} but no finished ensemble): pass "
            "--resume to keep its finished members and continue, --restart to train every "
            "member again, or choose another --out")
    return plan


def train_ensemble(method: str, cfg: dict, data: SplitData, *, device: torch.device,
                   seed: int, size: int, out: Path, resume: bool = False,
                   restart: bool = False, overwrite: bool = False,
                   stream: TextIO | None = None, init: list[SeparableModel] | None = None,
                   folders: CreatedFolders | None = None) -> dict:
    """Train (or finish) the ``size`` members into ``out/members/k`` and write the ensemble.

    Parameters
    ----------
    method, cfg, data, device, stream
        As for :func:`train.run.train_one`.
    seed : int
        The ensemble's seed; member k uses :func:`member_seed` (seed, k).
    size : int
        Number of members K (>= 2).
    out : Path
        The ensemble folder (exists).
    resume : bool
        Keep members whose folder holds the finished model of their run, continue one with a
        checkpoint.
    restart : bool
        Discard the members' checkpoints first.
    overwrite : bool
        Replace members of another run (else refused).
    init : list of SeparableModel, optional
        Warm start of each member (``size`` models; :func:`train.run.train_one`).
    folders : CreatedFolders, optional
        Records the member folders created (clean-up after a failure).

    Returns
    -------
    dict
        The ensemble's summary (``summary.json``).
    """
    if size < 2:
        raise UsageError(f"--ensemble {size}: an ensemble needs at least 2 members")
    if init is not None and len(init) != size:
        raise UsageError(f"{len(init)} warm-start models for {size} members")
    folders = folders or CreatedFolders()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    members: list[dict[str, Any]] = []
    summaries = []
    for k in range(size):
        mdir = out / MEMBERS_DIR / str(k)
        start = None if init is None else init[k]
        summaries.append(_member(method, cfg, data, device=device, seed=member_seed(seed, k),
                                 out=mdir, resume=resume, restart=restart,
                                 overwrite=overwrite, stream=stream,
                                 init=start, folders=folders, label=f"member {k + 1}/{size}"))
        members.append({"path": f"{MEMBERS_DIR}/{k}", "seed": member_seed(seed, k)})
    models = [load_model(out / m["path"], device=device)[0] for m in members]
    for m in members:
        m["metadata_sha256"] = sha256_file(out / m["path"] / METADATA_FILE)
    init_ids = None if init is None else [s["run_id"] for s in summaries]
    run_id = ensemble_run_id(method, cfg, seed, data, size, init_ids)
    calibration, scale = calibrate(models, data)
    ensemble = SeparableEnsemble(models)
    summary = {
        "method": method, "problem": data.problem, "ensemble_size": size,
        "errors": _split_errors(ensemble, data), "error_definition": ERROR_DEFINITION,
        "member_errors": [s["errors"] for s in summaries],
        "std_scale": scale, "calibration": calibration,
        "work_units": float(sum(s["work_units"] for s in summaries)),
        "wall_time": float(sum(s["wall_time"] for s in summaries)),
        "cpu_time": float(sum(s.get("cpu_time", 0.0) for s in summaries)),
        "ensemble_wall_time": time.perf_counter() - wall0,
        "ensemble_cpu_time": time.process_time() - cpu0,
        "device": str(device), "run_id": run_id, "seed": seed,
        "member_seeds": [m["seed"] for m in members],
    }
    training = _metadata(method, cfg, data, seed, summary, None)
    training.update(ensemble_size=size, member_seeds=summary["member_seeds"],
                    warm_start=init is not None)
    meta = new_ensemble_metadata(models[0].config(), members, std_scale=scale, ddof=1,
                                 calibration=calibration, training=training,
                                 **io_metadata(data))
    for name in _SINGLE_MODEL_FILES:               # a single model this run --overwrites
        (out / name).unlink(missing_ok=True)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out / "summary.txt", ensemble_table(summary))
    write_metadata(out, meta)
    return summary


def _member(method: str, cfg: dict, data: SplitData, *, device: torch.device, seed: int,
            out: Path, resume: bool, restart: bool, overwrite: bool, stream: TextIO | None,
            init: SeparableModel | None, folders: CreatedFolders, label: str) -> dict:
    """Train one member (or reuse / resume it); returns its summary."""
    notes = stream or sys.stderr
    probe = warm_run_id(run_fingerprint(method, cfg, seed, data), init)
    if restart:
        remove_checkpoint(out)
    if resume and model_run_id(out) == probe and not has_checkpoint(out):
        if stream is not None:
            print(f"ensemble {label}: finished in {out}, kept", file=notes)
        return json.loads((out / "summary.json").read_text())
    if out.exists() and model_run_id(out) not in (None, probe):
        if not overwrite:
            raise OutputFolderError(f"{out} holds a member of another ensemble run: pass "
                                    "--overwrite to replace it, or choose another --out")
        shutil.rmtree(out)
    folders.make(out)
    if stream is not None:
        print(f"ensemble {label}: seed {seed} -> {out}", file=notes)
    return train_one(method, cfg, data, device=device, seed=seed, out=out,
                     resume=resume and has_checkpoint(out), stream=stream, init=init)


def calibrate(models: list[SeparableModel], data: SplitData) -> tuple[dict, float]:
    """Fit the spread's scale on the validation split (the training split if there is none)
    and describe the raw and calibrated spread there (and on the test split).

    Returns
    -------
    calibration : dict
        ``split``, ``std_scale``, ``raw`` and ``calibrated`` (calibration summaries),
        ``test`` (calibrated, when there is a test split), ``verdict``.
    scale : float
    """
    split = CALIBRATION_SPLIT if data.y[CALIBRATION_SPLIT].shape[0] else "train"
    shift = models[0].normalizer.c_shift.cpu().numpy() \
        if models[0].normalizer.center_targets else None

    def predict(s: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        P = np.stack([m.predict(data.y[s]) for m in models])
        return P.mean(axis=0), member_spread(P), P

    mean, raw, members = predict(split)
    scale = fit_std_scale(mean, raw, data.c[split])
    out = {"split": split, "method": "+-2 sigma coverage of the split = 0.9545 (quantile of "
           "|c - mean| / std_raw over all observables and samples, divided by 2)",
           "std_scale": scale, "verdict": confidence_word(scale),
           "spearman_ceiling": spearman_ceiling(members, shift),
           "raw": _light(calibration_summary(mean, raw, data.c[split], shift)),
           "calibrated": _light(calibration_summary(mean, scale * raw, data.c[split], shift))}
    if data.y["test"].shape[0]:
        mean_t, raw_t, _ = predict("test")
        out["test"] = _light(calibration_summary(mean_t, scale * raw_t, data.c["test"], shift))
    return out, scale


def _split_errors(ensemble: SeparableEnsemble, data: SplitData) -> dict[str, dict]:
    """Mean ± std of the per-sample relative errors of the ensemble mean on each non-empty
    split (as :func:`train.summary.split_errors` for one model)."""
    norm = ensemble.normalizer
    shift = norm.c_shift.cpu().numpy() if norm.center_targets else None
    return {s: mean_std(relative_errors(ensemble.predict(data.y[s]), data.c[s], shift))
            for s in SPLITS if data.y[s].shape[0]}


def _light(summary: dict) -> dict:
    """A calibration summary without its reliability curve (kept short in metadata)."""
    return {k: v for k, v in summary.items() if k != "reliability"}


def ensemble_table(summary: dict) -> str:
    """The printed rows: errors of the ensemble mean and calibration."""
    e = summary["errors"]
    cal = summary["calibration"]
    head = (f"{'method':<18} {'training':>17} {'validation':>17} {'test':>17} "
            f"{'work units':>10} {'wall [s]':>9}")
    name = f"{LABELS[summary['method']]} x{summary['ensemble_size']}"
    lines = [head, "-" * len(head),
             f"{name:<18} {format_mean_std(e.get('train')):>17} "
             f"{format_mean_std(e.get('validation')):>17} {format_mean_std(e.get('test')):>17} "
             f"{summary['work_units']:>10.1f} {summary['wall_time']:>9.1f}"]
    raw, calibrated = cal["raw"], cal["calibrated"]
    lines.append(f"spread calibrated on {cal['split']}: std_scale {summary['std_scale']:.3g} "
                 f"(raw spread {cal['verdict']}: +-1/2 sigma coverage "
                 f"{raw['coverage_1sigma']:.3f}/{raw['coverage_2sigma']:.3f} -> "
                 f"{calibrated['coverage_1sigma']:.3f}/{calibrated['coverage_2sigma']:.3f}; "
                 f"rank correlation {calibrated['spearman']:.2f})")
    if "test" in cal:
        t = cal["test"]
        lines.append(f"test split, calibrated: +-1/2 sigma coverage {t['coverage_1sigma']:.3f}/"
                     f"{t['coverage_2sigma']:.3f}, rank correlation {t['spearman']:.2f}")
    return "\n".join(lines) + "\n"
