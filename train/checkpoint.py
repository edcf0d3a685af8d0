"""Checkpoints written after every level, so that ``--resume`` continues an interrupted run.

``<out>/checkpoint/`` holds ``model.npz`` (the model at the end of the last finished level),
``best.npz`` (the model selected on validation so far) and ``state.json`` (level count,
history, work units, wall time, the run's fingerprint and the SHA-256 of both weight files).
Methods that checkpoint within a level (slimTrain, after every epoch) add their own state:
arrays in ``optimizer.npz`` and JSON values under ``"optimizer"`` in ``state.json``.
Each file is written atomically and ``state.json`` last, so an interrupted write leaves the
previous checkpoint usable.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from surrogate.artifact import (
    atomic_write_bytes,
    atomic_write_text,
    load_npz_state,
    sha256_file,
    state_to_npz_bytes,
)
from surrogate.separable import SeparableModel

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed (missing, corrupt, different run)."""


def fingerprint(run: dict) -> str:
    """SHA-256 of a JSON-serialisable description of a run (method, configuration, data)."""
    return hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()


@dataclass
class Checkpoint:
    """Contents of a checkpoint."""

    completed_levels: int
    model: SeparableModel
    best_model: SeparableModel | None
    best_row: dict | None
    history: list[dict]
    work_units: float
    wall_time: float
    optimizer_state: tuple[dict[str, torch.Tensor], dict] | None = None


def save_checkpoint(out: str | Path, run_fingerprint: str, ckpt: Checkpoint) -> None:
    """Write ``out/checkpoint`` (atomic per file, ``state.json`` last)."""
    d = Path(out) / CHECKPOINT_DIR
    d.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, model in (("model.npz", ckpt.model), ("best.npz", ckpt.best_model)):
        if model is None:
            continue
        data = state_to_npz_bytes(model.state_dict())
        atomic_write_bytes(d / name, data)
        digests[name] = hashlib.sha256(data).hexdigest()
    if ckpt.optimizer_state is not None:
        data = state_to_npz_bytes(ckpt.optimizer_state[0])
        atomic_write_bytes(d / "optimizer.npz", data)
        digests["optimizer.npz"] = hashlib.sha256(data).hexdigest()
    state = {
        "version": CHECKPOINT_VERSION,
        "fingerprint": run_fingerprint,
        "completed_levels": ckpt.completed_levels,
        "model": ckpt.model.config(),
        "best_model": None if ckpt.best_model is None else ckpt.best_model.config(),
        "best_row": ckpt.best_row,
        "history": ckpt.history,
        "work_units": ckpt.work_units,
        "wall_time": ckpt.wall_time,
        "sha256": digests,
        "optimizer": None if ckpt.optimizer_state is None else ckpt.optimizer_state[1],
    }
    atomic_write_text(d / "state.json", json.dumps(state) + "\n")


def has_checkpoint(out: str | Path) -> bool:
    return (Path(out) / CHECKPOINT_DIR / "state.json").is_file()


def load_checkpoint(out: str | Path, run_fingerprint: str,
                    device: str | torch.device = "cpu") -> Checkpoint:
    """Read ``out/checkpoint``, verifying version, fingerprint and weight digests.

    Raises
    ------
    CheckpointError
    """
    d = Path(out) / CHECKPOINT_DIR
    path = d / "state.json"
    if not path.is_file():
        raise CheckpointError(f"{out}: nothing to resume (no {CHECKPOINT_DIR}/state.json)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc})") from None
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {state.get('version')!r}")
    if state.get("fingerprint") != run_fingerprint:
        raise CheckpointError(
            f"{out}: the checkpoint belongs to a different run (method, configuration or data "
            "changed); start a new run in another directory")

    def model(name: str, cfg: dict) -> SeparableModel:
        f = d / name
        if not f.is_file() or sha256_file(f) != state["sha256"].get(name):
            raise CheckpointError(f"{f}: missing or does not match state.json")
        m = SeparableModel.from_config(cfg, device=device)
        m.load_state_dict(load_npz_state(f))
        return m

    optimizer_state = None
    if state.get("optimizer") is not None:
        f = d / "optimizer.npz"
        if not f.is_file() or sha256_file(f) != state["sha256"].get("optimizer.npz"):
            raise CheckpointError(f"{f}: missing or does not match state.json")
        optimizer_state = (load_npz_state(f), state["optimizer"])

    return Checkpoint(
        completed_levels=int(state["completed_levels"]),
        model=model("model.npz", state["model"]),
        best_model=None if state["best_model"] is None else model("best.npz",
                                                                   state["best_model"]),
        best_row=state["best_row"],
        history=state["history"],
        work_units=float(state["work_units"]),
        wall_time=float(state["wall_time"]),
        optimizer_state=optimizer_state,
    )


def remove_checkpoint(out: str | Path) -> None:
    """Delete ``out/checkpoint`` after a finished run."""
    shutil.rmtree(Path(out) / CHECKPOINT_DIR, ignore_errors=True)
