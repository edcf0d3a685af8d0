"""What ``refine-surrogate`` is asked to do (:class:`RefineOptions`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solvers.errors import UsageError

STRATEGIES = ("adaptive", "uniform")
#: candidates drawn per selected sample when --candidates is not given
DEFAULT_CANDIDATE_FACTOR = 10


@dataclass(frozen=True)
class RefineOptions:
    """The checked options of a refinement run.

    Attributes
    ----------
    model_dir : Path
        The starting ensemble (``train-surrogate --ensemble K``).
    out : Path
        The run's folder (state, check set, rounds, growing dataset, figure).
    target : float
        Stop when the mean relative error on the check set is at or below it.
    max_solves : int
        Budget of new training solves (the check set is not counted).
    batch : int
        Samples solved per round (the last round takes what is left of the budget).
    strategy : "adaptive" or "uniform"
    candidates : int or None
        Candidates scored per round (default 10 x batch).
    check_samples : int
        Size of the fixed fresh check set.
    check_seed : int or None
        Its dataset seed (default: the training data's seed + 1000).
    seed : int or None
        Seed of the candidate streams (default: the training data's seed).
    warm_start : bool
        Retrain each member from its current weights on the finest level (else from scratch,
        all levels).
    ranks_per_sample : int
    checkpoint_interval : float
        Minimum seconds between checkpoints of the solved files.
    progress : bool
    threads : int
        torch threads of the training (1: deterministic and fastest on a busy machine).
    """

    model_dir: Path
    out: Path
    target: float = 0.005
    max_solves: int = 2000
    batch: int = 100
    strategy: str = "adaptive"
    candidates: int | None = None
    check_samples: int = 200
    check_seed: int | None = None
    seed: int | None = None
    warm_start: bool = True
    ranks_per_sample: int = 1
    checkpoint_interval: float = 10.0
    progress: bool = True
    threads: int = 1

    @property
    def n_candidates(self) -> int:
        return self.candidates if self.candidates is not None \
            else DEFAULT_CANDIDATE_FACTOR * self.batch

    def check(self, world_size: int) -> None:
        """Raise :class:`~solvers.errors.UsageError` naming the first bad option."""
        if not (isinstance(self.target, float | int) and math.isfinite(self.target)
                and self.target > 0):
            raise UsageError(f"--target {self.target}: must be a positive number")
        for name, value, low in (("--max-solves", self.max_solves, 0), ("--batch", self.batch, 1),
                                 ("--check-samples", self.check_samples, 1),
                                 ("--threads", self.threads, 1),
                                 ("--ranks-per-sample", self.ranks_per_sample, 1)):
            if value < low:
                raise UsageError(f"{name} {value}: must be >= {low}")
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy {self.strategy!r}: choose one of {STRATEGIES}")
        if self.candidates is not None and self.candidates < self.batch:
            raise UsageError(f"--candidates {self.candidates}: must be at least --batch "
                             f"({self.batch})")
        for name, seed in (("--check-seed", self.check_seed), ("--seed", self.seed)):
            if seed is not None and seed < 0:
                raise UsageError(f"{name} {seed}: must be >= 0")
        if world_size % self.ranks_per_sample:
            raise UsageError(f"--ranks-per-sample {self.ranks_per_sample} must divide the "
                             f"number of MPI ranks ({world_size})")
        if not self.checkpoint_interval >= 0:
            raise UsageError("--checkpoint-interval must be >= 0 seconds")

    def identity(self) -> dict[str, Any]:
        """The options that decide the result (the run's fingerprint; ranks, progress and
        checkpoint interval do not)."""
        return {"model_dir": str(Path(self.model_dir).resolve()), "target": float(self.target),
                "max_solves": self.max_solves, "batch": self.batch, "strategy": self.strategy,
                "candidates": self.n_candidates, "check_samples": self.check_samples,
                "check_seed": self.check_seed, "seed": self.seed,
                "warm_start": self.warm_start, "threads": self.threads}
