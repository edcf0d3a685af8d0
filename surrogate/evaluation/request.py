"""What ``evaluate-surrogate`` is asked to do (:class:`EvaluationRequest`) and what rank 0
decided to do about it (:class:`Plan`, broadcast to the other ranks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the fresh solves, in the report directory
FRESH_FILE = "fresh.h5"


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
        A problem spec (a registered name, an entry point, ``package.module:Class`` or
        ``path/file.py:Class``), for models trained on data without solver provenance.
    settings : dict
        Solver-setting overrides (with ``problem``; models without provenance only).
    allow_changed_plugin : bool
        Re-solve with the recorded plugin even if its code or settings changed since the
        training data was made (otherwise refused, naming what changed).
    device : str, optional
        Device of the surrogate timing and predictions (cpu, cuda, cuda:N); default the
        training device when it is available, else "cpu".
    checkpoint_interval : float
        Minimum seconds between checkpoints of ``fresh.h5``.
    progress : bool
        Progress bar on rank 0.
    allow_different_settings : bool
        Evaluate on a ``data`` file solved with other solver settings than the model's
        training data (refused otherwise, naming the differing settings).
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
    allow_different_settings: bool = False
    allow_changed_plugin: bool = False


@dataclass
class Plan:
    """Resolved evaluation plan (picklable; decided on rank 0 and broadcast).

    Attributes
    ----------
    problem : str
        The problem's name (or the ``problem`` attribute of a ``--data`` file, "unknown").
    solve : bool
        Whether fresh samples are solved (else ``fresh_path`` is the ``--data`` file).
    settings : dict or None
        The solver's resolved settings when solving.
    fresh_path : Path
        The data the surrogate is evaluated on.
    notes : list of str
        Remarks for the report (e.g. an overlap check that could not be made).
    device : str
        The surrogate's device ("cpu", "cuda", "cuda:N"), checked on rank 0.
    complete : bool
        The fresh file already holds every solve of this request (nothing to solve).
    spec : str
        The spec the fresh solves resolve (a file plugin by its absolute path); "" without
        solves.
    """

    problem: str
    solve: bool
    settings: dict[str, Any] | None
    fresh_path: Path
    notes: list[str]
    device: str = "cpu"
    complete: bool = False
    spec: str = ""
