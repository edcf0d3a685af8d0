"""The output folder of a training run: whose model it holds, staged writing, clean-up.

A finished run writes :data:`OUTPUT_FILES` into its folder. ``metadata.json`` records the
run's fingerprint (``training.run_id``: method, resolved configuration, seed, data SHA-256 and
split), so that a later run can tell its own model from a different one:

- a folder holding a model of a *different* run (or output files whose run cannot be told) is
  refused unless ``--overwrite``;
- the *same* run again (same fingerprint) retrains and replaces its model (on CPU the result
  is bitwise the same); with ``--resume`` there is nothing left to do and the stored summary is
  reused;
- a checkpoint of an interrupted run must be continued (``--resume``) or discarded
  (``--restart``).

All output files are first written into a hidden staging folder inside the output folder and
then renamed into place (``metadata.json`` last), so a failure while writing (disk full)
leaves the previous files untouched; the staging folder, empty checkpoint folders and output
folders created by the failed run are removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from surrogate.errors import SurrogateFormatError
from surrogate.metadata import (
    METADATA_FILE,
    WEIGHTS_FILE,
    read_metadata,
    training,
    training_data_record,
)
from train.checkpoint import CHECKPOINT_DIR, has_checkpoint
from train.errors import OutputFolderError

OUTPUT_FILES = (WEIGHTS_FILE, METADATA_FILE, "history.csv", "convergence.png", "summary.json",
                "summary.txt")
STAGING_PREFIX = ".staging-"


def model_run_id(out: Path) -> str | None:
    """Fingerprint of the finished model in ``out``; None when ``out`` holds none of
    :data:`OUTPUT_FILES`, "" when it holds some whose run cannot be told (older or damaged)."""
    if not any((out / name).exists() for name in OUTPUT_FILES):
        return None
    try:
        run_id = training(read_metadata(out)).get("run_id")
    except SurrogateFormatError:
        return ""
    return run_id if isinstance(run_id, str) else ""


def _describe_model(out: Path) -> str:
    try:
        meta = read_metadata(out)
        t, data = training(meta), training_data_record(meta)
        return (f"a {t['method']} model trained on {data['path']} "
                f"(created {t.get('created', '?')})")
    except (SurrogateFormatError, KeyError):
        names = [n for n in OUTPUT_FILES if (out / n).exists()]
        return f"output files of another or an older run ({', '.join(names)})"


def check_output_folder(out: Path, run_id: str, *, overwrite: bool, resume: bool,
                        restart: bool) -> str:
    """Decide what a run may do with ``out``.

    Returns
    -------
    "train" (train into ``out``) or "finished" (``--resume`` of a run whose model is already
    complete in ``out``: nothing left to do).

    Raises
    ------
    OutputFolderError
        Saying what is in the folder and which option (``--resume``, ``--restart``,
        ``--overwrite``) or another ``--out`` resolves it.
    """
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out}: exists and is not a folder")
    if has_checkpoint(out) and not (resume or restart):
        raise OutputFolderError(
            f"{out} holds an interrupted run (its {CHECKPOINT_DIR}/ folder): pass --resume to "
            "continue it, --restart to discard it and train from the start, or choose another "
            "--out")
    existing = model_run_id(out)
    if existing is not None and existing != run_id and not overwrite:
        raise OutputFolderError(
            f"{out} already holds {_describe_model(out)}, not one of this run (method, "
            "configuration, seed or data differ): pass --overwrite to replace it, or choose "
            "another --out")
    if existing == run_id and resume and not has_checkpoint(out):
        return "finished"
    return "train"


class CreatedFolders:
    """Folders made by this run, removed again (when empty) if the run fails."""

    def __init__(self) -> None:
        self.created: list[Path] = []
        self.targets: list[Path] = []

    def make(self, path: Path) -> Path:
        """``mkdir -p path``, remembering which folders did not exist before."""
        new, p = [], path.absolute()
        while not p.exists() and p != p.parent:
            new.append(p)
            p = p.parent
        path.mkdir(parents=True, exist_ok=True)
        self.created.extend(reversed(new))
        self.targets.append(path)
        return path

    def clean_up(self) -> None:
        """Remove staging folders, empty checkpoint folders and the created folders that are
        empty (deepest first)."""
        for t in self.targets:
            for stage in t.glob(STAGING_PREFIX + "*"):
                shutil.rmtree(stage, ignore_errors=True)
            _rmdir_if_empty(t / CHECKPOINT_DIR)
        for d in reversed(self.created):
            _rmdir_if_empty(d)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """Hidden folder in ``out`` to write the outputs into; on success they are renamed into
    ``out`` (``metadata.json`` last), on failure the staging folder is deleted."""
    stage = Path(tempfile.mkdtemp(dir=out, prefix=STAGING_PREFIX))
    try:
        yield stage
        names = sorted(os.listdir(stage), key=lambda n: (n == METADATA_FILE, n))
        for name in names:
            os.replace(stage / name, out / name)
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

