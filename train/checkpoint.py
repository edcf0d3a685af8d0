"""Checkpoints written after every level, so that ``--resume`` continues an interrupted run.

``<out>/checkpoint/`` holds ``model-<digest>.npz`` (the model at the end of the last finished
level), ``best-<digest>.npz`` (the model selected on validation so far) and ``state.json``
(level count, history, work units, wall time, the run's fingerprint, the names and SHA-256 of
both weight files). The weight files are named by their content and written atomically,
``state.json`` after them, and the files of the previous checkpoint are deleted only after the
new ``state.json`` is in place: a run killed at any moment leaves a complete checkpoint (the
previous or the new one). Version 1 checkpoints (fixed names ``model.npz``/``best.npz``, which
could be torn by a kill between the writes) are still read.
Methods that checkpoint within a level (slimTrain, after every epoch) add their own state:
arrays in ``optimizer-<digest>.npz`` and JSON values under ``"optimizer"`` in ``state.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from solvers.common.atomic import sha256_file, write_bytes_atomic, write_text_atomic
from surrogate.artifact import load_npz_state, load_weights, state_to_npz_bytes
from surrogate.errors import SurrogateFormatError
from surrogate.separable import SeparableModel
from train.errors import CheckpointError

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
#: keys of state.json -> JSON types
_STATE_KEYS: dict[str, type | tuple[type, ...]] = {
    "completed_levels": int, "model": dict, "best_model": (dict, type(None)),
    "best_row": (dict, type(None)), "history": list, "work_units": (int, float),
    "wall_time": (int, float), "sha256": dict}
RECOVER = ("pass --restart to discard the checkpoint and train from the start (or --out "
           "another folder)")


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
    """Write ``out/checkpoint`` (atomic per file, ``state.json`` last). If a write fails
    (disk full), the files this call wrote are removed again, so the folder holds exactly the
    previous checkpoint (or, before the first one, no ``checkpoint`` folder)."""
    d = Path(out) / CHECKPOINT_DIR
    created = not d.exists()
    d.mkdir(parents=True, exist_ok=True)
    before = {f.name for f in d.iterdir()}
    try:
        _write_checkpoint(d, run_fingerprint, ckpt)
    except BaseException:
        for f in d.iterdir():
            if f.name not in before:
                f.unlink(missing_ok=True)
        if created:
            shutil.rmtree(d, ignore_errors=True)
        raise


def _write_checkpoint(d: Path, run_fingerprint: str, ckpt: Checkpoint) -> None:
    """The files of :func:`save_checkpoint` in the folder ``d``."""
    digests: dict[str, str] = {}
    files: dict[str, str | None] = {"model": None, "best": None}
    for role, model in (("model", ckpt.model), ("best", ckpt.best_model)):
        if model is None:
            continue
        data = state_to_npz_bytes(model.state_dict())
        digest = hashlib.sha256(data).hexdigest()
        name = f"{role}-{digest[:16]}.npz"
        write_bytes_atomic(d / name, data)
        digests[name], files[role] = digest, name
    if ckpt.optimizer_state is not None:
        data = state_to_npz_bytes(ckpt.optimizer_state[0])
        digest = hashlib.sha256(data).hexdigest()
        name = f"optimizer-{digest[:16]}.npz"
        write_bytes_atomic(d / name, data)
        digests[name], files["optimizer"] = digest, name
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
        "files": files,
        "sha256": digests,
        "optimizer": None if ckpt.optimizer_state is None else ckpt.optimizer_state[1],
    }
    write_text_atomic(d / "state.json", json.dumps(state) + "\n")
    for f in d.glob("*.npz"):                       # the previous checkpoint's weights
        if f.name not in digests:
            f.unlink(missing_ok=True)


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
    state = read_state(out)
    if state.get("fingerprint") != run_fingerprint:
        raise CheckpointError(
            f"{out}: the checkpoint belongs to a different run (method, configuration, seed or "
            "data changed): run the original command with --resume to finish that run, or "
            + RECOVER)
    files = state.get("files") or {"model": "model.npz", "best": "best.npz"}

    def model(role: str, cfg: dict) -> SeparableModel:
        name = files.get(role) if isinstance(files, dict) else None
        f = d / str(name)
        if not isinstance(name, str) or Path(name).name != name or not f.is_file():
            raise CheckpointError(f"{d / str(name)}: missing; the checkpoint is damaged: "
                                  + RECOVER)
        if sha256_file(f) != state["sha256"].get(name):
            raise CheckpointError(
                f"{f}: does not match {path.name} (model and state out of step: the run was "
                "probably killed while writing the checkpoint); " + RECOVER)
        try:
            return load_weights(f, cfg, device=device, config_source=str(path))
        except SurrogateFormatError as exc:
            raise CheckpointError(f"{exc}; " + RECOVER) from None

    optimizer_state = None
    if state.get("optimizer") is not None:
        name = files.get("optimizer", "optimizer.npz") if isinstance(files, dict) else None
        f = d / str(name)
        if not isinstance(name, str) or Path(name).name != name or not f.is_file() \
                or sha256_file(f) != state["sha256"].get(name):
            raise CheckpointError(f"{f}: missing or does not match {path.name}; " + RECOVER)
        try:
            optimizer_state = (load_npz_state(f), state["optimizer"])
        except SurrogateFormatError as exc:
            raise CheckpointError(f"{exc}; " + RECOVER) from None

    return Checkpoint(
        completed_levels=int(state["completed_levels"]),
        model=model("model", state["model"]),
        best_model=None if state["best_model"] is None else model("best", state["best_model"]),
        best_row=state["best_row"],
        history=state["history"],
        work_units=float(state["work_units"]),
        wall_time=float(state["wall_time"]),
        optimizer_state=optimizer_state,
    )


def read_state(out: str | Path) -> dict:
    """``out/checkpoint/state.json`` after checking its version, keys and their types.

    Raises
    ------
    CheckpointError
        Naming the file and the problem, with how to recover.
    """
    path = Path(out) / CHECKPOINT_DIR / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{out}: nothing to resume (no {CHECKPOINT_DIR}/state.json)"
                              ) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc}); " + RECOVER) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint (not a JSON object); " + RECOVER)
    if state.get("version") not in _READABLE_VERSIONS:
        raise CheckpointError(f"{path}: unsupported checkpoint version "
                              f"{state.get('version')!r}; " + RECOVER)
    for key, kind in _STATE_KEYS.items():
        if key not in state:
            raise CheckpointError(f"{path}: corrupt checkpoint (missing key {key!r}); "
                                  + RECOVER)
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise CheckpointError(f"{path}: corrupt checkpoint (key {key!r} has the wrong "
                                  f"type: {str(state[key])[:60]!r}); " + RECOVER)
    return state


def remove_checkpoint(out: str | Path) -> None:
    """Delete ``out/checkpoint`` after a finished run."""
    shutil.rmtree(Path(out) / CHECKPOINT_DIR, ignore_errors=True)
