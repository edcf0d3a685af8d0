"""Multilevel training (GNvpro section 3.1): solve on 2 -> 4 -> 8 time steps, prolonging the
weights piecewise-linearly in time between levels; per-iteration monitoring and model
selection on the validation split."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import torch

from surrogate.metrics import relative_errors
from surrogate.separable import SeparableModel
from train.base import Optimizer
from train.errors import NonFiniteTrainingError
from train.history import History
from train.varpro import WorkCounter


class Monitor:
    """Callback of the optimisers: history rows, progress lines and the selected model.

    The selected model is the iterate with the smallest mean relative error on the
    validation split (on the training split when there is no validation data); the test
    split is never seen here.

    Parameters
    ----------
    method : str
        Method name written into the history.
    Y, C : torch.Tensor
        Normalised training data, shapes (n, n_in), (n, m).
    validation : (Y_val, C_val), optional
        Normalised validation data.
    counter : WorkCounter
        The work-unit counter shared with the optimiser.
    stream : text stream, optional
        Progress lines (one per iteration); None for silence.
    wall_offset : float
        Wall time already spent (resumed runs).
    patience : int, optional
        Stop a level (returning the stop reason ``"validation stagnation"`` to the optimiser;
        honoured by GNvpro) when the monitored score (validation mean relative error, else the
        training one) has not improved by the relative amount ``min_improvement`` on the best
        of the level for ``patience`` consecutive iterates. None: never.
    min_improvement : float
        Relative improvement that counts for ``patience``.

    Attributes
    ----------
    history : History
    best_model : SeparableModel or None
    best_row : dict or None
    """

    def __init__(self, method: str, Y: torch.Tensor, C: torch.Tensor,
                 validation: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                 counter: WorkCounter | None = None, stream: TextIO | None = sys.stdout,
                 wall_offset: float = 0.0, patience: int | None = None,
                 min_improvement: float = 0.0) -> None:
        self.method = method
        self.Y, self.C = Y, C
        self.validation = validation
        self.counter = counter if counter is not None else WorkCounter()
        self.stream = stream
        self.history = History()
        self.best_model: SeparableModel | None = None
        self.best_row: dict | None = None
        self.wall_offset = wall_offset
        self._t0 = time.perf_counter()
        self.level, self.n_levels, self.n_steps = 0, 1, 0
        self.patience, self.min_improvement = patience, float(min_improvement)
        self._level_best, self._since_best = math.inf, 0

    def set_level(self, level: int, n_levels: int, n_steps: int) -> None:
        self.level, self.n_levels, self.n_steps = level, n_levels, n_steps
        self._level_best, self._since_best = math.inf, 0

    def _stagnated(self, score: float) -> bool:
        """Update the level's best score; True after ``patience`` iterates without progress."""
        if score < self._level_best * (1.0 - self.min_improvement):
            self._level_best, self._since_best = score, 0
        else:
            self._since_best += 1
        return self.patience is not None and self._since_best >= self.patience

    def wall_time(self) -> float:
        return self.wall_offset + time.perf_counter() - self._t0

    @torch.no_grad()
    def __call__(self, record: dict, model: SeparableModel) -> str | None:
        row: dict[str, Any] = {"method": self.method, "level": self.level, "n_steps": self.n_steps,
               "work_units": self.counter.units, "wall_time": self.wall_time()}
        row.update(record)
        if not math.isfinite(row["loss"]):
            self._non_finite(row)
        Y = self.Y.to(dtype=model.W.dtype, device=model.W.device)
        row["train_rel_err"] = float(relative_errors(model(Y), self.C).mean())
        score: float = row["train_rel_err"]
        if self.validation is not None:
            Yv, Cv = self.validation
            pred = model(Yv.to(dtype=model.W.dtype, device=model.W.device)).to(torch.float64)
            Cv = Cv.to(dtype=torch.float64, device=pred.device)
            row["val_loss"] = float(0.5 * ((pred - Cv) ** 2).sum() / Cv.shape[0])
            row["val_rel_err"] = score = float(relative_errors(pred, Cv).mean())
        self.history.append(row)
        if math.isfinite(score) and (self.best_row is None or score < self._score(self.best_row)):
            self.best_row = dict(row)
            self.best_model = copy.deepcopy(model)
        if self.stream is not None:
            print(self._line(row), file=self.stream, flush=True)
        if math.isfinite(score) and self._stagnated(score):
            return "validation stagnation" if self.validation is not None else \
                "training stagnation"
        return None

    def _non_finite(self, row: dict) -> None:
        where = (f"{self.method}: the training loss is {row['loss']} at level "
                 f"{self.level + 1}/{self.n_levels} (d={self.n_steps}), iteration "
                 f"{row['iteration']}")
        if row["iteration"] == 0 and self.level == 0:
            hint = ("the initial network already gives non-finite outputs: check model."
                    "final_time, model.init_scale, model.dtype and the scaling of the data")
        else:
            hint = ("training diverged: use a smaller step (adam.lr) or stronger "
                    "regularisation (loss.alpha1, loss.alpha2), or model.dtype = \"float64\"")
        err = NonFiniteTrainingError(f"{where}; {hint}")
        err.located = True
        raise err

    def _score(self, row: dict) -> float:
        return row["val_rel_err"] if self.validation is not None else row["train_rel_err"]

    def _line(self, row: dict) -> str:
        val = (f" val {row['val_loss']:.3e}" if "val_loss" in row else "")
        rel = f"{row['train_rel_err']:.3e}" + (
            f"/{row['val_rel_err']:.3e}" if "val_rel_err" in row else "")
        extra = ""
        if "radius" in row:
            extra = f" r={row.get('krylov_rank', '-')} rho={row.get('rho', float('nan')):.2f}" \
                    f" radius={row['radius']:.2e}"
        return (f"{self.method} L{self.level + 1}/{self.n_levels} d={self.n_steps}"
                f" it {row['iteration']:4d} wu {row['work_units']:8.1f}"
                f" loss {row['loss']:.4e}{val} rel {rel}{extra} t {row['wall_time']:.1f}s")


class MultilevelTrainer:
    """Train on a shallow-to-deep sequence of time discretisations.

    Parameters
    ----------
    optimizer : Optimizer
        Method for one level (its ``max_work_units`` is the per-level budget).
    levels : sequence of int
        Numbers of time steps, e.g. (2, 4, 8).
    budgets : sequence of float, optional
        Work-unit budget of each level (sets ``optimizer.max_work_units`` before the level);
        default: the optimiser's own budget on every level.

    Attributes
    ----------
    model_ : SeparableModel
        Final iterate on the finest level.
    stop_reasons_ : list of str
        Why each level stopped.
    """

    def __init__(self, optimizer: Optimizer, levels: Sequence[int] = (2, 4, 8),
                 budgets: Sequence[float] | None = None) -> None:
        self.optimizer = optimizer
        self.levels = tuple(levels)
        if budgets is not None and len(budgets) != len(self.levels):
            raise ValueError(f"{len(budgets)} budgets for {len(self.levels)} levels")
        self.budgets = None if budgets is None else tuple(float(b) for b in budgets)

    def fit(self, model: SeparableModel, Y: torch.Tensor, C: torch.Tensor, monitor: Monitor,
            *, start_level: int = 0,
            on_level_end: Callable[[int, SeparableModel], None] | None = None
            ) -> MultilevelTrainer:
        """Train ``model`` (prolonged as needed) from level ``start_level`` on.

        Parameters
        ----------
        model : SeparableModel
            Initial model (any number of steps; prolonged to each level's depth).
        Y, C : torch.Tensor
            Normalised training data.
        monitor : Monitor
            Receives every iterate; its counter accumulates the work units.
        start_level : int
            First level to run (resumed runs).
        on_level_end : callable, optional
            ``on_level_end(level, model)`` after each level (checkpointing).
        """
        self.stop_reasons_: list[str] = []
        if hasattr(self.optimizer, "reset"):
            self.optimizer.reset()                 # no radius carried into the first level
        for level in range(start_level, len(self.levels)):
            n_steps = self.levels[level]
            if self.budgets is not None:
                self.optimizer.max_work_units = self.budgets[level]
            if model.features.n_steps != n_steps:
                model = model.prolong(n_steps)
            monitor.set_level(level, len(self.levels), n_steps)
            try:
                self.optimizer.fit(model, Y, C, counter=monitor.counter, callback=monitor,
                                   init_linear=level == 0 and self.optimizer.needs_linear_init)
            except NonFiniteTrainingError as exc:
                if getattr(exc, "located", False):
                    raise
                raise NonFiniteTrainingError(
                    f"{monitor.method}: at level {level + 1}/{len(self.levels)} "
                    f"(d={n_steps}): {exc}") from None
            self.stop_reasons_.append(self.optimizer.stop_reason_)
            if on_level_end is not None:
                on_level_end(level, model)
        self.model_ = model
        return self
