"""The growing dataset of a refinement run: the starting model's training file plus every
batch solved so far, as one ``generate-dataset``-format file per round.

Samples: those of the base file (with its splits), then the batches in order. Splits: the
base file's validation and test splits unchanged (the ensembles are selected and calibrated
on the same validation split every round), the training split grows by every successfully
solved batch sample. Attributes: the base file's (problem, solver settings, seed and
``n_samples`` of its sampler draws, so that ``evaluate-surrogate`` draws fresh samples for a
refined model as for the starting one), with ``config.refinement`` recording the batches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from datasets.provenance import now
from datasets.storage import OK, DatasetState, read_state, write_atomic


def merge(base: Path, batches: list[Path], out: Path) -> dict[str, int]:
    """Write the base file plus ``batches`` into ``out`` (atomically).

    Returns
    -------
    dict
        ``n_samples`` (all), ``n_train``, ``n_validation``, ``n_test``, ``n_added`` (batch
        samples), ``n_failed`` (batch samples whose solve failed).
    """
    s = read_state(base)
    if s.splits is None:
        raise ValueError(f"{base}: no stored split (an incomplete dataset)")
    parts = [s] + [read_state(b) for b in batches]
    cat = {name: np.concatenate([getattr(p, name) for p in parts])
           for name in ("y", "c", "status", "solve_time", "attempts", "solver_rank",
                        "failure_reason")}
    n0 = s.y.shape[0]
    added = np.arange(n0, cat["y"].shape[0])
    added_ok = added[cat["status"][added] == OK]
    splits = {"train": np.concatenate([s.splits["train"], added_ok]).astype(np.int64),
              "validation": s.splits["validation"], "test": s.splits["test"]}
    config = json.loads(s.attrs["config"])
    config["refinement"] = {"base": str(base), "batches": [b.name for b in batches],
                            "n_added": int(added.size)}
    attrs = dict(s.attrs)
    attrs.update(config=json.dumps(config, sort_keys=True), complete=True, updated=now())
    state = DatasetState(attrs=attrs, parameter_names=s.parameter_names,
                         observable_coords=s.observable_coords, splits=splits, **cat)
    write_atomic(out, state)
    return {"n_samples": int(cat["y"].shape[0]), "n_train": int(splits["train"].size),
            "n_validation": int(splits["validation"].size), "n_test": int(splits["test"].size),
            "n_added": int(added.size), "n_failed": int(added.size - added_ok.size)}


def link_latest(source: Path, link: Path) -> None:
    """Make ``link`` the same file as ``source`` (a hard link replaced atomically; a copy
    where hard links are not possible)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, link)
