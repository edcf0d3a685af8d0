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

from surrogate.metrics import CONSTANT_OUTPUT_RTOL
from surrogate.separable import SeparableModel
from train.base import Optimizer
from train.errors import NonFiniteTrainingError
from train.history import History
from train.varpro import WorkCounter

#: what a :class:`Monitor` selects the model by
SCORES = ("relative", "scale_free")


class _Targets:
    """Normalised targets of one split and the constants of its error figures, computed
    once (the monitor evaluates them after every iteration).

    Parameters
    ----------
    C : torch.Tensor, shape (n, m)
        Normalised targets.
    scale : torch.Tensor, shape (m,), optional
        Per-output target scales: relative errors of ``C * scale`` (physical units).
    C_train : torch.Tensor, shape (n_train, m)
        Normalised training targets: their per-output mean and standard deviation
        standardise the scale-free error (outputs constant there are left out).
    """

    def __init__(self, C: torch.Tensor, scale: torch.Tensor | None,
                 C_train: torch.Tensor) -> None:
        self.C = C.to(torch.float64)
        self.scale = None if scale is None else scale.to(dtype=torch.float64,
                                                         device=self.C.device)
        ref = self.C if self.scale is None else self.C * self.scale
        self.ref_norm = torch.linalg.vector_norm(ref, dim=1)                      # (n,)
        Ct = C_train.to(dtype=torch.float64, device=self.C.device)
        std = Ct.std(dim=0, unbiased=False)
        keep = std > CONSTANT_OUTPUT_RTOL * std.max() if std.numel() else std > 0
        self.weights = torch.where(keep, 1.0 / torch.where(keep, std, 1.0), 0.0)  # (m,)
        self.den = float(torch.linalg.vector_norm((self.C - Ct.mean(dim=0)) * self.weights))

    def errors(self, pred: torch.Tensor) -> tuple[float, float, float]:
        """Mean per-sample relative error (physical units), relative Frobenius error of the
        standardised outputs and the data term 1/(2n) ||pred - C||^2 of predictions
        ``pred`` (n, m) in normalised units."""
        diff = pred.to(torch.float64) - self.C
        phys = diff if self.scale is None else diff * self.scale
        rel = float((torch.linalg.vector_norm(phys, dim=1) / self.ref_norm).mean())
        sf = float(torch.linalg.vector_norm(diff * self.weights)) / self.den \
            if self.den > 0 else math.nan
        return rel, sf, float(0.5 * (diff**2).sum() / max(diff.shape[0], 1))


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
    scale : torch.Tensor, shape (m,), optional
        Per-output target scales of the normaliser (issue 18): the relative errors are
        computed on ``C * scale``, i.e. in physical units, as for a global scale.
    score : "relative" or "scale_free"
        What selects the model: the mean per-sample relative error (SPEC section 4), or the
        relative Frobenius error of the standardised outputs (training-split statistics;
        :func:`surrogate.metrics.relative_frobenius`), for data on which the per-sample
        relative error is ill-conditioned. Both are recorded in the history.

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
                 min_improvement: float = 0.0, scale: torch.Tensor | None = None,
                 score: str = "relative") -> None:
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.method = method
        self.Y, self.C = Y, C
        self.score = score
        per_output = scale if scale is not None and scale.dim() == 1 else None
        self._train = _Targets(C, per_output, C)
        self._val = None if validation is None else _Targets(validation[1], per_output, C)
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
        row["train_rel_err"], row["train_scale_free"], _ = self._train.errors(model(Y))
        if self.validation is not None and self._val is not None:
            Yv = self.validation[0].to(dtype=model.W.dtype, device=model.W.device)
            row["val_rel_err"], row["val_scale_free"], row["val_loss"] = self._val.errors(
                model(Yv))
        score = self._score(row)
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
        prefix = "val" if self.validation is not None else "train"
        key = f"{prefix}_rel_err" if self.score == "relative" else f"{prefix}_scale_free"
        return row.get(key, math.inf)

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
    time_budgets : sequence of float, optional
        Seconds of wall time of each level (``--time-budget``; optimisers with a
        ``deadline`` attribute, i.e. GNvpro): level l ends by ``start + sum(time_budgets[:l +
        1])``, so time a level leaves unused goes to the next one.

    Attributes
    ----------
    model_ : SeparableModel
        Final iterate on the finest level.
    stop_reasons_ : list of str
        Why each level stopped.
    """

    def __init__(self, optimizer: Optimizer, levels: Sequence[int] = (2, 4, 8),
                 budgets: Sequence[float] | None = None,
                 time_budgets: Sequence[float] | None = None) -> None:
        self.optimizer = optimizer
        self.levels = tuple(levels)
        for what, b in (("budgets", budgets), ("time budgets", time_budgets)):
            if b is not None and len(b) != len(self.levels):
                raise ValueError(f"{len(b)} {what} for {len(self.levels)} levels")
        self.budgets = None if budgets is None else tuple(float(b) for b in budgets)
        self.time_budgets = None if time_budgets is None else tuple(
            float(t) for t in time_budgets)

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
        t0 = time.perf_counter()
        for level in range(start_level, len(self.levels)):
            n_steps = self.levels[level]
            if self.budgets is not None:
                self.optimizer.max_work_units = self.budgets[level]
            if self.time_budgets is not None and hasattr(self.optimizer, "deadline"):
                self.optimizer.deadline = t0 + sum(self.time_budgets[start_level:level + 1])
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
